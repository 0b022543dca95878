"""Score CAM localisation against ground-truth boxes, with a random-box baseline.

Before scoring, :func:`match_boxes` says how a box list meets the test split
(boxes matched by image id or by a file name unique in the split; the rest
counted by reason) and :func:`boxes_outside` checks the coordinate frame: a
box beyond its image (a 1024-px NIH box on a 128-px copy) is refused, not
scored as a miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from cxrlab.data.preprocess import Geometry
from cxrlab.explain.boxes import (  # noqa: F401  (matching_sentence re-exported)
    Box,
    heatmap_to_boxes,
    matching_sentence,
    random_boxes_like,
    score_image,
)
from cxrlab.explain.cams import attribute
from cxrlab.inference import Predictor
from cxrlab.progress import progress


@dataclass
class Case:
    """One (image, class) pair with a ground-truth box, and what the CAM found."""

    row: int  # index into the image array
    image: str
    label: str
    truth: list[Box]  # original-image pixels
    pred: list[Box] = field(default_factory=list)  # original-image pixels
    truth_model: list[Box] = field(default_factory=list)  # the same boxes in model-input pixels
    pred_model: list[Box] = field(default_factory=list)
    cam: np.ndarray | None = None
    precision: float = 0.0
    hit: bool = False


def localize(predictor: Predictor, layer: nn.Module, images: Any, image_ids: list[str],
             boxes: pd.DataFrame, labels: list[str], geometry: dict[str, Geometry],
             threshold: float = 0.5, min_iou: float = 0.1, draws: int = 20, seed: int = 0,
             max_cases: int | None = None, batch_size: int = 16,
             method: str = "gradcam") -> tuple[dict, list[Case]]:
    """Grad-CAM boxes for every (image, class) with a true box; per-class precision/accuracy.

    Args:
        predictor: the model's inference path (its ``model`` is attributed).
        images: uint8 (N, S, S) model inputs (array, cache rows or tensor), preprocessed by
            the contract of :mod:`cxrlab.data.preprocess`.
        image_ids: the manifest id of each row of ``images``.
        boxes: ``image, label, x, y, w, h`` in original-image pixels.
        geometry: per image id, the mapping between original and model pixels.
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
    model = predictor.model
    model.to(predictor.device)
    rand_prec: dict[int, float] = {}
    rand_hit: dict[int, float] = {}
    batches = [cases[i:i + batch_size] for i in range(0, len(cases), batch_size)]
    k = 0
    for batch in progress(batches, desc=method):
        rows = np.array([c.row for c in batch])
        x = predictor.inputs(np.asarray(images[rows]))
        cams = attribute(model, layer, x, [label_idx[c.label] for c in batch], method)
        for c, cam in zip(batch, cams, strict=True):
            g = geometry[c.image]
            w, h = g.width, g.height
            c.cam = cam
            c.pred_model = heatmap_to_boxes(cam, threshold)
            c.pred = [g.to_original(b) for b in c.pred_model]
            c.truth_model = [g.to_model(b) for b in c.truth]
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
            "mean_box_area": float(np.mean([b[2] * b[3] for i in ks for b in cases[i].truth])),
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


def match_boxes(boxes: pd.DataFrame, test_ids: list[str], other_ids: Iterable[str] = (),
                labels: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The boxes of test images, and counts that say how the list met the split.

    A box's ``image`` matches a test image when it is its id, or else its file name when exactly
    one test image has that name (a CheXpert ``view1_frontal.jpg`` is ambiguous, not guessed).

    Args:
        boxes: ``image, label, x, y, w, h``.
        test_ids: the run's test image ids.
        other_ids: ids of the dataset's other images (train, validation), to tell "in another
            split" from "not in the dataset".
        labels: the model's labels; boxes of other labels are counted, not scored.

    Returns:
        (matched boxes with ``image`` set to the test id, counts): ``boxes`` in the list,
        ``matched``, ``other_splits``, ``ambiguous_name``, ``not_in_dataset``, ``unknown_label``
        (with up to 10 ``unknown_label_names``), ``test_images`` and ``test_images_with_boxes``.
    """
    ids = set(test_ids)
    name_count = Counter(PurePath(i).name for i in test_ids)
    by_name = {PurePath(i).name: i for i in test_ids if name_count[PurePath(i).name] == 1}
    others = set(other_ids)
    other_names = {PurePath(i).name for i in others}

    def resolve(img: str) -> str | None:
        return img if img in ids else by_name.get(PurePath(img).name)

    images = boxes["image"].astype(str)
    resolved = images.map(resolve)
    found = resolved.notna()
    ambiguous = ~found & images.map(lambda i: name_count.get(PurePath(i).name, 0) > 1)
    other = ~found & ~ambiguous & images.map(lambda i: i in others or PurePath(i).name in other_names)
    known = boxes["label"].isin(labels) if labels is not None else pd.Series(True, index=boxes.index)
    matched = boxes[found & known].assign(image=resolved[found & known])
    unknown = boxes.loc[found & ~known, "label"]
    counts = {
        "boxes": int(len(boxes)), "matched": int(len(matched)), "other_splits": int(other.sum()),
        "ambiguous_name": int(ambiguous.sum()), "not_in_dataset": int((~found & ~ambiguous & ~other).sum()),
        "unknown_label": int(len(unknown)), "unknown_label_names": sorted(map(str, set(unknown)))[:10],
        "test_images": len(ids), "test_images_with_boxes": int(matched["image"].nunique()),
    }
    return matched.reset_index(drop=True), counts


def boxes_outside(boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], tolerance: float = 0.02) -> pd.DataFrame:
    """Rows of ``boxes`` that are empty or reach beyond their image (``sizes``: id -> (width, height))
    by more than ``tolerance`` of its side: boxes drawn in another image's pixel frame."""
    if boxes.empty:
        return boxes
    wh = boxes["image"].map(sizes)
    w = wh.map(lambda s: s[0]).astype(float)
    h = wh.map(lambda s: s[1]).astype(float)
    x, y, bw, bh = (boxes[c].astype(float) for c in ("x", "y", "w", "h"))
    bad = ((bw <= 0) | (bh <= 0) | (x < -tolerance * w) | (y < -tolerance * h)
           | (x + bw > (1 + tolerance) * w) | (y + bh > (1 + tolerance) * h))
    return boxes[bad].assign(width=w[bad].astype(int), height=h[bad].astype(int))
