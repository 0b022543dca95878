"""Figures of training and explanation (matplotlib, Agg backend; every function writes one PNG).

Evaluation figures (ROC, PR, calibration, confusion, comparisons) are in
:mod:`cxrlab.report.plots_eval`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cxrlab.evaluate.records import Localization, coerce  # noqa: E402
from cxrlab.runio import atomic_write  # noqa: E402

#: How a metrics.jsonl ``selection`` name reads on an axis.
SELECTION_NAMES = {"val_macro_auc": "validation macro AUC", "val_accuracy": "validation accuracy",
                   "val_loss": "validation loss"}


#: How an attribution method (``explain.method``, ``--method``) is named in titles.
METHOD_NAMES = {"gradcam": "Grad-CAM", "layergradcam": "Grad-CAM", "gradcam++": "Grad-CAM++",
                "saliency": "saliency"}


def method_name(method: str) -> str:
    """``gradcam++`` -> ``Grad-CAM++``: a figure is titled by the method that drew it."""
    return METHOD_NAMES.get(method, method)


def as_base64(fig: plt.Figure) -> str:
    """The figure as a base64 PNG (embedded in a self-contained page), then closed."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it (laid out by ``tight_layout``: one draw, not two)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


def minmax(m: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] (a constant map becomes zeros)."""
    m = np.asarray(m, dtype=float)
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def colourbar_room(fig: plt.Figure) -> float:
    """The right edge (figure fraction) to pass to ``tight_layout(rect=...)`` to leave room for :func:`colourbar`."""
    return 1 - 1.2 / fig.get_figwidth()


def colourbar(fig: plt.Figure, label: str, cmap: str = "jet") -> None:
    """A 0..1 colour scale 1 inch from the right edge of ``fig`` (after ``tight_layout`` with :func:`colourbar_room`)."""
    w = fig.get_figwidth()
    cax = fig.add_axes((1 - 0.95 / w, 0.18, 0.12 / w, 0.62))
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), cax=cax).set_label(label, fontsize=8)
    cax.tick_params(labelsize=7)


def selection_name(metric: str | None, n_labels: int = 2) -> str:
    """A selection metric as a reader names it (one label: ``validation AUC``, not "macro")."""
    if metric == "val_macro_auc" and n_labels == 1:
        return "validation AUC"
    return SELECTION_NAMES.get(metric or "", metric or "not recorded")


def training_curves(history: list[dict[str, Any]], path: Path, loss_name: str = "BCE", n_labels: int = 2) -> Path:
    """Train/validation loss (named) and the metric that selected the checkpoint; the best epoch marked.

    Args:
        history: ``metrics.jsonl`` rows (``selection`` names the selection metric).
        loss_name: the loss actually used, e.g. ``BCE``, ``cross-entropy``, ``focal``.
        n_labels: number of labels (one label: its AUC is not called "macro").
    """
    ep = [h["epoch"] for h in history]
    metric = next((h["selection"] for h in reversed(history) if h.get("selection")), "val_macro_auc")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set_xlabel("epoch"), a.set_ylabel(f"{loss_name} loss"), a.legend(), a.grid(alpha=0.3)
    a.set_title(f"{loss_name} loss", fontsize=10)
    values = [h.get(metric, h.get("val_macro_auc")) for h in history]
    values = [float("nan") if v is None else v for v in values]
    b.plot(ep, values, "o-", color="C2")
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        bi = best[-1]
        b.axvline(bi, color="gray", ls="--", lw=1)
        b.annotate(f"best (epoch {bi})", (bi, values[ep.index(bi)]), textcoords="offset points",
                   xytext=(4, -12), fontsize=8)
    name = selection_name(metric, n_labels)
    b.set_xlabel("epoch"), b.set_ylabel(name), b.grid(alpha=0.3)
    b.set_title(f"{name}: selects the checkpoint", fontsize=10)
    for ax in (a, b):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Training curves")
    fig.tight_layout()
    return save(fig, path)


def cam_overlays(cases: list[Any], images: np.ndarray, path: Path, cols: int = 4, method: str = "gradcam",
                 iou: float = 0.1) -> Path:
    """Model input + CAM (of ``method``) with true (green) and predicted (red) boxes, one panel per case.

    Drawn in model-input pixels (``truth_model``/``pred_model``), so a letterboxed
    or CLAHE run shows the pixels its model saw; the colour bar gives the CAM scale.
    """
    n = max(len(cases), 1)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols + 1.2, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, cases, strict=False):
        img = images[c.row]
        s = img.shape[-1]
        ax.imshow(img, cmap="gray", extent=(0, s, s, 0))
        if c.cam is not None:
            ax.imshow(minmax(c.cam), cmap="jet", alpha=0.35, extent=(0, s, s, 0), vmin=0, vmax=1)
        for b in c.truth_model:
            ax.add_patch(Rectangle(b[:2], b[2], b[3], fill=False, ec="lime", lw=1.5))
        for b in c.pred_model:
            ax.add_patch(Rectangle(b[:2], b[2], b[3], fill=False, ec="red", lw=1.2, ls="--"))
        ax.set_title(f"{c.label} (true) {'hit' if c.hit else 'miss'}", fontsize=9,
                     color="green" if c.hit else "firebrick")
    fig.suptitle(f"{method_name(method)}: true boxes green, CAM boxes red (IoU >= {iou:g} = hit)")
    fig.tight_layout(rect=(0, 0, colourbar_room(fig), 1))
    colourbar(fig, "CAM (min-max normalised)")
    return save(fig, path)


def localization_bars(loc: Localization | dict[str, Any], path: Path) -> Path:
    """Per-class localisation accuracy of the result's CAM method against the random-box baseline."""
    loc = coerce(Localization, loc)
    per = loc.per_class
    labs = list(per)
    x = np.arange(len(labs))
    fig, ax = plt.subplots(figsize=(1.2 * len(labs) + 2, 3.4))
    name = method_name(loc.method)
    ax.bar(x - 0.2, [per[k].accuracy for k in labs], 0.4, label=f"{name} boxes")
    ax.bar(x + 0.2, [per[k].random_accuracy for k in labs], 0.4, label="random boxes", color="gray")
    ax.set_xticks(x, labs, rotation=30, ha="right")
    ax.set_ylabel(f"accuracy (IoU >= {loc.iou:g})"), ax.set_ylim(0, 1.2), ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(loc="upper right", ncol=2, fontsize=8)  # above the 1.0 line: never over a bar
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{name} localisation vs random boxes", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def std_histogram(std: np.ndarray, labels: list[str], threshold: float, path: Path) -> Path:
    """Histogram of MC-dropout standard deviations per label, with the 'uncertain' threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, max(float(std.max()), threshold) * 1.05 + 1e-6, 40)
    for j, lab in enumerate(labels):
        ax.hist(std[:, j], bins=bins, histtype="step", label=lab)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("std of the probability over MC-dropout passes"), ax.set_ylabel("images")
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def explain_grid(img: np.ndarray, maps: list[np.ndarray], titles: list[str], title: str, path: Path,
                 colours: list[str] | None = None) -> Path:
    """The model input, then one attribution overlay per label (min-max scaled, with a colour bar).

    Args:
        titles: one panel title per map (e.g. probability, decision and truth).
        colours: optional title colour per map.
    """
    cols = len(maps) + 1
    fig, axes = plt.subplots(1, cols, figsize=(3 * cols + 1.2, 3.5))
    axes = np.atleast_1d(axes)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("model input", fontsize=8)
    colours = colours or ["black"] * len(maps)
    for ax, m, t, col in zip(axes[1:], maps, titles, colours, strict=True):
        ax.imshow(img, cmap="gray")
        ax.imshow(minmax(m), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(t, fontsize=8, color=col)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, colourbar_room(fig), 0.95))
    colourbar(fig, "attribution (min-max per map)")
    return save(fig, path)
