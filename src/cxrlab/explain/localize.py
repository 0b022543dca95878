"""Score CAM localisation against ground-truth boxes, with a random-box baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrlab.data.transforms import to_float
from cxrlab.explain.boxes import Box, heatmap_to_boxes, random_boxes_like, scale_box, score_image
from cxrlab.explain.cams import attribute
from cxrlab.progress import progress


@dataclass
class Case:
    """One (image, class) pair with a ground-truth box, and what the CAM found."""

    row: int  # index into the image array
    image: str
    label: str
    truth: list[Box]
    pred: list[Box] = field(default_factory=list)
    cam: np.ndarray | None = None
    precision: float = 0.0
    hit: bool = False


def localize(model: nn.Module, layer: nn.Module, images: Any, image_ids: list[str],
             boxes: pd.DataFrame, labels: list[str], sizes: dict[str, tuple[int, int]],
             in_chans: int = 1, device: torch.device | str = "cpu", threshold: float = 0.5,
             min_iou: float = 0.1, draws: int = 20, seed: int = 0, max_cases: int | None = None,
             batch_size: int = 16, method: str = "gradcam") -> tuple[dict, list[Case]]:
    """Grad-CAM boxes for every (image, class) with a true box; per-class precision/accuracy.

    Args:
        images: uint8 (N, S, S) images at the model's input size (array, cache rows or tensor).
        image_ids: the manifest id of each row of ``images``.
        boxes: ``image, label, x, y, w, h`` in original-image pixels.
        sizes: original (width, height) per image id, to map CAM boxes back.
        draws: random placements per case for the baseline.

    Returns:
        (summary dict, scored cases).  ``summary['per_class'][label]`` holds
        ``n, accuracy, precision, random_accuracy, random_precision``.
    """
    rng = np.random.default_rng(seed)
    row_of = {img: i for i, img in enumerate(image_ids)}
    label_idx = {lab: i for i, lab in enumerate(labels)}
    sel = boxes[boxes["image"].isin(row_of) & boxes["label"].isin(label_idx)]
    cases = [Case(row=row_of[img], image=img, label=lab,
                  truth=[tuple(map(float, r)) for r in g[["x", "y", "w", "h"]].to_numpy()])
             for (img, lab), g in sel.groupby(["image", "label"], sort=True)]
    if max_cases is not None:
        cases = cases[:max_cases]
    size = images.shape[-1]
    model.to(device)
    rand_prec: dict[int, float] = {}
    rand_hit: dict[int, float] = {}
    batches = [cases[i:i + batch_size] for i in range(0, len(cases), batch_size)]
    k = 0
    for batch in progress(batches, desc=method):
        rows = np.array([c.row for c in batch])
        x = to_float(torch.as_tensor(np.asarray(images[rows])).to(device), in_chans)
        cams = attribute(model, layer, x, [label_idx[c.label] for c in batch], method)
        for c, cam in zip(batch, cams, strict=True):
            w, h = sizes[c.image]
            c.cam = cam
            c.pred = [scale_box(b, w / size, h / size) for b in heatmap_to_boxes(cam, threshold)]
            c.precision, c.hit = score_image(c.pred, c.truth, min_iou)
            scores = [score_image(random_boxes_like(c.pred, w, h, rng), c.truth, min_iou) for _ in range(draws)]
            rand_prec[k] = float(np.mean([s[0] for s in scores]))
            rand_hit[k] = float(np.mean([s[1] for s in scores]))
            k += 1

    per_class = {}
    for lab in labels:
        ks = [i for i, c in enumerate(cases) if c.label == lab]
        if not ks:
            continue
        per_class[lab] = {
            "n": len(ks),
            "accuracy": float(np.mean([cases[i].hit for i in ks])),
            "precision": float(np.mean([cases[i].precision for i in ks])),
            "random_accuracy": float(np.mean([rand_hit[i] for i in ks])),
            "random_precision": float(np.mean([rand_prec[i] for i in ks])),
        }

    def mean_of(key: str) -> float:
        vals = [v[key] for v in per_class.values()]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {
        "method": method, "threshold": threshold, "iou": min_iou, "cases": len(cases),
        "per_class": per_class,
        "mean_accuracy": mean_of("accuracy"), "mean_precision": mean_of("precision"),
        "random_mean_accuracy": mean_of("random_accuracy"),
        "random_mean_precision": mean_of("random_precision"),
    }
    return summary, cases
