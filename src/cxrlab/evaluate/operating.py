"""Decisions at a threshold: confusion counts and the rates read from them, with bootstrap CIs.

Pure functions on arrays.  Bootstrap resamples are the multinomial weights of
:func:`cxrlab.evaluate.stats.bootstrap_weights` (patients resampled where
known), so every resample's confusion matrix is one matrix product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrlab.evaluate.stats import bootstrap_weights, percentile_ci

#: The rates reported at an operating point, in table order.
RATES = ("accuracy", "sensitivity", "specificity", "ppv", "npv")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def rates(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, np.ndarray]:
    """Accuracy, sensitivity, specificity, PPV and NPV from (weighted) confusion counts.

    Args:
        tp, fp, tn, fn: counts, scalars or arrays of one shape (e.g. one per resample).

    Returns:
        The five rates as arrays of that shape; NaN where a denominator is zero.
    """
    tp, fp, tn, fn = (np.asarray(v, dtype=float) for v in (tp, fp, tn, fn))
    return {"accuracy": _ratio(tp + tn, tp + fp + tn + fn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def confusion_counts(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    """TP, FP, TN, FN of the decision ``score >= threshold``; NaN targets are left out."""
    keep = ~np.isnan(y)
    truth, pred = y[keep] == 1, score[keep] >= threshold
    return {"tp": int(np.sum(truth & pred)), "fp": int(np.sum(~truth & pred)),
            "tn": int(np.sum(~truth & ~pred)), "fn": int(np.sum(truth & ~pred))}


def confusion_matrix(counts: dict[str, int]) -> list[list[int]]:
    """``{tp, fp, tn, fn}`` as the matrix ``[[TN, FP], [FN, TP]]`` (rows: truth negative, positive)."""
    return [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]


def operating_point(y: np.ndarray, score: np.ndarray, threshold: float, n_boot: int = 1000,
                    rng: np.random.Generator | None = None, groups: np.ndarray | None = None,
                    chunk: int = 200) -> dict[str, Any]:
    """The rates of one label at ``threshold`` with 95% percentile-bootstrap CIs.

    Args:
        y: (N,) targets in {0, 1}, NaN for "not labelled" (left out).
        score: (N,) probabilities.
        threshold: decide positive when ``score >= threshold`` (chosen on validation, never on test).
        n_boot: resamples.
        rng: the resampling generator (a fresh ``default_rng(0)`` when omitted).
        groups: (N,) patient ids; whole patients are resampled when given.
        chunk: resamples per matrix product (bounds memory).

    Returns:
        ``{"threshold", "confusion": {tp, fp, tn, fn}, "normalised": [[TN, FP], [FN, TP]] as row
        shares, "n_boot", <rate>: {"value", "ci_low", "ci_high"} for each of :data:`RATES`}``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    keep = ~np.isnan(y)
    truth, pred = y[keep] == 1, score[keep] >= threshold
    g = groups[keep] if groups is not None else None
    cells = np.stack([truth & pred, ~truth & pred, ~truth & ~pred, truth & ~pred]).astype(np.float32).T
    counts = confusion_counts(y, score, threshold)
    point = rates(*(counts[k] for k in ("tp", "fp", "tn", "fn")))
    boot: dict[str, list[np.ndarray]] = {k: [] for k in RATES}
    n = int(keep.sum())
    for b0 in range(0, n_boot if n else 0, chunk):
        w = bootstrap_weights(n, min(chunk, n_boot - b0), rng, g)
        tp, fp, tn, fn = (w @ cells).T
        for k, v in rates(tp, fp, tn, fn).items():
            boot[k].append(v)
    out: dict[str, Any] = {
        "threshold": float(threshold), "confusion": counts, "n_boot": n_boot,
        "normalised": [[_share(v, sum(row)) for v in row] for row in confusion_matrix(counts)],
    }
    for k in RATES:
        lo, hi = percentile_ci(np.concatenate(boot[k])) if boot[k] else (float("nan"), float("nan"))
        out[k] = {"value": float(point[k]), "ci_low": lo, "ci_high": hi}
    return out


def _share(a: int, total: int) -> float:
    return a / total if total else float("nan")


def multiclass_class_cis(true: np.ndarray, pred: np.ndarray, n_classes: int, n_boot: int = 1000,
                         rng: np.random.Generator | None = None, groups: np.ndarray | None = None,
                         chunk: int = 200) -> dict[str, np.ndarray]:
    """Per-class precision and recall of arg-max decisions with 95% bootstrap CIs.

    Args:
        true, pred: (N,) class indices.
        n_classes: number of classes.
        n_boot, rng, groups, chunk: as in :func:`operating_point`.

    Returns:
        ``{"precision": (C, 2), "recall": (C, 2), "fpr": (C,)}``: CI bounds per class, and the
        one-vs-rest false-positive rate of the decisions (where each class's ROC point lies).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    t = np.eye(n_classes, dtype=np.float32)[true]
    p = np.eye(n_classes, dtype=np.float32)[pred]
    hit = t * p
    prec, rec = [], []
    for b0 in range(0, n_boot, chunk):
        w = bootstrap_weights(len(true), min(chunk, n_boot - b0), rng, groups)
        tp, support, predicted = w @ hit, w @ t, w @ p
        prec.append(_ratio(tp, predicted))
        rec.append(_ratio(tp, support))
    prec_all, rec_all = np.concatenate(prec), np.concatenate(rec)
    fp = (p * (1 - t)).sum(0)
    neg = (1 - t).sum(0)
    return {"precision": np.array([percentile_ci(prec_all[:, k]) for k in range(n_classes)]),
            "recall": np.array([percentile_ci(rec_all[:, k]) for k in range(n_classes)]),
            "fpr": _ratio(fp, neg)}
