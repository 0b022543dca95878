"""Test AUCs per source of a run over several sources (``data.sources``), with patient-bootstrap CIs.

Why: a merged test split's overall AUC can hide a source the model fails on (Zech et al. 2018:
a model that recognises the hospital), and a point AUC per source does not say whether two
sources differ or one just has few images.  Each source is resampled by its own patients, so
its CI is as wide as its own test images allow.

A label a source does not have (every test image of that source unlabelled for it: NaN, as the
merge leaves it) is listed in ``absent``, never scored and never a number; a label it has whose
test images hold one class only gets an undefined AUC (NaN).  The source's macro AUC averages
the labels it can score (both classes present), per resample as the run's own macro AUC does.

Arrays in, a dict out (``evaluation.json["per_source"]``); no files, no model.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.evaluate.stats import bootstrap_aucs, percentile_ci, weighted_auc
from cxrlab.tables import prob_columns

#: The predictions-table column naming each image's source (a merged manifest's ``source``).
SOURCE = "source"


def has_sources(test: pd.DataFrame) -> bool:
    """The table holds images of two or more sources (a ``data.sources`` run)."""
    return SOURCE in test.columns and test[SOURCE].nunique(dropna=True) >= 2


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    keep = ~np.isnan(y)
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    return float(weighted_auc(y[keep], p[keep], np.ones((1, int(keep.sum()))))[0])


def source_aucs(y: np.ndarray, p: np.ndarray, labels: list[str], groups: np.ndarray | None, n_boot: int,
                seed: int) -> dict[str, Any]:
    """One source's AUC per label and macro AUC with 95% CIs from one patient bootstrap.

    Args:
        y, p: (N, L) targets (NaN: unlabelled) and probabilities of this source's test images.
        groups: (N,) patient ids (resampled as units), or None to resample images.

    Returns:
        ``{"n", "patients", "n_boot", "per_label": {label: {"auc", "ci_low", "ci_high", "positives"}},
        "absent": [labels], "macro_auc": {"auc", "ci_low", "ci_high"}}``.
    """
    nan = float("nan")
    has = [j for j in range(len(labels)) if (~np.isnan(y[:, j])).any()]
    points = {j: _auc(y[:, j], p[:, j]) for j in has}
    scorable = [j for j in has if np.isfinite(points[j])]
    boot = np.full((n_boot, len(labels)), nan)
    if scorable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot[:, scorable] = bootstrap_aucs(y[:, scorable], p[:, scorable], n_boot, seed, groups)
    per_label = {}
    for j in has:
        lo, hi = percentile_ci(boot[:, j]) if j in scorable else (nan, nan)
        per_label[labels[j]] = {"auc": points[j], "ci_low": lo, "ci_high": hi,
                                "positives": int(np.nansum(y[:, j] == 1))}
    if scorable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = percentile_ci(np.nanmean(boot[:, scorable], axis=1))
        macro = {"auc": float(np.mean([points[j] for j in scorable])), "ci_low": lo, "ci_high": hi}
    else:
        macro = {"auc": nan, "ci_low": nan, "ci_high": nan}
    return {"n": int(len(y)), "patients": int(len(np.unique(groups))) if groups is not None else None,
            "n_boot": n_boot, "per_label": per_label,
            "absent": [lab for j, lab in enumerate(labels) if j not in has], "macro_auc": macro}


def per_source_aucs(test: pd.DataFrame, labels: list[str], n_boot: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{source: source_aucs(...)}`` for each source of the test table, in the table's order ({} for one source)."""
    if not has_sources(test):
        return {}
    out = {}
    for k, (name, frame) in enumerate(test.groupby(SOURCE, sort=False)):
        y = frame[labels].to_numpy(dtype=float)
        p = frame[prob_columns(labels)].to_numpy(dtype=float)
        groups = frame["patient"].astype(str).to_numpy() if "patient" in frame else None
        out[str(name)] = source_aucs(y, p, labels, groups, n_boot, seed + 1009 * (k + 1))
    return out
