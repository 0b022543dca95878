"""Decisions at a threshold: confusion counts and the rates read from them, with bootstrap CIs.

Pure functions on arrays.  Bootstrap resamples are the multinomial weights of
:func:`cxrlab.evaluate.stats.bootstrap_weights` (patients resampled where
known), so every resample's confusion matrix is one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass
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


#: ``evaluate.threshold_rule`` names: Youden's J, a target rate (``<rate>:<target>``) or the best F1.
RULES = ("youden", "sensitivity", "specificity", "ppv", "max_f1")
DEFAULT_RULE = "youden"


@dataclass(frozen=True)
class ThresholdChoice:
    """A label's threshold chosen on validation by a rule, and what the rule's rate reached there.

    ``reached`` is False when no threshold meets the target; ``value`` is then the best reached.
    """

    rule: str
    threshold: float
    value: float
    reached: bool = True

    @property
    def rate(self) -> str:
        """The rate the rule is about (``j`` for Youden's J, ``f1`` for max F1)."""
        name = parse_rule(self.rule)[0]
        return {"youden": "j", "max_f1": "f1"}.get(name, name)


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``"sensitivity:0.9"`` -> ``("sensitivity", 0.9)``; ``"youden"`` -> ``("youden", None)``.

    Raises:
        ValueError: an unknown rule, a target rule without a target in (0, 1], or a target on a rule
            that takes none.
    """
    name, _, target = str(rule).strip().partition(":")
    if name not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; use youden, max_f1, sensitivity:T, specificity:T "
                         "or ppv:T (T in (0, 1])")
    if name in ("youden", "max_f1"):
        if target:
            raise ValueError(f"threshold rule {name} takes no target (got {rule!r})")
        return name, None
    try:
        t = float(target)
    except ValueError:
        raise ValueError(f"threshold rule {rule!r}: the target must be a number in (0, 1], e.g. {name}:0.9") from None
    if not 0 < t <= 1:
        raise ValueError(f"threshold rule {rule!r}: the target must be in (0, 1]")
    return name, t


def _sweep(y: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """Every distinct decision ``score >= t`` of validation: t from the highest score down, then "none positive"."""
    order = np.argsort(-score, kind="mergesort")
    s, truth = score[order], y[order] == 1
    last = np.r_[s[1:] != s[:-1], True]  # the last of each tie group: decisions change only there
    tp, fp = np.cumsum(truth)[last].astype(float), np.cumsum(~truth)[last].astype(float)
    thr = s[last]
    pos, neg = float(truth.sum()), float((~truth).sum())
    # and the threshold above every score: nothing positive (so a specificity target is always reachable)
    thr = np.r_[np.nextafter(s[0], np.inf) if len(s) else 1.0, thr]
    tp, fp = np.r_[0.0, tp], np.r_[0.0, fp]
    r = rates(tp, fp, neg - fp, pos - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + (pos - tp) > 0, 2 * tp / np.maximum(2 * tp + fp + pos - tp, 1), np.nan)
    return {"threshold": thr, **r, "f1": f1, "j": r["sensitivity"] + r["specificity"] - 1}


def choose_threshold(y: np.ndarray, score: np.ndarray, rule: str = DEFAULT_RULE) -> ThresholdChoice:
    """The threshold of one label that ``rule`` picks on validation targets ``y`` (NaN: left out) and scores.

    - ``youden``: the largest sensitivity + specificity - 1;
    - ``max_f1``: the largest F1;
    - ``sensitivity:T``: the highest threshold with sensitivity >= T (the most specific such point);
    - ``specificity:T``: the lowest threshold with specificity >= T (the most sensitive such point);
    - ``ppv:T``: the lowest threshold with PPV >= T (as torchxrayvision's PPV80; PPV is not monotone in
      the threshold, so the most sensitive point that reaches it).

    Returns a NaN threshold when validation lacks a class (the caller falls back to 0.5), and
    ``reached=False`` with the best value when no threshold meets the target.
    """
    name, target = parse_rule(rule)
    keep = ~np.isnan(y)
    y, score = y[keep], score[keep]
    if len(np.unique(y)) < 2:
        return ThresholdChoice(rule, float("nan"), float("nan"), True)
    sw = _sweep(y, score)
    thr = sw["threshold"]
    if name in ("youden", "max_f1"):
        v = sw["j" if name == "youden" else "f1"]
        k = int(np.nanargmax(v))
        return ThresholdChoice(rule, float(min(thr[k], 1.0)), float(v[k]))
    v = sw[name]
    ok = np.nan_to_num(v, nan=-1.0) >= target - 1e-12
    if not ok.any():
        return ThresholdChoice(rule, float("nan"), float(np.nanmax(v)) if np.isfinite(v).any() else float("nan"),
                               False)
    idx = np.flatnonzero(ok)
    k = int(idx[0] if name == "sensitivity" else idx[-1])  # thresholds run from high to low
    # halfway to the next lower score: the same decisions on validation, and a score read back from a
    # CSV (float32 printed in its shortest form) still lands on the side it was on, so the target holds
    t = thr[k] if k == 0 else (thr[k] + (thr[k + 1] if k + 1 < len(thr) else 0.0)) / 2
    return ThresholdChoice(rule, float(t), float(v[k]))


def at_prevalence(sens: Any, spec: Any, prevalence: float) -> dict[str, np.ndarray]:
    """PPV and NPV at a deployment ``prevalence`` from sensitivity and specificity (Bayes' rule).

    The test split's own PPV and NPV hold only at the test split's prevalence; a screening
    population with fewer positives has a lower PPV at the same sensitivity and specificity.
    """
    sens, spec = np.asarray(sens, dtype=float), np.asarray(spec, dtype=float)
    p = float(prevalence)
    return {"ppv": _ratio(sens * p, sens * p + (1 - spec) * (1 - p)),
            "npv": _ratio(spec * (1 - p), spec * (1 - p) + (1 - sens) * p)}


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
                    chunk: int = 200, prevalence: float | None = None) -> dict[str, Any]:
    """The rates of one label at ``threshold`` with 95% percentile-bootstrap CIs.

    Args:
        y: (N,) targets in {0, 1}, NaN for "not labelled" (left out).
        score: (N,) probabilities.
        threshold: decide positive when ``score >= threshold`` (chosen on validation, never on test).
        n_boot: resamples.
        rng: the resampling generator (a fresh ``default_rng(0)`` when omitted).
        groups: (N,) patient ids; whole patients are resampled when given.
        chunk: resamples per matrix product (bounds memory).
        prevalence: a deployment prevalence: also give PPV and NPV there (:func:`at_prevalence`), with
            CIs from the same resamples' sensitivity and specificity.

    Returns:
        ``{"threshold", "confusion": {tp, fp, tn, fn}, "normalised": [[TN, FP], [FN, TP]] as row
        shares, "n_boot", <rate>: {"value", "ci_low", "ci_high"} for each of :data:`RATES`}``; with
        ``prevalence`` also ``"prevalence"``, ``"ppv_at_prevalence"`` and ``"npv_at_prevalence"``.
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
        r = rates(tp, fp, tn, fn)
        if prevalence is not None:
            r.update({f"{k}_at_prevalence": v for k, v in at_prevalence(r["sensitivity"], r["specificity"],
                                                                         prevalence).items()})
        for k, v in r.items():
            boot.setdefault(k, []).append(v)
    out: dict[str, Any] = {
        "threshold": float(threshold), "confusion": counts, "n_boot": n_boot,
        "normalised": [[_share(v, sum(row)) for v in row] for row in confusion_matrix(counts)],
    }
    if prevalence is not None:
        out["prevalence"] = float(prevalence)
        point.update({f"{k}_at_prevalence": v for k, v in at_prevalence(point["sensitivity"], point["specificity"],
                                                                         prevalence).items()})
    for k in (*RATES, *(("ppv_at_prevalence", "npv_at_prevalence") if prevalence is not None else ())):
        lo, hi = percentile_ci(np.concatenate(boot[k])) if boot.get(k) else (float("nan"), float("nan"))
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
