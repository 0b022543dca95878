"""Pure metric functions (no I/O).

An AUC that is undefined (only one class present) is NaN with a warning;
macro averages skip NaN.  NaN targets (ignored labels) are dropped per label.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC of one label; NaN (with a warning) when it is undefined."""
    keep = ~np.isnan(y_true)
    y, s = y_true[keep], y_score[keep]
    if len(np.unique(y)) < 2:
        warnings.warn("AUC undefined: only one class present", RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(roc_auc_score(y, s))


def per_label_auc(y_true: np.ndarray, y_score: np.ndarray, labels: list[str]) -> dict[str, float]:
    return {lab: roc_auc(y_true[:, i], y_score[:, i]) for i, lab in enumerate(labels)}


def macro(values: dict[str, float]) -> float:
    arr = np.array(list(values.values()), dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def roc_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y_true)
    fpr, tpr, _ = roc_curve(y_true[keep], y_score[keep])
    return fpr, tpr


def pr_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the precision-recall curve; NaN targets left out."""
    keep = ~np.isnan(y_true)
    precision, recall, _ = precision_recall_curve(y_true[keep], y_score[keep])
    return recall, precision
