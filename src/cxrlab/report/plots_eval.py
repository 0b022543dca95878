"""Evaluation figures: ROC and PR curves with the operating point, calibration with bin counts,
confusion matrices (counts and shares), and the two-run comparison (overlaid ROCs, forest plot).

Curves are computed by :mod:`cxrlab.evaluate.metrics`; these functions only draw.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from cxrlab.evaluate.metrics import pr_points, roc_points
from cxrlab.report import present
from cxrlab.report.plots import plt, save

Point = tuple[float, float]


def _grid(n: int, size: float = 3.2, max_cols: int = 4) -> tuple[plt.Figure, np.ndarray, int]:
    """Square panels with fixed margins in inches (no ``tight_layout``: it costs a draw per figure)."""
    cols = min(max(n, 1), max_cols)
    rows = math.ceil(max(n, 1) / cols)
    w, h = size * cols, size * rows + 0.35
    fig, axes = plt.subplots(rows, cols, figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=0.62 / w, right=1 - 0.12 / w, bottom=0.55 / h, top=1 - 0.62 / h,
                        wspace=0.42, hspace=0.5)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    return fig, axes, cols


def _suptitle(fig: plt.Figure, text: str, size: float = 11) -> None:
    """A figure title wrapped to the figure's width (one panel is narrow: an unwrapped title is clipped).

    Each extra line moves the panels down by its height, so the title never overlaps them.
    """
    w, h = fig.get_size_inches()
    chars = max(int(w * 72 / (size * 0.56)), 12)  # about 0.56 em per character of the default sans font
    lines = textwrap.wrap(text, chars) or [text]
    extra = (len(lines) - 1) * size * 1.25 / 72
    if extra:
        fig.set_size_inches(w, h + extra)
        top = fig.subplotpars.top
        fig.subplots_adjust(top=1 - ((1 - top) * h + extra) / (h + extra),
                            bottom=fig.subplotpars.bottom * h / (h + extra))
    fig.suptitle("\n".join(lines), fontsize=size)


def _both_classes(y: np.ndarray) -> bool:
    y = y[~np.isnan(y)]
    return bool(len(np.unique(y)) == 2)


def roc_curves(y_true: np.ndarray, y_score: np.ndarray, labels: list[str], aucs: dict[str, float],
               path: Path, points: dict[str, Point] | None = None, one_vs_rest: bool = False,
               point_name: str = "operating point") -> Path:
    """One ROC panel per label with its AUC, the chance diagonal and the operating point.

    Args:
        points: per label the (false-positive rate, sensitivity) of the decisions the model makes
            (at the validation-chosen threshold, or the arg-max class for multi-class).
        one_vs_rest: multi-class: each panel is one class against the rest (said in the titles).
    """
    fig, axes, cols = _grid(len(labels))
    for i, lab in enumerate(labels):
        ax = axes[i // cols][i % cols]
        if _both_classes(y_true[:, i]):
            fpr, tpr = roc_points(y_true[:, i], y_score[:, i])
            ax.plot(fpr, tpr, color="C0")
        pt = (points or {}).get(lab)
        if pt is not None and all(v == v for v in pt):
            ax.plot(*pt, "o", color="crimson", ms=6, label=point_name)
            ax.legend(loc="lower right", fontsize=7)
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        name = f"{lab} vs rest" if one_vs_rest else lab
        ax.set_title(f"{name}  AUC {present.value(aucs.get(lab))}", fontsize=9)
        ax.set_xlabel("1 - specificity (FPR)", fontsize=8), ax.set_ylabel("sensitivity (TPR)", fontsize=8)
        ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02), ax.set_aspect("equal")
    curves = "curves" if len(labels) > 1 else "curve"
    _suptitle(fig, f"ROC {curves}, one-vs-rest (test split)" if one_vs_rest else f"ROC {curves} (test split)")
    return save(fig, path)


def pr_curves(y_true: np.ndarray, y_score: np.ndarray, labels: list[str], aps: dict[str, float], path: Path,
              points: dict[str, Point] | None = None, one_vs_rest: bool = False,
              point_name: str = "operating point") -> Path:
    """One precision-recall panel per label with its average precision, prevalence and operating point.

    Args:
        points: per label the (sensitivity, PPV) of the decisions the model makes.
        one_vs_rest: multi-class: each panel is one class against the rest.
        point_name: legend text of the operating point.
    """
    fig, axes, cols = _grid(len(labels))
    for i, lab in enumerate(labels):
        ax = axes[i // cols][i % cols]
        y = y_true[:, i]
        if _both_classes(y):
            recall, precision = pr_points(y, y_score[:, i])
            ax.step(recall, precision, where="post", color="C0")
            prev = float(np.nanmean(y == 1))
            ax.axhline(prev, color="gray", ls=":", lw=1, label=f"prevalence {prev:.2f}")
        pt = (points or {}).get(lab)
        if pt is not None and all(v == v for v in pt):
            ax.plot(*pt, "o", color="crimson", ms=6, label=point_name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=7)
        name = f"{lab} vs rest" if one_vs_rest else lab
        ax.set_title(f"{name}  AP {present.value(aps.get(lab))}", fontsize=9)
        ax.set_xlabel("recall (sensitivity)", fontsize=8), ax.set_ylabel("precision (PPV)", fontsize=8)
        ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02), ax.set_aspect("equal")
    kind = ", one-vs-rest" if one_vs_rest else ""
    _suptitle(fig, f"Precision-recall {'curves' if len(labels) > 1 else 'curve'}{kind} (test split)")
    return save(fig, path)


def _ece(c: dict[str, list[float]]) -> float:
    """ECE of a reliability curve (its bins' count-weighted gap), as ``expected_calibration_error`` gives it."""
    n = np.asarray(c.get("count", []), float)
    gap = np.abs(np.asarray(c["observed"], float) - np.asarray(c["confidence"], float))
    return float((n * gap).sum() / n.sum()) if len(n) and n.sum() else float("nan")


def _bin_centres(confidence: list[float], bins: int) -> np.ndarray:
    """The centre of the equal-width bin each point's mean probability lies in (a bin's mean lies in the bin).

    Why: a bar drawn at the mean, 0.08 wide, overlapped its neighbour when two bins' means were close.
    """
    idx = np.clip(np.floor(np.asarray(confidence, float) * bins), 0, bins - 1)
    return (idx + 0.5) / bins


def reliability(curves: dict[str, dict[str, list[float]]], path: Path, title: str = "Calibration (test split)",
                xlabel: str = "mean predicted probability", ylabel: str = "observed frequency",
                bins: int = 10) -> Path:
    """Reliability diagrams as small multiples: per label its curve, its images per bin, n and ECE.

    One panel per label (several curves on one axis hide each other); below each, the images per
    equal-width bin with the count on the bar (next to the points the numbers hid them).  Every
    count strip has the same scale: log when a few bins hold most images in any panel, so two
    panels are never read on different scales.  A curve with a ``before`` curve (the uncalibrated
    probabilities) draws it dashed in grey, and every such panel gives its ECE in the title.
    """
    n = max(len(curves), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    pw, ph = (5.2, 5.4) if n == 1 else (3.5, 3.9)
    w, h = pw * cols, ph * rows + 0.5
    fig = plt.figure(figsize=(w, h))
    outer = fig.add_gridspec(rows, cols, left=0.75 / w, right=1 - 0.3 / w, bottom=0.55 / h, top=1 - 0.75 / h,
                             wspace=0.3, hspace=0.32)
    all_counts = [[int(v) for v in c.get("count", [])] for c in curves.values()]
    log = any(cs and min(cs) > 0 and max(cs) > 20 * min(cs) for cs in all_counts)  # keep the small bins visible
    for i, (lab, c) in enumerate(curves.items()):
        r, k = divmod(i, cols)
        inner = outer[r, k].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.1)
        ax = fig.add_subplot(inner[0])
        cnt = fig.add_subplot(inner[1], sharex=ax)
        counts = all_counts[i]
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfect")
        before = c.get("before")  # the model's own probabilities, beside the calibrated ones
        if before:
            ax.plot(before["confidence"], before["observed"], "s--", ms=3, lw=1, color="gray", alpha=0.8,
                    label="before calibration")
        ax.plot(c["confidence"], c["observed"], "o-", ms=3.5, lw=1.2, color="C0", label="observed")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1.05), ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False, labelsize=7)
        was = f"; before {present.value(_ece(before))}" if before else ""
        ax.set_title(f"{lab}  (n {sum(counts)}, ECE {present.value(_ece(c))}{was})", fontsize=9)
        if k == 0:
            ax.set_ylabel(ylabel, fontsize=8)
            cnt.set_ylabel("images", fontsize=8)
        if i == 0:
            ax.legend(loc="upper left", fontsize=7)
        x = _bin_centres(c["confidence"], bins)
        cnt.bar(x, counts, width=0.9 / bins, color="C0", alpha=0.8)
        top = max(counts, default=1)
        for xi, m in zip(x, counts, strict=False):
            cnt.text(xi, m * (1.15 if log else 1) + (0 if log else 0.04 * top), str(m), ha="center", va="bottom",
                     fontsize=6, color="C0")
        cnt.grid(alpha=0.3), cnt.tick_params(labelsize=7)
        if log:
            cnt.set_yscale("log")
            cnt.set_ylim(0.7, max(top, 1) * 12)
        else:
            cnt.set_ylim(0, max(top, 1) * 1.35)
        cnt.set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def confusion(cm: list[list[int]], labels: list[str], path: Path, title: str = "Confusion matrix (test split)",
              xlabel: str = "predicted", ylabel: str = "true") -> Path:
    """Confusion matrix: each cell its count and its share of the true class (row), coloured by the share."""
    arr = np.asarray(cm, float)
    norm = arr / np.maximum(arr.sum(1, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.95 * n + 2.8, 0.85 * n + 1.7))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(arr[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("share of the true class", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def compare_rocs(y_true: np.ndarray, scores: dict[str, np.ndarray], labels: list[str], path: Path) -> Path:
    """Overlaid ROC curves of several runs on the same images, one panel per label.

    Args:
        y_true: (N, L) targets.
        scores: run name -> (N, L) probabilities.
    """
    fig, axes, cols = _grid(len(labels))
    for i, lab in enumerate(labels):
        ax = axes[i // cols][i % cols]
        if _both_classes(y_true[:, i]):
            for k, (name, s) in enumerate(scores.items()):
                fpr, tpr = roc_points(y_true[:, i], s[:, i])
                ax.plot(fpr, tpr, color=f"C{k}", lw=1.3, label=name)
            ax.legend(loc="lower right", fontsize=7)
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("1 - specificity", fontsize=8), ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_aspect("equal")
    _suptitle(fig, "ROC curves of the compared runs (same test images)")
    return save(fig, path)


def forest(rows: list[tuple[str, float, float, float]], path: Path, xlabel: str = "AUC difference (A - B)") -> Path:
    """Forest plot: one row per (name, difference, CI low, CI high), a line at no difference."""
    n = max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * n + 1.3))
    for i, (_, d, lo, hi) in enumerate(rows):
        y = n - 1 - i
        if all(v == v for v in (d, lo, hi)):
            ax.plot([lo, hi], [y, y], color="C0", lw=2)
            ax.plot(d, y, "s", color="C0" if lo <= 0 <= hi else "crimson", ms=6)
    ax.axvline(0, color="gray", ls="--", lw=1)
    ax.set_yticks([n - 1 - i for i in range(len(rows))], [r[0] for r in rows], fontsize=8)
    ax.set_xlabel(xlabel), ax.grid(axis="x", alpha=0.3)
    ax.set_title("Differences with 95% CIs (red: CI excludes 0)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
