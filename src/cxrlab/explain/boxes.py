"""Heatmap -> boxes, IoU and localisation scoring (pure array code).

Following Wollek et al. 2023 (Tables 4/5): a heatmap is min-max
normalised, thresholded (default 0.5), and each connected component becomes a
box.  A detection is a true positive when its IoU with a ground-truth box of the
same class is at least ``iou`` (default 0.1).  Per class we report the mean
*precision* (TP / detections per image) and the *accuracy* (fraction of images
where any detection hits).

:func:`matching_sentence` (how a box list met the test split, in words) lives
here rather than in :mod:`cxrlab.explain.localize` so the report can say it
without importing the inference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

Box = tuple[float, float, float, float]  # x, y, w, h


def normalize(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant map becomes all zeros."""
    h = heatmap.astype(np.float64)
    lo, hi = float(h.min()), float(h.max())
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def heatmap_to_boxes(heatmap: np.ndarray, threshold: float = 0.5) -> list[Box]:
    """Boxes ``(x, y, w, h)`` around connected components of ``normalize(heatmap) >= threshold``.

    Components use 8-connectivity; boxes are in pixel units of the heatmap and
    sorted by area, largest first.
    """
    mask = normalize(heatmap) >= threshold
    if not mask.any() or np.ptp(heatmap) == 0:
        return []
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is None:
            continue
        ys, xs = sl
        boxes.append((float(xs.start), float(ys.start), float(xs.stop - xs.start), float(ys.stop - ys.start)))
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def score_image(pred: Sequence[Box], truth: Sequence[Box], min_iou: float = 0.1) -> tuple[float, bool]:
    """(precision, hit) for one image and class: TP/detections, and whether any detection hits."""
    if not pred:
        return 0.0, False
    tp = sum(1 for p in pred if any(iou(p, t) >= min_iou for t in truth))
    return tp / len(pred), tp > 0


def random_boxes_like(pred: Sequence[Box], width: float, height: float,
                      rng: np.random.Generator) -> list[Box]:
    """The same box sizes placed uniformly at random inside the image (a chance baseline)."""
    out = []
    for _, _, w, h in pred:
        x = rng.uniform(0, max(width - w, 0))
        y = rng.uniform(0, max(height - h, 0))
        out.append((x, y, w, h))
    return out


def scale_box(b: Box, sx: float, sy: float) -> Box:
    return (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)


def matching_sentence(m: dict[str, Any], source: str) -> str:
    """How a box list met the test split, in one sentence (for the screen and the report)."""
    rest = [f"{m[k]} {what}" for k, what in (("other_splits", "in the train or validation split"),
                                             ("ambiguous_name", "with a file name shared by several test images"),
                                             ("not_in_dataset", "of images not in the dataset"),
                                             ("unknown_label", "of labels the model does not have"))
            if m.get(k)]
    if m.get("unknown_label_names"):
        rest[-1] += f" ({', '.join(m['unknown_label_names'])})"
    return (f"boxes from {source}: {m['matched']} of {m['boxes']} matched test images "
            f"({m['test_images_with_boxes']} of {m['test_images']} test images have a box)"
            + (f"; not scored: {'; '.join(rest)}" if rest else ""))
