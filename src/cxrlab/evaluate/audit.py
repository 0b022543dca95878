"""Per-image audit values (from :mod:`cxrlab.explain.audit`) -> means with patient-bootstrap 95% CIs.

Arrays in, :class:`~cxrlab.evaluate.records.Estimate` out.  The bootstrap resamples *patients*
(their images go together, as in the AUC CIs), so several films of one patient do not narrow the
interval.  NaN values (a map without energy) are left out of every mean.
"""

from __future__ import annotations

import numpy as np

from cxrlab.evaluate.records import Estimate
from cxrlab.evaluate.stats import bootstrap_weights, percentile_ci

NAN = float("nan")


def _clean(values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    v = np.asarray(values, np.float64)
    keep = np.isfinite(v)
    return v[keep], (None if groups is None else np.asarray(groups)[keep])


def mean_ci(values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """The mean of ``values`` with a percentile 95% CI over ``n_boot`` patient resamples (``groups``)."""
    v, g = _clean(values, groups)
    if len(v) == 0:
        return Estimate(NAN, n_boot=n_boot)
    if len(v) == 1 or n_boot <= 0:
        return Estimate(float(v.mean()), n_boot=n_boot)
    w = bootstrap_weights(len(v), n_boot, np.random.default_rng(seed), g).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (w @ v) / w.sum(1)
    lo, hi = percentile_ci(boot)
    return Estimate(float(v.mean()), lo, hi, n_boot)


def difference_ci(a: np.ndarray, b: np.ndarray, groups_a: np.ndarray | None = None,
                  groups_b: np.ndarray | None = None, paired: bool = False, n_boot: int = 1000,
                  seed: int = 0) -> tuple[Estimate, float]:
    """mean(a) - mean(b) with a bootstrap 95% CI and a two-sided bootstrap p-value.

    ``paired``: ``a`` and ``b`` are two models on the same images (row k of each is one image, ``groups_a``
    its patients): one resample serves both.  Otherwise the two samples are resampled independently
    (two models on different test sets, e.g. a clean and a shortcut phantom).
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired:
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        g = None if groups_a is None else np.asarray(groups_a)[keep]
        if len(a) == 0:
            return Estimate(NAN, n_boot=n_boot), NAN
        w = bootstrap_weights(len(a), n_boot, rng, g).astype(np.float64)
        d = (w @ (a - b)) / w.sum(1)
    else:
        a, ga = _clean(a, groups_a)
        b, gb = _clean(b, groups_b)
        if len(a) == 0 or len(b) == 0:
            return Estimate(NAN, n_boot=n_boot), NAN
        wa = bootstrap_weights(len(a), n_boot, rng, ga).astype(np.float64)
        wb = bootstrap_weights(len(b), n_boot, rng, gb).astype(np.float64)
        d = (wa @ a) / wa.sum(1) - (wb @ b) / wb.sum(1)
    observed = float(a.mean() - b.mean())
    lo, hi = percentile_ci(d)
    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    return Estimate(observed, lo, hi, n_boot), p
