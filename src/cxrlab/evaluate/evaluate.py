"""Evaluate a run's predictions: AUCs with CIs, thresholds, calibration, multi-class tables.

Works from prediction tables alone (the predictions schema of
:mod:`cxrlab.tables`), so evaluation never needs the model.
Thresholds are chosen on validation (Youden's J, or a rule of
:func:`cxrlab.evaluate.operating.choose_threshold`) and only applied to test.
Multi-label and binary labels get the rates at that threshold (accuracy, sensitivity,
specificity, PPV, NPV; PPV and NPV at a stated prevalence) with bootstrap CIs and the
confusion counts; multi-class runs per-class CIs and top-label calibration.  Every
run gets its calibration before and after its fitted calibration (Brier, slope,
intercept, ECE in equal-width and equal-mass bins).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_curve,
)

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import calibration_effect
from cxrlab.evaluate.metrics import macro, per_label_auc
from cxrlab.evaluate.operating import (
    DEFAULT_RULE,
    choose_threshold,
    confusion_counts,
    multiclass_class_cis,
    operating_point,
    parse_rule,
    rates,
)
from cxrlab.evaluate.per_source import per_source_aucs
from cxrlab.evaluate.records import CalibrationEffect, Evaluation, fresh
from cxrlab.evaluate.stats import bootstrap_aucs, bootstrap_weights, percentile_ci, weighted_auc
from cxrlab.tables import prob_columns, raw_columns

#: A threshold rule for every label, or one per label (labels not named get :data:`DEFAULT_RULE`).
Rules = str | dict[str, str] | None


def split_prediction_table(pred: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true (N, L), probabilities (N, L), groups (N,)) from a predictions table."""
    y = pred[labels].to_numpy(dtype=float)
    p = pred[prob_columns(labels)].to_numpy(dtype=float)
    groups = pred["patient"].astype(str).to_numpy() if "patient" in pred else None
    return y, p, groups


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (NaN if undefined)."""
    keep = ~np.isnan(y)
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    fpr, tpr, thr = roc_curve(y[keep], score[keep])
    return float(min(thr[int(np.argmax(tpr - fpr))], 1.0))


def sens_spec(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    keep = ~np.isnan(y)
    y, pred = y[keep] == 1, score[keep] >= threshold
    sens = float(np.mean(pred[y])) if y.any() else float("nan")
    spec = float(np.mean(~pred[~y])) if (~y).any() else float("nan")
    return sens, spec


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, dict[str, list[float]]]:
    """ECE with equal-width bins, and the reliability curve (mean p, observed rate, count per bin)."""
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    conf, freq, count = [], [], []
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        conf.append(float(p[sel].mean()))
        freq.append(float(y[sel].mean()))
        count.append(int(sel.sum()))
        ece += sel.mean() * abs(freq[-1] - conf[-1])
    return float(ece), {"confidence": conf, "observed": freq, "count": count}


def top_label_calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, dict[str, list[float]]]:
    """Top-label calibration of a multi-class model: is the arg-max class right as often as its probability says?

    Args:
        y: (N, C) one-hot targets.
        p: (N, C) class probabilities.
        bins: equal-width confidence bins.

    Returns:
        (ECE, reliability curve) as :func:`expected_calibration_error` gives them, with the
        top probability as the confidence and "the top class is the true one" as the outcome.
    """
    correct = (y.argmax(1) == p.argmax(1)).astype(float)
    return expected_calibration_error(correct, p.max(1), bins)


def _micro_auc_ci(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_boot: int,
                  seed: int) -> tuple[float, float, float]:
    n, n_labels = y.shape
    flat_y, flat_p = y.reshape(-1), p.reshape(-1)
    keep = ~np.isnan(flat_y)
    point = weighted_auc(flat_y[keep], flat_p[keep], np.ones((1, keep.sum())))[0]
    rng = np.random.default_rng(seed + 1)
    vals = []
    for b0 in range(0, n_boot, 50):
        w = bootstrap_weights(n, min(50, n_boot - b0), rng, groups)
        wl = np.repeat(w, n_labels, axis=1)[:, keep]
        vals.append(weighted_auc(flat_y[keep], flat_p[keep], wl))
    lo, hi = percentile_ci(np.concatenate(vals))
    return float(point), lo, hi


def rule_of(rules: Rules, label: str) -> str:
    """The threshold rule of ``label`` (``rules``: one for all, or ``{label: rule}``)."""
    if isinstance(rules, dict):
        return rules.get(label, DEFAULT_RULE)
    return rules or DEFAULT_RULE


def check_rules(rules: Rules, prevalence: dict[str, float] | None, labels: list[str]) -> None:
    """One line for a rule or prevalence naming a label the model lacks, an unknown rule or a bad prevalence."""
    named = {**(rules if isinstance(rules, dict) else {}), **(prevalence or {})}
    unknown = sorted(set(named) - set(labels))
    if unknown:
        raise CxrlabError(f"evaluate.threshold_rule/prevalence name {', '.join(unknown)}, not a label of the run "
                          f"(labels: {', '.join(labels)})")
    for lab in labels:
        try:
            parse_rule(rule_of(rules, lab))
        except ValueError as e:
            raise CxrlabError(f"evaluate.threshold_rule: {e}") from None
    for lab, v in (prevalence or {}).items():
        if not 0 < float(v) < 1:
            raise CxrlabError(f"evaluate.prevalence: {lab}={v}: a deployment prevalence must lie in (0, 1)")


def _choose(vy: np.ndarray | None, vp: np.ndarray | None, rule: str, lab: str) -> tuple[float, str, Any]:
    """(threshold, the rule as evaluation.json names it, the choice) of one label on validation."""
    if vy is None:
        return 0.5, "fixed", None
    choice = choose_threshold(vy, vp, rule)
    if not choice.reached:
        name, target = parse_rule(rule)
        n = int(np.sum(~np.isnan(vy)))
        raise CxrlabError(f"evaluate.threshold_rule={rule}: no threshold reaches {name} {target:g} for {lab} on "
                          f"validation (best {choice.value:.3f} over {n} images); lower the target or use youden")
    if not np.isfinite(choice.threshold):
        return 0.5, "fixed", None
    return choice.threshold, f"{rule}(val)", choice


def evaluate_multilabel(test: pd.DataFrame, labels: list[str], val: pd.DataFrame | None = None,
                        n_boot: int = 1000, seed: int = 0, operating: bool = False, rules: Rules = None,
                        prevalence: dict[str, float] | None = None) -> dict[str, Any]:
    """AUC (per label, macro, micro) with 95% bootstrap CIs, thresholds, sens/spec, AP, ECE.

    Args:
        operating: also give each label's ``operating_point`` (accuracy, sensitivity, specificity,
            PPV, NPV with CIs, confusion counts, the rule and what it reached on validation) at its
            validation-chosen threshold.
        rules: the threshold rule (:func:`cxrlab.evaluate.operating.choose_threshold`), one for all
            labels or ``{label: rule}``; Youden's J by default.
        prevalence: ``{label: p}``: PPV and NPV at a deployment prevalence too (in the operating point).

    Raises:
        CxrlabError: a rule target that no threshold reaches on validation (naming the label and the
            best value reached), a rule or prevalence for a label the run lacks.
    """
    check_rules(rules, prevalence, labels)
    y, p, groups = split_prediction_table(test, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aucs = per_label_auc(y, p, labels)
        boot = bootstrap_aucs(y, p, n_boot=n_boot, seed=seed, groups=groups)
        macro_boot = np.nanmean(boot, axis=1)
    out: dict[str, Any] = {"n": int(len(test)), "n_boot": n_boot,
                           "resampling": "patients" if groups is not None else "images", "per_label": {}}
    vy, vp = (split_prediction_table(val, labels)[:2] if val is not None else (None, None))
    for j, lab in enumerate(labels):
        lo, hi = percentile_ci(boot[:, j])
        thr, rule, choice = _choose(vy[:, j] if vy is not None else None, vp[:, j] if vp is not None else None,
                                    rule_of(rules, lab), lab)
        sens, spec = sens_spec(y[:, j], p[:, j], thr)
        keep = ~np.isnan(y[:, j])
        ap = (float(average_precision_score(y[keep, j], p[keep, j]))
              if len(np.unique(y[keep, j])) == 2 else float("nan"))
        ece, _ = expected_calibration_error(y[:, j], p[:, j])
        ppv = float(rates(**confusion_counts(y[:, j], p[:, j], thr))["ppv"])
        out["per_label"][lab] = {
            "auc": aucs[lab], "ci_low": lo, "ci_high": hi, "positives": int(np.nansum(y[:, j] == 1)),
            "average_precision": ap, "threshold": thr, "threshold_rule": rule,
            "sensitivity": sens, "specificity": spec, "ppv": ppv, "ece": ece,
        }
        if operating:
            op = operating_point(y[:, j], p[:, j], thr, n_boot, np.random.default_rng(seed + 2 + j), groups,
                                 prevalence=(prevalence or {}).get(lab))
            if choice is not None:
                op.update(rule=choice.rule, validation_value=choice.value)
            out["per_label"][lab]["operating_point"] = op
    lo, hi = percentile_ci(macro_boot)
    out["macro_auc"] = {"auc": macro(aucs), "ci_low": lo, "ci_high": hi}
    m, mlo, mhi = _micro_auc_ci(y, p, groups, min(n_boot, 200), seed)
    out["micro_auc"] = {"auc": m, "ci_low": mlo, "ci_high": mhi, "n_boot": min(n_boot, 200)}
    return out


def evaluate_multiclass(test: pd.DataFrame, labels: list[str], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy (with CI), confusion matrix, per-class precision/recall (with CIs), F1, one-vs-rest AUC
    (with CIs), macro AUC (with CI) and top-label calibration."""
    y, p, groups = split_prediction_table(test, labels)
    true, pred = y.argmax(1), p.argmax(1)
    k = len(labels)
    cm = confusion_matrix(true, pred, labels=list(range(k)))
    prec, rec, f1, support = precision_recall_fscore_support(true, pred, labels=list(range(k)), zero_division=0)
    rng = np.random.default_rng(seed)
    w = bootstrap_weights(len(true), n_boot, rng, groups)
    acc_boot = (w * (true == pred)).sum(1) / w.sum(1)
    lo, hi = percentile_ci(acc_boot)
    cis = multiclass_class_cis(true, pred, k, n_boot, np.random.default_rng(seed + 3), groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aucs = per_label_auc(y, p, labels)
        boot = bootstrap_aucs(y, p, n_boot=n_boot, seed=seed, groups=groups)
        macro_boot = np.nanmean(boot, axis=1)
    auc_cis = [percentile_ci(boot[:, i]) for i in range(k)]
    ece, curve = top_label_calibration(y, p)
    row_sums = np.maximum(cm.sum(1, keepdims=True), 1)
    per_class = {}
    for i, lab in enumerate(labels):
        per_class[lab] = {
            "precision": float(prec[i]), "precision_ci": [float(v) for v in cis["precision"][i]],
            "recall": float(rec[i]), "recall_ci": [float(v) for v in cis["recall"][i]],
            "fpr": float(cis["fpr"][i]), "f1": float(f1[i]), "support": int(support[i]),
            "average_precision": float(average_precision_score(y[:, i], p[:, i])) if 0 < support[i] < len(y)
            else float("nan"),
            "auc": aucs[lab], "auc_ci": [float(v) for v in auc_cis[i]]}
    mlo, mhi = percentile_ci(macro_boot)
    return {
        "n": int(len(test)), "n_boot": n_boot, "resampling": "patients" if groups is not None else "images",
        "accuracy": {"value": float(np.mean(true == pred)), "ci_low": lo, "ci_high": hi},
        "confusion_matrix": cm.tolist(), "confusion_normalised": (cm / row_sums).tolist(), "labels": labels,
        "per_class": per_class, "macro_f1": float(np.mean(f1)),
        "macro_auc": {"auc": macro(aucs), "ci_low": mlo, "ci_high": mhi},
        "calibration": {"kind": "top-label", "ece": ece, "bins": 10, "curve": curve},
    }


def calibration_of(test: pd.DataFrame, labels: list[str], task: str, method: str = "none",
                   summary: str = "") -> CalibrationEffect:
    """Calibration of the test table before (``raw_<label>``) and after (``prob_<label>``) the run's fitted
    calibration; a table without ``raw_`` columns (no calibration, older runs) has before = after."""
    y, p, _ = split_prediction_table(test, labels)
    has_raw = all(c in test.columns for c in raw_columns(labels))
    raw = test[raw_columns(labels)].to_numpy(dtype=float) if has_raw else p
    return CalibrationEffect.from_dict(calibration_effect(y, raw, p, labels, task, method if has_raw else "none",
                                                          summary if has_raw else ""))


def evaluation_of(test: pd.DataFrame, labels: list[str], task: str, val: pd.DataFrame | None = None,
                  n_boot: int = 1000, seed: int = 0, rules: Rules = None, prevalence: dict[str, float] | None = None,
                  calibration: tuple[str, str] = ("none", "")) -> Evaluation:
    """The :class:`~cxrlab.evaluate.records.Evaluation` of a task from its prediction tables; write it with
    ``to_dict()``.

    Every multi-label and binary label gets its operating point at the threshold ``rules`` chose on
    validation (and PPV/NPV at ``prevalence``); ``calibration``: (method, summary) of the run's fitted
    calibration, for the before/after record (:func:`calibration_of`).  A test table of several
    sources (``data.sources``) also gets each source's AUCs with CIs (:func:`per_source_aucs`).
    """
    if task == "multiclass":
        raw = evaluate_multiclass(test, labels, n_boot, seed)
    else:
        raw = evaluate_multilabel(test, labels, val, n_boot, seed, operating=True, rules=rules, prevalence=prevalence)
        raw["per_source"] = per_source_aucs(test, labels, n_boot, seed)
    return fresh(Evaluation, {**raw, "task": task},
                 calibration_effect=calibration_of(test, labels, task, *calibration))


def evaluate_tables(test: pd.DataFrame, labels: list[str], task: str, val: pd.DataFrame | None = None,
                    n_boot: int = 1000, seed: int = 0, **options: Any) -> dict[str, Any]:
    """:func:`evaluation_of` as the dict ``evaluation.json`` holds (for readers of dicts)."""
    return evaluation_of(test, labels, task, val, n_boot, seed, **options).to_dict()
