"""The run report's "Where the model looks" section (``cxrlab audit``), and its suspects figure.

Numbers come from an :class:`~cxrlab.evaluate.records.AuditResult` and are written by
:mod:`cxrlab.report.present`, so a share reads ``0.612 [0.570, 0.650]`` here as an AUC does elsewhere.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.evaluate.records import AuditResult, Estimate, coerce
from cxrlab.report import present
from cxrlab.report.html import box, esc, figure, table


def _ci(e: Estimate | None) -> str:
    return present.ci(e) if e is not None else present.NA


def audit_section(result: AuditResult | dict[str, Any], suspects: Path | None = None) -> str:
    """HTML: lung (and heart) energy share per label against the baselines, box/mask scores, sanity checks."""
    r = coerce(AuditResult, result)
    from cxrlab.report.plots import method_name

    name = method_name(r.method)
    c = r.counts
    parts = [f"<p>{esc(name)} maps of the test images positive for each label, against lung masks from "
             f"<code>{esc(r.mask_source)}</code>: {present.value(c.get('with_masks'))} of "
             f"{present.value(c.get('test_images'))} test images have a lung mask "
             f"({present.value(c.get('without_masks'))} without one are left out"
             + (f"; {c['masks_not_in_test']} masks of images not in the test split are not scored"
                if c.get("masks_not_in_test") else "")
             + (f"; {c['empty_masks']} empty masks left out" if c.get("empty_masks") else "")
             + f"). 95% CIs resample patients ({present.value(r.n_boot)} resamples).</p>"]
    if r.flagged:
        parts.append(box("bad", "Shortcut suspects: ",
                         esc(f"{', '.join(r.flagged)}: the share of CAM energy inside the lungs is below a uniform "
                             "map's (its CI lies wholly under it); the model looks outside the lungs for "
                             + ("this label." if len(r.flagged) == 1 else "these labels."))))
    rows = [[lab, a.n, a.n_tp, _ci(a.lung_share), _ci(a.lung_share_tp), present.value(a.uniform_lung_share),
             present.value(a.gaussian_lung_share), _ci(a.heart_share), "yes" if a.flagged else "no"]
            for lab, a in r.per_label.items()]
    parts.append(table(["label", "positives", "true pos.", "lung share", "lung share (TP)", "uniform map",
                        "centred Gaussian", "heart share", "flagged"], rows))
    boxed = [(lab, a.target) for lab, a in r.per_label.items() if a.target is not None]
    if boxed:
        parts.append(f"<p>Inside the true box or finding mask (IoU of the map thresholded at "
                     f"{present.value(r.level)}: {esc(r.level_rule)}; chosen on validation, never on the test "
                     "masks). Baselines: uniform map / centred Gaussian.</p>")
        rows = [[lab, t.n, _ci(t.share), _ci(t.hit),
                 f"{present.value(t.uniform.get('hit'))} / {present.value(t.gaussian.get('hit'))}",
                 _ci(t.hit_tp), _ci(t.iou), f"{present.value(t.uniform.get('iou'))} / "
                 f"{present.value(t.gaussian.get('iou'))}", _ci(t.iou_tp)] for lab, t in boxed]
        parts.append(table(["label", "boxed positives", "energy share", "pointing hit", "baselines",
                            "hit (TP)", "mIoU", "baselines", "mIoU (TP)"], rows))
    if r.randomisation is not None:
        parts.append(f"<p>Sanity: Spearman correlation of the maps before and after re-initialising the top "
                     f"layers {esc(_ci(r.randomisation))} (the input's edges, which ignore the weights: "
                     f"{esc(_ci(r.randomisation_edges))}; lower is better). Faithfulness: deletion AUC of a random "
                     f"order minus the map's order {esc(present.diff_ci(r.deletion) if r.deletion else present.NA)}"
                     " (above 0: the map ranks pixels the model uses).</p>")
    s = r.seconds
    if s.get("cams"):
        parts.append(f"<p class='muted'>{present.value(int(s.get('cam_count', 0)))} CAMs in "
                     f"{s['cams']:.1f} s ({present.value(s.get('cams_per_second'), 1)} a second); scoring "
                     f"{s.get('scoring', 0):.1f} s, sanity checks {s.get('sanity', 0):.1f} s.</p>")
    if suspects is not None:
        parts.append(figure(suspects, "shortcut suspects",
                            "The test images with the most CAM energy outside the lungs (lung outline in white)."))
    return "".join(parts)


def suspects_figure(images: np.ndarray, maps: np.ndarray, lungs: np.ndarray, titles: list[str], path: Path,
                    method: str = "gradcam", cols: int = 4) -> Path:
    """Model input + CAM with the lung mask's outline, one panel per suspect image."""
    from cxrlab.report.plots import colourbar, colourbar_room, method_name, minmax, plt, save

    n = max(len(images), 1)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols + 1.2, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cam, lung, title in zip(axes.flat, images, maps, lungs, titles, strict=False):
        s = img.shape[-1]
        ax.imshow(img, cmap="gray", extent=(0, s, s, 0))
        ax.imshow(minmax(cam), cmap="jet", alpha=0.35, extent=(0, s, s, 0), vmin=0, vmax=1)
        ax.contour(np.arange(s) + 0.5, np.arange(s) + 0.5, lung.astype(float), levels=[0.5], colors="white",
                   linewidths=1.0)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{method_name(method)}: most energy outside the lungs")
    fig.tight_layout(rect=(0, 0, colourbar_room(fig), 1))
    colourbar(fig, "CAM (min-max normalised)")
    return save(fig, path)
