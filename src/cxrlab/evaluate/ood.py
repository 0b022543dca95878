"""Out-of-distribution scores: a Gaussian of penultimate features and the Mahalanobis distance.

Arrays in, dicts out (no model, no files).  :func:`fit_ood` fits the training
images' features with a shrunk covariance (Ledoit-Wolf) and keeps a compact
summary: the mean, the ``k`` leading principal axes of that covariance with
their variances, and one variance for the rest of the spectrum (exact when
``k`` covers the features; a probabilistic-PCA style approximation otherwise).
The flag threshold is a percentile (default 99) of the validation images'
scores, so about 1% of in-distribution images are flagged by construction.

The summary is a plain dict of lists and numbers (``ood.json`` of a run);
:func:`mahalanobis` and :func:`flags` take it back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrlab.errors import CxrlabError

#: Version of the summary's layout (bump when a field changes meaning).
SUMMARY_VERSION = 1

#: At most this many principal axes are stored (the rest share one variance).
MAX_COMPONENTS = 256


def _round(a: np.ndarray) -> np.ndarray:
    """Round to float32 precision (what the stored summary holds), as float64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _check(feats: np.ndarray, what: str, minimum: int) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise CxrlabError(f"OOD: {what} features must be (N, D), got shape {feats.shape}")
    if len(feats) < minimum:
        raise CxrlabError(f"OOD: needs at least {minimum} {what} images, got {len(feats)}")
    if not np.isfinite(feats).all():
        raise CxrlabError(f"OOD: {what} features hold NaN or infinity (a diverged model?)")
    return feats


def fit_gaussian(train: np.ndarray, max_components: int = MAX_COMPONENTS) -> dict[str, Any]:
    """Mean and shrunk covariance of ``train`` (N, D) as a compact summary (no threshold yet)."""
    from sklearn.covariance import LedoitWolf

    x = _check(train, "training", 2)
    lw = LedoitWolf(assume_centered=False).fit(x)
    var, axes = np.linalg.eigh(lw.covariance_)  # ascending
    var, axes = var[::-1], axes[:, ::-1]
    k = min(len(var), max_components)
    tiny = max(float(var[0]), 1.0) * 1e-12
    rest = float(var[k:].mean()) if k < len(var) else float(var[-1])
    return {
        "version": SUMMARY_VERSION, "method": "mahalanobis", "covariance": "ledoit-wolf",
        "shrinkage": float(lw.shrinkage_), "n_train": int(len(x)), "dim": int(x.shape[1]),
        "components": int(k),
        "mean": _round(lw.location_).tolist(),
        "axes": _round(axes[:, :k].T).tolist(),  # (k, D), rows are unit vectors
        "variances": _round(np.maximum(var[:k], tiny)).tolist(),
        "rest_variance": float(_round(np.array(max(rest, tiny)))),
    }


def mahalanobis(feats: np.ndarray, summary: dict[str, Any]) -> np.ndarray:
    """Mahalanobis distance (N,) of features to the summary's Gaussian."""
    x = np.asarray(feats, dtype=np.float64)
    mean = np.asarray(summary["mean"], dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(mean):
        raise CxrlabError(f"OOD: features of shape {x.shape} do not match the summary's {len(mean)} dimensions")
    d = x - mean
    axes = np.asarray(summary["axes"], dtype=np.float64).reshape(-1, len(mean))
    proj = d @ axes.T
    inside = (proj**2 / np.asarray(summary["variances"], dtype=np.float64)).sum(1)
    residual = np.maximum((d**2).sum(1) - (proj**2).sum(1), 0.0)
    return np.sqrt(inside + residual / float(summary["rest_variance"]))


def fit_ood(train: np.ndarray, val: np.ndarray, percentile: float = 99.0,
            max_components: int = MAX_COMPONENTS) -> dict[str, Any]:
    """The summary of :func:`fit_gaussian` plus the ``percentile`` of validation scores as the threshold.

    Args:
        train: penultimate features (N, D) of training images.
        val: features (M, D) of validation images (never the test split).
        percentile: images scoring above this percentile of validation are flagged.

    Returns:
        A JSON-ready dict: the Gaussian, ``threshold``, ``percentile``, ``n_val`` and the
        validation and training flag rates (a check: the first is about ``1 - percentile/100``).
    """
    if not 50.0 <= percentile < 100.0:
        raise CxrlabError(f"OOD: percentile must be in [50, 100), got {percentile}")
    summary = fit_gaussian(train, max_components)
    v = _check(val, "validation", 1)
    val_scores = mahalanobis(v, summary)
    threshold = float(np.percentile(val_scores, percentile))
    train_scores = mahalanobis(np.asarray(train, dtype=np.float64), summary)
    summary.update({
        "threshold": threshold, "percentile": float(percentile), "n_val": int(len(v)),
        "val_flag_rate": float(np.mean(val_scores > threshold)),
        "train_flag_rate": float(np.mean(train_scores > threshold)),
        "val_score_median": float(np.median(val_scores)),
    })
    return summary


def flags(scores: np.ndarray, summary: dict[str, Any]) -> np.ndarray:
    """True where a score lies beyond the summary's threshold."""
    return np.asarray(scores) > float(summary["threshold"])


def describe(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its arrays (for a model card, a log line or an API answer)."""
    return {k: v for k, v in summary.items() if k not in ("mean", "axes", "variances")}
