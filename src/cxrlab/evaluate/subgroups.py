"""Subgroup analysis: per patient group, performance at one operating point, with patient-bootstrap CIs.

Arrays in, a :class:`~cxrlab.evaluate.records.SubgroupResult` out.  What is reported follows the
fairness audits of CXR models (Seyyed-Kalantari et al., "CheXclusion", PSB 2021: TPR gaps to the
median group; Glocker et al. 2022: per-group AUC/TPR/FPR at a global threshold with bootstrap CIs;
MEDFAIR, ICLR 2023: worst-group AUC): per group of each attribute and of each two-way
intersection, the images, patients, prevalence, AUC, and TPR/FPR/PPV at the run's threshold,
chosen on validation and **the same for every group** (never re-tuned per group, which would hide
a gap in the operating point), and each group's gap to the rest of the patients and to the median
group.

Why it is fast (a 25,596 x 14 test set, 4 attributes and their 6 intersections, 1,000 resamples
in seconds): every metric here is a function of the weighted counts of positives and negatives
per (group, score bin).  A resample is a weight per *patient* (multinomial: whole patients are
resampled), so the counts of all groups of all groupings for a chunk of resamples are one sparse
product ``patient weights @ (patients x (group, bin, class))``; AUCs are then cumulative sums over
the bins, the rest of the patients is "all minus the group", and the rates at the threshold are
sums over the bins above it (the threshold is a bin edge, so they are exact).  Scores are binned
into at most :data:`SCORE_BINS` quantile bins; with fewer distinct scores than that every score has
its own bin and the resampled AUCs are exact; above it, the pairs sharing a bin count one half (as
ties do), which moves an AUC by at most ``0.5 / bins`` and is corrected by the offset between the
exact and the binned AUC of the test set itself.  The point estimates are always exact.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import (
    GAP_METRICS,
    SUBGROUP_METRICS,
    Estimate,
    GroupGap,
    Grouping,
    GroupLabel,
    Subgroup,
    SubgroupResult,
)
from cxrlab.evaluate.stats import percentile_ci

#: Most score bins per label in the resamples (fewer distinct scores: one bin each, exact).
SCORE_BINS = 256

#: Fewer positives or negatives than this in a group: flagged, not ranked.
MIN_COUNT = 30

#: The value of a missing attribute (blank sex, unknown age, no view).
UNKNOWN = "unknown"

#: AUCs closer than this are tied: the pages write 3 places, and a "worst" group whose AUC or gap
#: to the rest prints as the others' (``+0.000``, p = 1) is not worse.
TIE = 5e-4


def age_groups(ages: np.ndarray, edges: list[float], origin: str = "age") -> np.ndarray:
    """Ages as bin names (``40-59`` for the bin [40, 60)); a missing age is :data:`UNKNOWN`.

    Args:
        ages: (N,) ages in years (NaN or blank: unknown).
        edges: increasing bin edges, e.g. ``[0, 40, 60, 80, 120]``: bins [0, 40), ..., [80, 120).
        origin: named in the error.

    Raises:
        CxrlabError: edges not increasing, or ages outside them (one line, with the range found).
    """
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise CxrlabError(f"--age-bins must be at least two increasing edges, got {','.join(map(_edge, edges))}")
    a = np.asarray(ages, dtype=float)
    known = np.isfinite(a)
    outside = known & ((a < edges[0]) | (a >= edges[-1]))
    if outside.any():
        raise CxrlabError(f"{origin}: age bins {edges[0]:g}..{edges[-1]:g} do not cover {int(outside.sum())} "
                          f"images (ages {np.nanmin(a[outside]):g} to {np.nanmax(a[outside]):g}; the data spans "
                          f"{np.nanmin(a[known]):g} to {np.nanmax(a[known]):g}); widen --age-bins")
    names = np.array([_bin_name(lo, hi) for lo, hi in itertools.pairwise(edges)] + [UNKNOWN], dtype=object)
    idx = np.where(known, np.searchsorted(edges, np.where(known, a, edges[0]), side="right") - 1, len(edges) - 1)
    return names[idx]


def _edge(v: float) -> str:
    return f"{v:g}"


def _bin_name(lo: float, hi: float) -> str:
    if float(lo).is_integer() and float(hi).is_integer():
        return f"{int(lo)}-{int(hi) - 1}"
    return f"[{lo:g}, {hi:g})"


def as_groups(values: Any) -> np.ndarray:
    """An attribute column as group names (text; blank or NaN: :data:`UNKNOWN`)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""
        out[i] = UNKNOWN if missing else str(v).strip()
    return out


# ---- the binned counts behind every resample ---------------------------------------------

def _score_edges(score: np.ndarray, threshold: float, max_bins: int | None) -> np.ndarray:
    """Left bin edges: the distinct scores (or ``max_bins`` quantiles of them), the threshold one of them.

    Every score is >= the first edge; with the threshold an edge, "score >= threshold" is whole bins.
    """
    uniq = np.unique(score)
    edges = uniq if max_bins is None or len(uniq) <= max_bins else \
        np.unique(np.quantile(score, np.linspace(0, 1, max_bins + 1)[:-1]))
    return np.union1d(edges, [threshold]) if math.isfinite(threshold) else edges


class _Histogram:
    """One label's map from patients to (cell, score bin, class): a resample's counts are one sparse product.

    A *cell* is one combination of every attribute's value (the finest partition); the counts of any
    group of any grouping are sums of cells (``groups`` is the (G, C) 0/1 matrix).
    """

    def __init__(self, score: np.ndarray, positive: np.ndarray, cell: np.ndarray, patient: np.ndarray,
                 n_patients: int, n_cells: int, threshold: float, max_bins: int | None):
        self.edges = _score_edges(score, threshold, max_bins)
        self.k = len(self.edges)
        bins = np.searchsorted(self.edges, score, side="right") - 1
        self.cut = int(np.searchsorted(self.edges, threshold)) if math.isfinite(threshold) else None
        cols = (cell * self.k + bins) * 2 + positive
        self.matrix = sp.csr_matrix((np.ones(len(score), np.float32), (patient, cols)),
                                    shape=(n_patients, n_cells * self.k * 2))
        self.matrix.sum_duplicates()
        self.n_cells = n_cells

    def cells(self, patient_weights: np.ndarray) -> np.ndarray:
        """(C, K * 2 * B) weighted (negative, positive) counts per cell and bin for (B, P) patient weights.

        Resamples are the last axis: the sparse product writes them so, and the (G, C) grouping
        matrices then apply as one dense product.
        """
        return np.asarray(self.matrix.T @ patient_weights.T).reshape(self.n_cells, -1)

    def groups(self, cells: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """(G, K, 2, B) counts of the G groups of a (G, C) grouping matrix."""
        return (groups @ cells).reshape(len(groups), self.k, 2, -1)


def _stats(h: np.ndarray, cut: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each group's and the rest's metrics from (G, K, 2, B) counts of groups that partition the images.

    AUC counts ties (and pairs sharing a bin) one half.  The rest's concordance is expanded so that no
    (G, K, B) array of the rest is built: C(T-g) = C(T) - <pos_T, x_g> - <pos_g, x_T> + C(g), with
    x = negatives below + half the negatives in the bin.

    Returns:
        ``{metric: (group (B, G), rest (B, G))}`` for :data:`SUBGROUP_METRICS`; rates NaN without a threshold.
    """
    neg, pos = h[:, :, 0], h[:, :, 1]
    neg_t, pos_t = neg.sum(0), pos.sum(0)  # (K, B): every image is in exactly one group
    x = np.cumsum(neg, axis=1)
    x -= 0.5 * neg
    x_t = np.cumsum(neg_t, axis=0) - 0.5 * neg_t
    c_g = np.einsum("gkb,gkb->gb", pos, x)
    c_t = np.einsum("kb,kb->b", pos_t, x_t)[None]
    c_r = c_t - np.einsum("kb,gkb->gb", pos_t, x) - np.einsum("gkb,kb->gb", pos, x_t) + c_g
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    r_pos, r_neg = pos_t.sum(0)[None] - n_pos, neg_t.sum(0)[None] - n_neg
    out = {"prevalence": (_div(n_pos, n_pos + n_neg), _div(r_pos, r_pos + r_neg)),
           "auc": (_div(c_g, n_pos * n_neg), _div(c_r, r_pos * r_neg))}
    if cut is None:
        nan = np.full(n_pos.shape, np.nan)
        out.update({m: (nan, nan) for m in ("tpr", "fpr", "ppv")})
    else:
        tp, fp = pos[:, cut:].sum(1), neg[:, cut:].sum(1)
        r_tp, r_fp = pos_t[cut:].sum(0)[None] - tp, neg_t[cut:].sum(0)[None] - fp
        out.update({"tpr": (_div(tp, n_pos), _div(r_tp, r_pos)), "fpr": (_div(fp, n_neg), _div(r_fp, r_neg)),
                    "ppv": (_div(tp, tp + fp), _div(r_tp, r_tp + r_fp))})
    return {m: (g.T, r.T) for m, (g, r) in out.items()}


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _p(d: np.ndarray) -> float:
    """Two-sided bootstrap p of a difference: twice the share of resamples on the far side of zero."""
    d = d[np.isfinite(d)]
    return float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))) if len(d) else math.nan


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # a resample where every ranked group is undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


# ---- the analysis ----------------------------------------------------------------------

def _worst(aucs: list[tuple[float, int]], auc: tuple[np.ndarray, np.ndarray], names: list[str]) -> str | None:
    """The ranked group with the lowest AUC; None with fewer than two, or when the groups tie (within
    :data:`TIE` of each other, or the lowest one's gap to the rest rounds to zero)."""
    if len(aucs) < 2:
        return None
    low, g = min(aucs)
    gap = float(auc[0][0, g] - auc[1][0, g])
    if max(a for a, _ in aucs) - low < TIE or (math.isfinite(gap) and abs(gap) < TIE):
        return None
    return names[g]


def _partition(attributes: dict[str, np.ndarray], combos: list[tuple[str, ...]]
               ) -> tuple[np.ndarray, int, list[np.ndarray], list[list[str]], list[np.ndarray]]:
    """Cells (one per combination of every attribute present), and per grouping its (G, C) matrix, group
    names and each image's group."""
    names = list(attributes)
    values, codes = [], []
    for a in names:
        v, c = np.unique(np.asarray(attributes[a]).astype(str), return_inverse=True)
        values.append(v), codes.append(c)
    if not names:
        raise CxrlabError("subgroups: no attribute to group by")
    table = np.stack(codes, axis=1)
    uniq, cell = np.unique(table, axis=0, return_inverse=True)
    cell = cell.ravel()
    matrices, group_names, image_groups = [], [], []
    for combo in combos:
        cols = [names.index(a) for a in combo]
        keys, of_cell = np.unique(uniq[:, cols], axis=0, return_inverse=True)
        of_cell = of_cell.ravel()
        m = np.zeros((len(keys), len(uniq)), np.float32)
        m[of_cell, np.arange(len(uniq))] = 1
        matrices.append(m)
        group_names.append([" / ".join(str(values[c][k]) for c, k in zip(cols, key, strict=True)) for key in keys])
        image_groups.append(of_cell[cell])
    return cell, len(uniq), matrices, group_names, image_groups


def subgroup_analysis(y: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: dict[str, float],
                      attributes: dict[str, np.ndarray], patients: np.ndarray | None = None, *,
                      intersections: bool = True, n_boot: int = 1000, seed: int = 0, min_count: int = MIN_COUNT,
                      threshold_rule: str = "rule not recorded", age_bins: list[float] | None = None,
                      max_bins: int = SCORE_BINS, chunk: int = 100) -> SubgroupResult:
    """Per-group performance of one run's test predictions at its validation-chosen thresholds.

    Args:
        y: (N, L) targets in {0, 1}, NaN where not labelled (left out of that label).
        probs: (N, L) probabilities.
        labels: the L label names.
        thresholds: one threshold per label, chosen on validation (the same for every group).
        attributes: name -> (N,) group names (already binned, e.g. by :func:`age_groups`).
        patients: (N,) patient ids; whole patients are resampled (each image its own patient if None).
        intersections: also every two-way intersection of the attributes.
        n_boot, seed: resamples and their seed (one set of resamples for every group and label, so
            a group and the rest, or two labels, are compared on the same resamples).
        min_count: fewer positives or negatives than this: the group is flagged and not ranked.
        threshold_rule, age_bins: recorded with the result.
        max_bins: most score bins per label in the resamples (see the module docstring).
        chunk: resamples per sparse product (bounds memory).
    """
    y, probs = np.asarray(y, float), np.asarray(probs, float)
    n = len(y)
    pid = np.asarray(patients).astype(str) if patients is not None else np.arange(n).astype(str)
    _, pinv = np.unique(pid, return_inverse=True)
    pinv = pinv.ravel()
    n_pat = int(pinv.max()) + 1 if n else 0
    names = list(attributes)
    combos = [(a,) for a in names] + (list(itertools.combinations(names, 2)) if intersections else [])
    cell, n_cells, matrices, group_names, image_groups = _partition(attributes, combos)
    rng = np.random.default_rng(seed)
    weights = [rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=min(chunk, n_boot - b0)).astype(np.float32)
               for b0 in range(0, n_boot, chunk)]
    ones = np.ones((1, n_pat), np.float32)
    thr = {lab: float(thresholds.get(lab, math.nan)) for lab in labels}
    per: dict[tuple[int, int], dict[str, GroupLabel]] = {}
    worst: dict[int, dict[str, str | None]] = {j: {} for j in range(len(combos))}
    for li, lab in enumerate(labels):
        keep = ~np.isnan(y[:, li])
        args = (probs[keep, li], (y[keep, li] == 1).astype(np.int64), cell[keep], pinv[keep], n_pat, n_cells, thr[lab])
        exact_h, boot_h = _Histogram(*args, None), _Histogram(*args, max_bins)
        exact_cells, binned_cells = exact_h.cells(ones), boot_h.cells(ones)
        boots_of: list[list[dict[str, Any]]] = [[] for _ in matrices]
        for w in weights:  # one sparse product per chunk of resamples serves every grouping
            cells_w = boot_h.cells(w)
            for j, groups in enumerate(matrices):
                boots_of[j].append(_stats(boot_h.groups(cells_w, groups), boot_h.cut))
        for j, groups in enumerate(matrices):
            point = _stats(exact_h.groups(exact_cells, groups), exact_h.cut)
            binned = _stats(boot_h.groups(binned_cells, groups), boot_h.cut)
            # the binned AUC of a resample, moved by the exact-minus-binned offset of the test set itself
            shift = [np.nan_to_num(point["auc"][k] - binned["auc"][k]) for k in (0, 1)]
            boots = boots_of[j]
            g_boot = {m: np.concatenate([b[m][0] for b in boots]) + (shift[0] if m == "auc" else 0)
                      for m in SUBGROUP_METRICS}
            r_boot = {m: np.concatenate([b[m][1] for b in boots]) + (shift[1] if m == "auc" else 0)
                      for m in SUBGROUP_METRICS}
            g_of = image_groups[j][keep]
            yk = y[keep, li]
            counts = [(int(np.sum(yk[g_of == g] == 1)), int(np.sum(yk[g_of == g] == 0))) for g in range(len(groups))]
            ranked = [g for g in range(len(groups)) if min(counts[g]) >= min_count]
            medians = {m: (float(np.nanmedian(point[m][0][0, ranked])), _nanmedian(g_boot[m][:, ranked], 1))
                       for m in GAP_METRICS if len(ranked) >= 2 and np.isfinite(point[m][0][0, ranked]).any()}
            for g in range(len(groups)):
                metrics = {m: Estimate(float(point[m][0][0, g]), *percentile_ci(g_boot[m][:, g]), n_boot)
                           for m in SUBGROUP_METRICS}
                vs_rest, vs_median = {}, {}
                for m in GAP_METRICS:
                    d = g_boot[m][:, g] - r_boot[m][:, g]
                    diff = float(point[m][0][0, g] - point[m][1][0, g])
                    vs_rest[m] = GroupGap(Estimate(diff, *percentile_ci(d), n_boot), _p(d))
                    if m in medians:
                        mid, boot = medians[m]
                        d = g_boot[m][:, g] - boot
                        vs_median[m] = GroupGap(Estimate(float(point[m][0][0, g]) - mid, *percentile_ci(d), n_boot),
                                                _p(d))
                per.setdefault((j, g), {})[lab] = GroupLabel(counts[g][0], counts[g][1], g not in ranked, metrics,
                                                             vs_rest, vs_median)
            aucs = [(float(point["auc"][0][0, g]), g) for g in ranked if math.isfinite(point["auc"][0][0, g])]
            worst[j][lab] = _worst(aucs, point["auc"], group_names[j])
    groupings = {}
    for j, combo in enumerate(combos):
        of = image_groups[j]
        groups = {group_names[j][g]: Subgroup(int(np.sum(of == g)), int(len(np.unique(pinv[of == g]))),
                                              per.get((j, g), {}))
                  for g in range(len(group_names[j]))}
        gr = Grouping(list(combo), groups, worst[j])
        groupings[gr.name] = gr
    distinct = max((len(np.unique(probs[~np.isnan(y[:, i]), i])) for i in range(len(labels))), default=0)
    return SubgroupResult(labels=list(labels), thresholds=thr, n=n, patients=n_pat, n_boot=n_boot,
                          groupings=groupings, threshold_rule=threshold_rule, min_count=min_count,
                          age_bins=[float(e) for e in age_bins] if age_bins else None,
                          score_bins=min(distinct, max_bins))
