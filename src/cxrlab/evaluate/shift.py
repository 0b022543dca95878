"""External validation's tables: prevalence and composition shift, transported and recalibrated results.

Arrays in, dicts out (no model, no files; :mod:`cxrlab.workflows.external` feeds it).  Why each part:

- **transported**: the run as it would be deployed at the other site: its probabilities and its
  own validation-chosen thresholds, AUC with patient-bootstrap CIs and the rates at the threshold;
- **prevalence / predicted-positive rate**: a threshold chosen at one site gives another share of
  positives elsewhere (torchxrayvision #175: 1.3-4.8x too many at 0.5), and PPV follows prevalence;
- **composition**: view, sex, age and the share the run's OOD check flags, so a drop can be traced
  to who and what was imaged;
- **recalibrated**: thresholds (by the run's own rule, Youden's J) and Platt scaling fitted on a
  patient-disjoint slice of the target, scored on the rest beside the transported ones on that same rest.
  Honest only because the slice is never scored; AUC cannot change, PPV and the positive rate do.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from cxrlab.evaluate.calibration import fit_platt, logit, sigmoid
from cxrlab.evaluate.evaluate import expected_calibration_error, youden_threshold
from cxrlab.evaluate.operating import operating_point
from cxrlab.evaluate.stats import bootstrap_aucs, percentile_ci, weighted_auc

#: Age bin edges of the composition table (years): the subgroup analysis's default (``cxrlab subgroups
#: --age-bins``), so one page bins ages one way in its composition and its subgroups.
AGE_BINS: tuple[float, ...] = (0.0, 40.0, 60.0, 80.0, 120.0)


def age_bin(age: Any, edges: tuple[float, ...] | list[float] = AGE_BINS) -> str:
    """``"40-59"`` for [40, 60) (the subgroup analysis's names), ``"120+"`` at or past the last edge (a
    composition table counts every image), ``"unknown"`` for a missing or non-numeric age."""
    try:
        a = float(age)
    except (TypeError, ValueError):
        return "unknown"
    if not np.isfinite(a):
        return "unknown"
    edges = [float(e) for e in edges]
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo <= a < hi:
            return f"{int(lo)}-{int(hi) - 1}" if lo.is_integer() and hi.is_integer() else f"[{lo:g}, {hi:g})"
    return f"{edges[-1]:g}+" if a >= edges[-1] else f"<{edges[0]:g}"


def shares(values: Any) -> dict[str, float]:
    """Share of each category (text; empty or missing is ``unknown``), largest first."""
    v = ["unknown" if x is None or (isinstance(x, float) and np.isnan(x)) or str(x) == "" else str(x)
         for x in values]
    if not v:
        return {}
    cats, counts = np.unique(v, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(cats[i]): float(counts[i] / len(v)) for i in order}


def composition(run: Mapping[str, Any], target: Mapping[str, Any],
                age_bins: tuple[float, ...] | list[float] = AGE_BINS) -> dict[str, dict[str, list[float]]]:
    """``{factor: {category: [run share, target share]}}`` for the factors both sides give.

    Args:
        run, target: factor name -> one value per image (``view``, ``sex``, ``age`` -> binned).
        age_bins: the age bin edges (the subgroup analysis's, so both tables of a page name the same bins).
    """
    out: dict[str, dict[str, list[float]]] = {}
    for factor in run:
        if factor not in target:
            continue
        a, b = run[factor], target[factor]
        if factor == "age":
            a, b = [age_bin(x, age_bins) for x in a], [age_bin(x, age_bins) for x in b]
        sa, sb = shares(a), shares(b)
        cats = list(dict.fromkeys([*sa, *sb]))
        out[factor] = {c: [sa.get(c, 0.0), sb.get(c, 0.0)] for c in cats}
    return out


def prevalence(y: np.ndarray) -> float:
    """Share of positives among the labelled entries (NaN: not labelled)."""
    keep = ~np.isnan(y)
    return float(np.mean(y[keep] == 1)) if keep.any() else float("nan")


def positive_rate(p: np.ndarray, threshold: float) -> float:
    """Share of images decided positive at ``threshold``."""
    return float(np.mean(p >= threshold)) if len(p) else float("nan")


def auc_with_ci(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_boot: int,
                seed: int) -> dict[str, Any]:
    """AUC with its patient-bootstrap 95% CI (``{"value", "ci_low", "ci_high", "n_boot"}``)."""
    point = _auc(y, p)
    if not np.isfinite(point):
        return {"value": point, "ci_low": float("nan"), "ci_high": float("nan"), "n_boot": n_boot}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = bootstrap_aucs(y[:, None], p[:, None], n_boot, seed, groups)[:, 0]
    lo, hi = percentile_ci(boot)
    return {"value": point, "ci_low": lo, "ci_high": hi, "n_boot": n_boot}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    keep = ~np.isnan(y)
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    return float(weighted_auc(y[keep], p[keep], np.ones((1, int(keep.sum()))))[0])


def macro_with_ci(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, n_boot: int,
                  seed: int) -> dict[str, Any]:
    """Macro AUC over the columns with both classes, with its patient-bootstrap 95% CI."""
    points = [_auc(y[:, j], p[:, j]) for j in range(y.shape[1])]
    cols = [j for j, v in enumerate(points) if np.isfinite(v)]
    if not cols:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_boot": n_boot}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(bootstrap_aucs(y[:, cols], p[:, cols], n_boot, seed, groups), axis=1)
    lo, hi = percentile_ci(boot)
    return {"value": float(np.mean([points[j] for j in cols])), "ci_low": lo, "ci_high": hi, "n_boot": n_boot}


def patient_slice(groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A boolean mask of the images of about ``fraction`` of the patients (at least one patient,
    never all of them): the slice recalibration is fitted on and never scored on."""
    patients = np.unique(groups)
    k = int(round(fraction * len(patients)))
    k = min(max(k, 1), len(patients) - 1) if len(patients) > 1 else 0
    chosen = np.random.default_rng([seed, 18]).choice(patients, size=k, replace=False) if k else []
    return np.isin(groups, chosen)


def transported(y: np.ndarray, p: np.ndarray, threshold: float, groups: np.ndarray | None,
                n_boot: int, seed: int) -> dict[str, Any]:
    """One label at the run's threshold: AUC with CI, the operating point, prevalence and positive rate."""
    return {"n": int((~np.isnan(y)).sum()), "positives": int(np.nansum(y == 1)),
            "prevalence": prevalence(y), "predicted_positive": positive_rate(p[~np.isnan(y)], threshold),
            "auc": auc_with_ci(y, p, groups, n_boot, seed),
            "operating_point": operating_point(y, p, threshold, n_boot, np.random.default_rng([seed, 1]), groups)}


def recalibrated(y: np.ndarray, p: np.ndarray, threshold: float, groups: np.ndarray, fit: np.ndarray,
                 n_boot: int, seed: int) -> dict[str, Any]:
    """Thresholds refitted (Youden's J) and Platt scaling fitted on the ``fit`` slice, scored on the rest.

    Returns:
        ``fit_threshold`` (NaN when the slice lacks a class: then the run's is kept and said so),
        ``fit_images``, ``fit_positives``, and for the held-out rest: ``n``, ``prevalence``, ``auc``
        (with CI), ``transported`` and ``recalibrated`` operating points with their
        ``predicted_positive`` rates, and ``platt``: ``a``, ``b`` and the rest's ECE and mean probability
        before and after (AUC is unchanged by a monotone map).
    """
    rest = ~fit
    new = youden_threshold(y[fit], p[fit])
    kept = not np.isfinite(new)
    thr = threshold if kept else new
    yr, pr, gr = y[rest], p[rest], groups[rest]
    labelled = ~np.isnan(yr)
    rng = [seed, 2]
    return {"fit_images": int(fit.sum()), "fit_positives": int(np.nansum(y[fit] == 1)),
            "fit_threshold": float(new), "kept_run_threshold": kept, "n": int(labelled.sum()),
            "prevalence": prevalence(yr), "auc": auc_with_ci(yr, pr, gr, n_boot, seed),
            "transported": {"threshold": float(threshold), "predicted_positive": positive_rate(pr[labelled], threshold),
                            "operating_point": operating_point(yr, pr, threshold, n_boot,
                                                               np.random.default_rng(rng), gr)},
            "recalibrated": {"threshold": float(thr), "predicted_positive": positive_rate(pr[labelled], thr),
                             "operating_point": operating_point(yr, pr, thr, n_boot, np.random.default_rng(rng), gr)},
            "platt": _platt(y[fit], p[fit], yr, pr)}


def _platt(y_fit: np.ndarray, p_fit: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    a, b = fit_platt(y_fit.astype(np.float64), p_fit.astype(np.float64))
    if not np.isfinite(a):  # a separable slice: no estimate of calibration; keep the probabilities
        a, b = 1.0, 0.0
    cal = sigmoid(a * logit(p) + b)
    keep = ~np.isnan(y)
    return {"a": a, "b": b, "ece_transported": expected_calibration_error(y, p)[0],
            "ece_recalibrated": expected_calibration_error(y, cal)[0],
            "mean_probability_transported": float(np.mean(p[keep])) if keep.any() else float("nan"),
            "mean_probability_recalibrated": float(np.mean(cal[keep])) if keep.any() else float("nan")}
