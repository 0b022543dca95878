"""Where a model looks, measured: CAM energy inside masks, the pointing game, mIoU, baselines, sanity checks.

Arrays in, arrays out (one value per image); :mod:`cxrlab.evaluate.audit` turns them into records with
patient-bootstrap CIs.  All maps are (N, S, S) in model-input pixels and all masks (N, S, S) bool in the
same pixels (``Geometry.mask_to_model`` puts an original-pixel mask there, letterbox included).

Why each number (CheXlocalize, Saporta et al. 2022; the pointing game, Zhang et al. 2016; Adebayo et al.
2018, "Sanity Checks for Saliency Maps"; deletion, Petsiuk et al. 2018):

- **energy share**: ``sum(map * mask) / sum(map)`` of the map clipped at 0.  A map with no positive
  energy has no share (NaN: left out and counted), not a share of 0.
- **pointing-game hit**: the map's maximum lies inside the mask; a constant map has no maximum (a miss).
- **IoU at a level**: the min-max normalised map ``>= level`` against the mask.  The level is chosen on
  the *validation* split (:func:`otsu_level` of the pooled validation maps, or :func:`best_level`),
  never on the test masks: a level tuned on the masks it is scored on inflates the mIoU.
- **baselines**: a uniform map (share = the mask's area fraction, pointing hit = the chance a random pixel
  falls inside, IoU of the whole image) and a centred Gaussian (a map that only knows "the middle").
- **randomisation check**: Spearman rank correlation between the maps of the trained model and of a copy
  with its top layers re-initialised; a map that explains the weights changes (low correlation), a map
  that only reflects the input (its edges) does not (correlation 1).
- **deletion faithfulness**: the target probability as the most-attributed pixels are replaced by the
  image mean, against a random order; ``random AUC - map AUC`` > 0 says the map ranks pixels the model
  uses.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import rankdata
from torch import nn

from cxrlab.errors import CxrlabError
from cxrlab.explain.cams import attribute, eval_mode
from cxrlab.inference import Predictor
from cxrlab.models.task import activation
from cxrlab.progress import progress

NAN = float("nan")

#: Fractions of pixels deleted along a deletion curve.
DELETION_STEPS = tuple(np.linspace(0.0, 1.0, 11))


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).reshape(len(a), -1)


def energy_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's positive energy inside its mask, (N,); NaN where a map has no positive energy."""
    m = np.clip(_flat(maps).astype(np.float64), 0, None)
    total = m.sum(1)
    inside = (m * _flat(masks)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), NAN)


def pointing_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """1.0 where the map's maximum lies inside the mask, else 0.0 (a constant map has no maximum: 0), (N,)."""
    m = _flat(maps)
    top = m.argmax(1)
    inside = _flat(masks)[np.arange(len(m)), top]
    return (inside & (np.ptp(m, axis=1) > 0)).astype(np.float64)


def normalise(maps: np.ndarray) -> np.ndarray:
    """Per-image min-max to [0, 1] (a constant map becomes zeros), float32."""
    m = _flat(maps).astype(np.float32)
    lo, hi = m.min(1, keepdims=True), m.max(1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1)
    return ((m - lo) / span * (hi > lo)).reshape(np.shape(maps))


def otsu_level(maps: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the pooled min-max normalised ``maps`` (validation maps, never the test's)."""
    v = normalise(maps).ravel()
    if v.size == 0 or np.ptp(v) == 0:
        return 0.5
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    centres = (edges[:-1] + edges[1:]) / 2
    mu = np.cumsum(p * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def iou_at(maps: np.ndarray, masks: np.ndarray, level: float) -> np.ndarray:
    """IoU of ``normalise(map) >= level`` with the mask, per image (N,); 0 where both are empty."""
    pred = _flat(normalise(maps)) >= level
    true = _flat(masks).astype(bool)
    inter = (pred & true).sum(1)
    union = (pred | true).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def best_level(maps: np.ndarray, masks: np.ndarray, grid: Sequence[float] = tuple(np.arange(0.05, 1.0, 0.05))) -> float:
    """The level of ``grid`` with the highest mean IoU on these (validation) maps and masks (CheXlocalize's rule)."""
    scores = [float(np.mean(iou_at(maps, masks, t))) for t in grid]
    return float(grid[int(np.argmax(scores))])


# ---- baselines -----------------------------------------------------------------------------------
def gaussian_map(size: int, sigma: float = 0.25) -> np.ndarray:
    """A centred isotropic Gaussian (sigma as a fraction of the side), (S, S)."""
    c = (np.arange(size) + 0.5) / size - 0.5
    return np.exp(-(c[None, :] ** 2 + c[:, None] ** 2) / (2 * sigma**2)).astype(np.float32)


def uniform_baseline(masks: np.ndarray) -> dict[str, np.ndarray]:
    """What a uniform map scores, per image: share and pointing hit = the mask's area fraction, IoU of the
    whole image = the same fraction (it predicts every pixel)."""
    frac = _flat(masks).mean(1).astype(np.float64)
    return {"share": frac, "hit": frac, "iou": frac}


def gaussian_baseline(masks: np.ndarray, level: float, sigma: float = 0.25) -> dict[str, np.ndarray]:
    """What a centred Gaussian scores, per image (share, pointing hit, IoU at ``level``)."""
    g = np.broadcast_to(gaussian_map(masks.shape[-1], sigma), masks.shape)
    return {"share": energy_share(g, masks), "hit": pointing_hits(g, masks), "iou": iou_at(g, masks, level)}


def edge_maps(images_u8: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the input (a map that ignores the model's weights), (N, S, S)."""
    x = np.asarray(images_u8, np.float32)
    return np.stack([np.hypot(ndimage.sobel(i, 0), ndimage.sobel(i, 1)) for i in x]) if len(x) else x


def boxes_to_masks(boxes: Sequence[Sequence[tuple[float, float, float, float]]], size: int) -> np.ndarray:
    """(N, S, S) bool masks of the union of each image's boxes ``(x, y, w, h)`` in model pixels."""
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for k, bs in enumerate(boxes):
        for x, y, w, h in bs:
            x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
            x1, y1 = min(int(np.ceil(x + w)), size), min(int(np.ceil(y + h)), size)
            out[k, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = True
    return out


# ---- maps of a model -----------------------------------------------------------------------------
def cam_maps(predictor: Predictor, layer: nn.Module, images: Any, rows: Sequence[int], targets: Sequence[int],
             method: str = "gradcam", batch_size: int = 32, desc: str = "CAMs",
             model: nn.Module | None = None) -> np.ndarray:
    """Attribution maps (n, S, S) float32 of ``method`` for ``images[rows]``, one target class each.

    ``model``: another module with the same input (the randomised copy); default ``predictor.model``.
    """
    model = model if model is not None else predictor.model
    if model is None:
        raise CxrlabError("CAMs need the PyTorch model (not an exported ONNX graph)")
    rows, targets = list(rows), list(targets)
    size = np.asarray(images[rows[:1]]).shape[-1] if rows else 0
    out = np.zeros((len(rows), size, size), dtype=np.float32)
    for i in progress(range(0, len(rows), batch_size), desc=desc):
        r = rows[i:i + batch_size]
        x = predictor.inputs(np.asarray(images[np.asarray(r)]))
        out[i:i + len(r)] = attribute(model, layer, x, targets[i:i + batch_size], method)
    return out


def randomised_copy(model: nn.Module, layer: nn.Module, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A deep copy of ``model`` with its top layers re-initialised (the classifier and the CAM layer), and
    the copy's CAM layer.  Adebayo et al.'s cascading randomisation, its first and strongest step."""
    names = {id(m): n for n, m in model.named_modules()}
    if id(layer) not in names:
        raise CxrlabError(f"{type(model).__name__}: the CAM layer is not a submodule of the model")
    twin = copy.deepcopy(model)
    twin_layer = twin.get_submodule(names[id(layer)]) if names[id(layer)] else twin
    head = twin.get_classifier() if callable(getattr(twin, "get_classifier", None)) else None
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        n = 0
        for top in (head, twin_layer):
            for m in (top.modules() if isinstance(top, nn.Module) else ()):
                if callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
                    n += 1
    finally:
        torch.random.set_rng_state(state)
    if n == 0:
        raise CxrlabError(f"{type(model).__name__}: no layer to re-initialise for the randomisation check")
    return twin, twin_layer


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between the maps ``a[k]`` and ``b[k]``, (N,); NaN where one is constant."""
    ra = rankdata(_flat(a), axis=1)
    rb = rankdata(_flat(b), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), NAN)


@torch.no_grad()
def deletion_auc(predictor: Predictor, images_u8: np.ndarray, maps: np.ndarray, targets: Sequence[int],
                 steps: Sequence[float] = DELETION_STEPS, order: str = "map", seed: int = 0) -> np.ndarray:
    """Area under the target-probability curve as pixels are deleted (set to the image's mean), (N,).

    ``order``: ``map`` deletes the most-attributed pixels first, ``random`` in a random order (the
    baseline).  Lower is more faithful for ``map``.
    """
    model = predictor.model
    n = len(images_u8)
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    flat = _flat(maps)
    ranks = np.argsort(-flat, axis=1, kind="stable") if order == "map" else \
        np.argsort(rng.random(flat.shape), axis=1)
    x = predictor.inputs(np.asarray(images_u8))  # (N, C, S, S)
    c, s = x.shape[1], x.shape[-1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    t = torch.as_tensor(list(targets))
    curves = []
    with eval_mode(model) if model is not None else _null():
        for f in steps:
            k = int(round(f * s * s))
            keep = torch.ones((n, s * s), dtype=torch.bool)
            if k:
                keep[torch.arange(n)[:, None], torch.from_numpy(ranks[:, :k])] = False
            keep = keep.view(n, 1, s, s).to(x.device)
            xd = torch.where(keep, x, mean.expand_as(x))
            probs = activation(predictor.forward(xd.expand(n, c, s, s)).float(), predictor.task).cpu()
            curves.append(probs[torch.arange(n), t].numpy())
    y = np.stack(curves, 1)
    return np.trapezoid(y, x=np.asarray(steps), axis=1) if hasattr(np, "trapezoid") else np.trapz(y, np.asarray(steps), axis=1)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None
