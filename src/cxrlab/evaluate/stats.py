"""Statistics for AUCs: weighted (bootstrap) AUC, CIs, DeLong test, paired comparisons.

Bootstrap resamples are expressed as multinomial *weights* over the samples
(or over patients, spread to their images), so one sort per label serves all
resamples and the AUC of every resample is a few vectorised cumulative sums:
14 labels x 25,596 predictions x 1,000 resamples take seconds, not minutes.

References: DeLong, DeLong & Clarke-Pearson (Biometrics 1988); the fast
midrank algorithm of Sun & Xu (IEEE SPL 2014).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def _sorted_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, and for each sorted position the start/end of its tie group."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), counts)
    return order, start[group], (start + counts)[group]


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under sample weights, for many weight vectors at once.

    Args:
        y: (N,) 0/1 labels.
        score: (N,) scores.
        weights: (B, N) non-negative weights (e.g. bootstrap counts).

    Returns:
        (B,) AUCs (ties count one half); NaN where a class has zero weight.
    """
    order, gstart, gend = _sorted_groups(score)
    pos = y[order].astype(bool)
    w = weights[:, order]
    wneg = np.where(pos, 0.0, w)
    cum = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(wneg, axis=1)], axis=1)
    below = cum[:, gstart]
    equal = cum[:, gend] - below
    wpos = np.where(pos, w, 0.0)
    num = np.sum(wpos * (below + 0.5 * equal), axis=1)
    den = wpos.sum(axis=1) * wneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n) resampling counts; with ``groups``, whole groups (patients) are resampled."""
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float32)
    _, inv = np.unique(groups, return_inverse=True)
    g = inv.max() + 1
    gw = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(np.float32)
    return gw[:, inv]


def bootstrap_aucs(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   groups: np.ndarray | None = None, chunk: int = 100) -> np.ndarray:
    """Bootstrap AUC matrix (n_boot, L); NaN targets are left out per label."""
    rng = np.random.default_rng(seed)
    n, n_labels = y.shape
    out = np.full((n_boot, n_labels), np.nan)
    for b0 in range(0, n_boot, chunk):
        w = bootstrap_weights(n, min(chunk, n_boot - b0), rng, groups)
        for j in range(n_labels):
            keep = ~np.isnan(y[:, j])
            out[b0:b0 + w.shape[0], j] = weighted_auc(y[keep, j], score[keep, j], w[:, keep])
    return out


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [a, 1 - a])
    return float(lo), float(hi)


# ---- DeLong ------------------------------------------------------------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based; ties share their mean rank), along the last axis."""
    return np.apply_along_axis(lambda v: sps.rankdata(v, method="average"), -1, x)


def delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong structural components for K correlated scores.

    Args:
        y: (N,) 0/1 labels.
        scores: (K, N) scores of K models on the same samples.

    Returns:
        (aucs (K,), V10 (K, m) over positives, V01 (K, n) over negatives).
    """
    pos, neg = y == 1, y == 0
    x, z = scores[:, pos], scores[:, neg]
    m, n = x.shape[1], z.shape[1]
    tx, tz = _midrank(x), _midrank(z)
    tall = _midrank(np.concatenate([x, z], axis=1))
    aucs = (tall[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tall[:, :m] - tx) / n
    v01 = 1.0 - (tall[:, m:] - tz) / m
    return aucs, v10, v01


def delong_cov(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (K,) and their DeLong covariance matrix (K, K)."""
    aucs, v10, v01 = delong_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """Two-sided DeLong test of AUC(a) == AUC(b) on the same samples."""
    keep = ~np.isnan(y)
    y = y[keep]
    if len(np.unique(y)) < 2:
        return {"auc_a": np.nan, "auc_b": np.nan, "diff": np.nan, "se": np.nan, "z": np.nan, "p": np.nan}
    aucs, cov = delong_cov(y, np.vstack([score_a[keep], score_b[keep]]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (np.inf * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = 2 * sps.norm.sf(abs(z))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(diff),
            "se": float(np.sqrt(max(var, 0))), "z": float(z), "p": float(p)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN kept as NaN)."""
    p = np.asarray(pvalues, float)
    ok = np.flatnonzero(np.isfinite(p))
    adj = np.full_like(p, np.nan)
    order = ok[np.argsort(p[ok])]
    k = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test of two classifiers' accuracy on the same cases.

    Only the discordant pairs count: ``a_only`` (a right, b wrong) and ``b_only``;
    under equal accuracy each discordant pair is a fair coin, so p is the two-sided
    binomial tail of ``a_only`` in ``a_only + b_only`` (1 when there are none).

    Returns:
        ``accuracy_a``, ``accuracy_b``, ``diff`` (a - b), ``a_only``, ``b_only``, ``n``, ``p``.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired decisions differ in length: {a.shape} vs {b.shape}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = len(a)
    p = float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0
    acc_a, acc_b = (float(a.mean()), float(b.mean())) if n else (float("nan"), float("nan"))
    return {"accuracy_a": acc_a, "accuracy_b": acc_b, "diff": acc_a - acc_b, "a_only": a_only,
            "b_only": b_only, "n": n, "p": p}


def macro_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Macro AUC of one score matrix on all its samples (labels with one class left out; NaN targets too)."""
    aucs = [weighted_auc(y[keep, j], score[keep, j], np.ones((1, int(keep.sum()))))[0]
            for j in range(y.shape[1]) for keep in [~np.isnan(y[:, j])]]
    finite = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(finite)) if finite else float("nan")


def paired_bootstrap_macro(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n_boot: int = 1000,
                           seed: int = 0, groups: np.ndarray | None = None) -> dict[str, float]:
    """Macro-AUC difference (a - b): the observed difference with a paired bootstrap CI and p-value.

    The estimate is the difference on the test set itself (``diff``), not the mean of the
    resamples (``boot_mean``): the bootstrap gives the interval around it, and its mean
    drifts from the observed value by the resampling bias (on 83 images, -0.1590 vs -0.1617).
    ``diff_mean`` is kept as a name for readers of older results and holds ``diff``.

    The p-value is twice the share of resamples on the far side of zero; its
    resolution is ``1 / B`` (B finite resamples).  When no resample crosses zero
    the estimate is 0, which only says ``p < 1/B``: ``p_resolution`` is stored
    with it and :func:`format_p` prints it that way (never "p = 0").

    Returns:
        ``diff`` (observed), ``diff_mean`` (= ``diff``), ``boot_mean``, ``ci_low``, ``ci_high``
        (95% percentile interval), ``p``, ``p_resolution`` (1/B) and ``n_boot`` (B).
    """
    observed = macro_auc(y, score_a) - macro_auc(y, score_b)
    ba = bootstrap_aucs(y, score_a, n_boot, seed, groups)
    bb = bootstrap_aucs(y, score_b, n_boot, seed, groups)  # same seed: same resamples
    d = np.nanmean(ba, axis=1) - np.nanmean(bb, axis=1)
    d = d[np.isfinite(d)]
    lo, hi = percentile_ci(d)
    n = len(d)
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if n else float("nan")
    return {"diff": observed, "diff_mean": observed, "boot_mean": float(np.mean(d)) if n else float("nan"),
            "ci_low": lo, "ci_high": hi, "p": float(p), "p_resolution": 1.0 / n if n else float("nan"),
            "n_boot": n}


def format_p(p: float | None, resolution: float | None = None) -> str:
    """A p-value as text: ``p < 0.001`` below a resampling test's resolution ``1/B``, else ``p = 0.0123``.

    Args:
        p: the p-value (NaN or None gives ``p = n/a``).
        resolution: the smallest positive p the test can give (``1/B`` for B resamples), if any.
    """
    if p is None or p != p:
        return "p = n/a"
    if resolution is not None and resolution == resolution and p < resolution:
        return f"p < {resolution:.3g} (1/{round(1 / resolution)})"
    if p == 0:  # a normal tail below the smallest double (or a zero-variance test)
        return "p < 1e-300"
    return f"p = {p:.3g}"
