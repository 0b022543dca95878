"""Out-of-distribution scores: a Gaussian of penultimate features and the Mahalanobis distance.

Arrays in, dicts out (no model, no files).  :func:`fit_ood` fits the training
images' features with a shrunk covariance (Ledoit-Wolf) and keeps a compact
summary: the mean, the ``k`` leading principal axes of that covariance with
their variances, and one variance for the rest of the spectrum (exact when
``k`` covers the features; a probabilistic-PCA style approximation otherwise).
The flag threshold comes from the validation images' scores by a rule that
accounts for their number ``n`` (:func:`threshold_rule`): the conformal rank
``k = ceil((n + 1) p)`` for the ``p`` = 99th percentile, so that a new
in-distribution image is flagged with probability at most ``(n + 1 - k) / (n + 1)``
(<= 1% once ``n >= 99``).  With fewer images no rank reaches 1% and the threshold
is the largest score (flag rate ``1 / (n + 1)``).  A plain percentile of 47
scores is about their maximum and says nothing about how far the true
percentile may lie beyond it; the summary therefore also states a one-sided 95%
upper confidence bound of the percentile (an order statistic, binomial), or
that ``n`` is too small for one, and warns below :data:`MIN_VAL` images.

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

#: Fewer validation images than this: the threshold is uncertain, ood.json says so (``small_validation``).
MIN_VAL = 200

#: Confidence of the upper bound on the validation percentile.
CONFIDENCE = 0.95


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


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def threshold_rule(scores: np.ndarray, percentile: float = 99.0, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The flag threshold of ``n`` validation scores, with what ``n`` allows one to say about it.

    Args:
        scores: Mahalanobis distances of validation (in-distribution) images.
        percentile: nominal share of in-distribution images kept, in percent (99 flags about 1%).
        confidence: level of the one-sided upper bound on that percentile.

    Returns:
        ``threshold`` (the ``k``-th smallest score, ``k = ceil((n + 1) p)`` capped at ``n``),
        ``threshold_rank``, ``threshold_rule`` (in words), ``expected_flag_rate``
        (``(n + 1 - k) / (n + 1)``: the chance that a new in-distribution image is flagged, for
        exchangeable scores), ``percentile_estimate`` (the plain percentile, interpolated),
        ``percentile_upper`` (the smallest order statistic that lies above the true percentile
        with probability >= ``confidence``; ``None`` when even the maximum does not) and
        ``max_covers_percentile`` (``1 - p ** n``, that probability for the maximum).
    """
    from scipy.stats import binom

    s = np.sort(np.asarray(scores, dtype=np.float64))
    n, p = len(s), percentile / 100.0
    k = int(np.ceil((n + 1) * p - 1e-9))
    if k <= n:
        rule = (f"conformal: the {_ordinal(k)} smallest of {n} validation scores (k = ceil((n + 1) x {p:g})), "
                f"so at most {1 - p:.0%} of in-distribution images are flagged")
    else:
        k = n
        need = int(np.ceil(p / (1 - p) - 1e-9))
        rule = (f"the largest of {n} validation scores: fewer than {need} cannot bound the flag rate at "
                f"{1 - p:.0%}; about {1 / (n + 1):.1%} of in-distribution images are flagged")
    j = int(binom.ppf(confidence, n, p))  # smallest j with P(Binomial(n, p) <= j) >= confidence
    return {
        "threshold": float(s[k - 1]), "threshold_rank": k, "threshold_rule": rule,
        "expected_flag_rate": (n + 1 - k) / (n + 1),
        "percentile_estimate": float(np.percentile(s, percentile)),
        "percentile_upper": float(s[j]) if j < n else None, "percentile_upper_confidence": confidence,
        "max_covers_percentile": float(1 - p**n),
    }


def fit_ood(train: np.ndarray, val: np.ndarray, percentile: float = 99.0,
            max_components: int = MAX_COMPONENTS) -> dict[str, Any]:
    """The summary of :func:`fit_gaussian` plus the threshold of :func:`threshold_rule` on validation.

    Args:
        train: penultimate features (N, D) of training images.
        val: features (M, D) of validation images (never the test split).
        percentile: images scoring above this percentile of validation are flagged.

    Returns:
        A JSON-ready dict: the Gaussian, the fields of :func:`threshold_rule`, ``percentile``,
        ``n_val``, ``small_validation`` (``n_val`` < :data:`MIN_VAL`), ``warnings`` (sentences for
        a log, a card or a page) and the validation and training flag rates.
    """
    if not 50.0 <= percentile < 100.0:
        raise CxrlabError(f"OOD: percentile must be in [50, 100), got {percentile}")
    summary = fit_gaussian(train, max_components)
    v = _check(val, "validation", 1)
    val_scores = mahalanobis(v, summary)
    rule = threshold_rule(val_scores, percentile)
    threshold = rule["threshold"]
    train_scores = mahalanobis(np.asarray(train, dtype=np.float64), summary)
    n = int(len(v))
    warnings = []
    if n < MIN_VAL:
        bound = ("" if rule["percentile_upper"] is None else
                 f"; the true {percentile:g}th percentile may lie up to {rule['percentile_upper']:.3g} "
                 f"(95% bound) vs the threshold {threshold:.3g}")
        warnings.append(f"only {n} validation images (fewer than {MIN_VAL}): the OOD threshold is uncertain "
                        f"(about {rule['expected_flag_rate']:.1%} of in-distribution images flagged{bound})")
    summary.update({
        **rule, "percentile": float(percentile), "n_val": n, "small_validation": n < MIN_VAL,
        "warnings": warnings,
        "val_flag_rate": float(np.mean(val_scores > threshold)),
        "train_flag_rate": float(np.mean(train_scores > threshold)),
        "val_score_median": float(np.median(val_scores)),
    })
    return summary


def flags(scores: np.ndarray, summary: dict[str, Any]) -> np.ndarray:
    """True where a score lies beyond the summary's threshold."""
    return np.asarray(scores) > float(summary["threshold"])


def describe(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its arrays (for a model card, a log line or an API answer), with ``note``:
    the sentence of :func:`reliability_note` (``None`` when nothing speaks against the check)."""
    out = {k: v for k, v in summary.items() if k not in ("mean", "axes", "variances")}
    out["note"] = reliability_note(summary)
    return out


def reliability_note(summary: dict[str, Any] | None) -> str | None:
    """One sentence on why the OOD flag is not to be trusted for this run, or ``None`` when nothing is
    known against it (no summary, or a summary from before the self-test existed, gives ``None``)."""
    if not summary:
        return None
    parts = []
    if summary.get("reliable") is False:
        missed = [name for name, p in (summary.get("self_test") or {}).get("probes", {}).items() if not p["flagged"]]
        parts.append(f"the OOD check is unreliable for this run: {' and '.join(missed) or 'a probe'} "
                     "passed as in range in the self-test")
    if summary.get("small_validation"):
        parts.append(f"its threshold comes from only {summary.get('n_val')} validation images")
    return "; ".join(parts) if parts else None
