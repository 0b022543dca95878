"""Figures for a run (matplotlib, Agg backend; every function writes one PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cxrlab.evaluate.metrics import roc_points  # noqa: E402
from cxrlab.runio import atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def training_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Train/val loss and validation macro AUC per epoch; the best epoch marked."""
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("BCE loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [h["val_macro_auc"] for h in history], "o-", color="C2")
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        bi = best[-1]
        b.axvline(bi, color="gray", ls="--", lw=1)
        b.annotate("best", (bi, history[ep.index(bi)]["val_macro_auc"]), textcoords="offset points", xytext=(4, -12))
    b.set_xlabel("epoch"), b.set_ylabel("validation macro AUC"), b.grid(alpha=0.3)
    fig.suptitle("Training curves")
    return _save(fig, path)


def roc_curves(y_true: np.ndarray, y_score: np.ndarray, labels: list[str],
               aucs: dict[str, float], path: Path) -> Path:
    """One ROC panel per label with its AUC and the chance diagonal."""
    n = len(labels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for i, lab in enumerate(labels):
        ax = axes[i // cols][i % cols]
        if np.isfinite(aucs.get(lab, np.nan)):
            fpr, tpr = roc_points(y_true[:, i], y_score[:, i])
            ax.plot(fpr, tpr, color="C0")
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        ax.set_title(f"{lab}  AUC {aucs.get(lab, float('nan')):.3f}", fontsize=9)
        ax.set_xlabel("1 - specificity", fontsize=8), ax.set_ylabel("sensitivity", fontsize=8)
        ax.set_aspect("equal")
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("ROC curves (test split)")
    fig.tight_layout()
    return _save(fig, path)


def cam_overlays(cases: list[Any], images: np.ndarray, path: Path, cols: int = 4) -> Path:
    """Model input + Grad-CAM with true (green) and predicted (red) boxes, one panel per case.

    Drawn in model-input pixels (``truth_model``/``pred_model``), so a letterboxed
    or CLAHE run shows the pixels its model saw.
    """
    n = max(len(cases), 1)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, cases, strict=False):
        img = images[c.row]
        s = img.shape[-1]
        ax.imshow(img, cmap="gray", extent=(0, s, s, 0))
        if c.cam is not None:
            ax.imshow(c.cam, cmap="jet", alpha=0.35, extent=(0, s, s, 0))
        for b in c.truth_model:
            ax.add_patch(Rectangle(b[:2], b[2], b[3], fill=False, ec="lime", lw=1.5))
        for b in c.pred_model:
            ax.add_patch(Rectangle(b[:2], b[2], b[3], fill=False, ec="red", lw=1.2, ls="--"))
        ax.set_title(f"{c.label} {'hit' if c.hit else 'miss'}", fontsize=9,
                     color="green" if c.hit else "firebrick")
    fig.suptitle("Grad-CAM: true boxes green, CAM boxes red (IoU >= 0.1 = hit)")
    fig.tight_layout()
    return _save(fig, path)


def localization_bars(summary: dict[str, Any], path: Path) -> Path:
    """Per-class localisation accuracy of Grad-CAM against the random-box baseline."""
    per = summary["per_class"]
    labs = list(per)
    x = np.arange(len(labs))
    fig, ax = plt.subplots(figsize=(1.2 * len(labs) + 2, 3.4))
    ax.bar(x - 0.2, [per[k]["accuracy"] for k in labs], 0.4, label="Grad-CAM")
    ax.bar(x + 0.2, [per[k]["random_accuracy"] for k in labs], 0.4, label="random boxes", color="gray")
    ax.set_xticks(x, labs, rotation=30, ha="right")
    ax.set_ylabel(f"accuracy (IoU >= {summary['iou']})"), ax.set_ylim(0, 1), ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def reliability(curves: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """Reliability diagram: observed positive rate against mean predicted probability per bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfect")
    for lab, c in curves.items():
        ax.plot(c["confidence"], c["observed"], "o-", ms=3, lw=1, label=lab)
    ax.set_xlabel("mean predicted probability"), ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    ax.set_title("Calibration (test split)")
    return _save(fig, path)


def confusion(cm: list[list[int]], labels: list[str], path: Path) -> Path:
    """Confusion matrix, counts and row-normalised colour."""
    arr = np.asarray(cm, float)
    norm = arr / np.maximum(arr.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(arr[i, j]), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return _save(fig, path)


def std_histogram(std: np.ndarray, labels: list[str], threshold: float, path: Path) -> Path:
    """Histogram of MC-dropout standard deviations per label, with the 'uncertain' threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, max(float(std.max()), threshold) * 1.05 + 1e-6, 40)
    for j, lab in enumerate(labels):
        ax.hist(std[:, j], bins=bins, histtype="step", label=lab)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("std of the probability over MC-dropout passes"), ax.set_ylabel("images")
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    return _save(fig, path)


def explain_grid(img: np.ndarray, maps: list[np.ndarray], titles: list[str], title: str, path: Path) -> Path:
    """The model input, then one attribution overlay per label."""
    cols = len(maps) + 1
    fig, axes = plt.subplots(1, cols, figsize=(3 * cols, 3.3))
    axes = np.atleast_1d(axes)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("model input", fontsize=8)
    for ax, m, t in zip(axes[1:], maps, titles, strict=True):
        ax.imshow(img, cmap="gray")
        ax.imshow(m, cmap="jet", alpha=0.4)
        ax.set_title(t, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
