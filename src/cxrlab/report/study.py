"""The study report: a paper-shaped table, tests against the baseline, plots, published vs ours.

Draws and writes only; every number comes in the ``data`` dict built by
:func:`cxrlab.workflows.study_report.study_report`.  ``report.html`` embeds its
figures (one file to send); ``report.md`` holds the same tables and links the
same figures, written to ``figures/`` beside it.
"""

from __future__ import annotations

import base64
import functools
import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from cxrlab.evaluate.records import (  # noqa: E402
    Comparison,
    Estimate,
    StudyCell,
    StudyResult,
    SubgroupResult,
    coerce,
    finite,
)
from cxrlab.report import present  # noqa: E402
from cxrlab.report.html import CSS  # noqa: E402
from cxrlab.report.html import table as page_table  # noqa: E402
from cxrlab.report.plots import as_base64, method_name  # noqa: E402
from cxrlab.report.subgroups_report import WORST_HEADER, worst_rows  # noqa: E402
from cxrlab.report.transfer_report import transfer_sections  # noqa: E402
from cxrlab.runio import atomic_write, atomic_write_text  # noqa: E402
from cxrlab.studies.folder import StudyFolder  # noqa: E402
from cxrlab.studies.spec import dotted  # noqa: E402

PHANTOM_BANNER = ("PHANTOM DATA: synthetic images, not a result about real X-rays. Every cell ran on the "
                  "cxrlab phantom (--phantom); these numbers test the pipeline, they say nothing about a model on X-rays.")
SPLITS = ("train", "val", "test")


def _reads_result(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let a section take the :class:`StudyResult` or its ``study.json`` dict (read through the record)."""
    @functools.wraps(fn)
    def wrapped(data: StudyResult | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return fn(coerce(StudyResult, data), *args, **kwargs)
    return wrapped


_f = present.value  # numbers, CIs and p-values are written by cxrlab.report.present, as on every page


def _p(p: Any, n_boot: int | None = None) -> str:
    return present.pvalue(p, 1 / n_boot if n_boot else None)


@_reads_result
def ci_label(data: StudyResult) -> str:
    """``95% CI, B=1000``: the interval's level and its bootstrap resamples (every B on the page, if several)."""
    bs = sorted({r.n_boot for r in data.cells.values() if r.n_boot})
    return f"95% CI, B={'/'.join(str(b) for b in bs) or 'n/a'}"


def _headline(row: StudyCell) -> tuple[str, Estimate]:
    return row.headline


@_reads_result
def results_table(data: StudyResult) -> tuple[list[str], list[list[str]]]:
    cells = data.cells
    labels = data.labels
    head = ["cell", "epochs (best)", f"headline [{ci_label(data)}]", *(f"{lab} [{ci_label(data)}]" for lab in labels)]
    rows = []
    for name, r in cells.items():
        metric, d = _headline(r)
        rows.append([name + (" (baseline)" if name == data.baseline and data.transfer is None else ""),
                     f"{r.extras.get('epochs_run')} ({r.extras.get('best_epoch')})", f"{metric} {present.ci(d)}",
                     *[present.ci(r.per_label[lab].auc) if lab in r.per_label else present.NA for lab in labels]])
    return head, rows


@_reads_result
def tests_table(data: StudyResult) -> tuple[list[str], list[list[str]]]:
    bs = sorted({c["macro_auc_difference"].get("n_boot") or c.get("n_boot") for c in data.comparisons} - {None})
    head = ["cell A", "cell B", f"macro AUC diff A-B, observed [95% CI, B={'/'.join(map(str, bs)) or 'n/a'}]",
            "paired bootstrap p", "labels p<0.05 (Holm)", "DeLong per label (Holm p)"]
    accuracy = any(c.get("accuracy") for c in data.comparisons)
    if accuracy:
        head.insert(2, "accuracy diff A-B (McNemar p)")
    rows = []
    for c in data.comparisons:
        r = Comparison.from_dict(c)
        per = "; ".join(f"{lab} {present.diff(d.diff)} ({_p(d.p_holm)})" for lab, d in r.per_label.items())
        row = [c["a"], c["b"], present.diff_ci(r.macro, digits=4),
               present.pvalue(r.p, r.p_resolution),
               str(len(r.significant)), per]
        if accuracy:
            acc = c.get("accuracy")
            row.insert(2, f"{present.diff(acc['diff'])} ({_p(acc['p'])}; {acc['a_only']} vs {acc['b_only']} "
                          "discordant)" if acc else "n/a")
        rows.append(row)
    return head, rows


@_reads_result
def operating_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    """Binary cells at their validation-chosen threshold: accuracy, sensitivity, specificity, confusion."""
    ops = {n: r.operating_point for n, r in data.cells.items() if r.operating_point is not None}
    if not ops:
        return None
    ci = ci_label(data)
    head = ["cell", "threshold (val)", f"accuracy [{ci}]", f"sensitivity [{ci}]", f"specificity [{ci}]",
            "TN / FP / FN / TP"]
    rows = [[n, _f(op.threshold), *(present.ci(op.rates[k]) if k in op.rates else present.NA
                                    for k in ("accuracy", "sensitivity", "specificity")),
             " / ".join(str(op.confusion[k]) for k in ("tn", "fp", "fn", "tp"))] for n, op in ops.items()]
    return head, rows


@_reads_result
def confusion_plot(data: StudyResult) -> str | None:
    """One confusion matrix per binary or multi-class cell: counts and row percentages in the squares, the
    colour the row share on one scale for every cell (one colour bar), so the cells compare by eye."""
    cells = {n: r for n, r in data.cells.items() if r.confusion_matrix}
    if not cells:
        return None
    k = len(cells)
    n_cls = max(len(r.confusion_matrix or []) for r in cells.values())
    side = max(4.2, 0.9 * n_cls + 1.6)
    cols = min(k, 3)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1.0, side * rows), squeeze=False)
    image = None
    for i, (name, r) in enumerate(cells.items()):
        ax = axes[i // cols][i % cols]
        m = [[float(v) for v in row] for row in r.confusion_matrix or []]
        names = r.labels if r.task == "multiclass" else [f"no {r.labels[0]}", r.labels[0]]
        share = [[v / (sum(row) or 1) for v in row] for row in m]
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        size = 12 if n_cls <= 3 else 9 if n_cls <= 6 else 7
        for a, row in enumerate(m):
            for b, v in enumerate(row):
                ax.text(b, a, f"{int(v)}\n{share[a][b]:.0%}", ha="center", va="center", fontsize=size,
                        color="white" if share[a][b] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=30 if n_cls > 2 else 0,
                      ha="right" if n_cls > 2 else "center", fontsize=10)
        first = i % cols == 0  # the cells share their classes: name the rows once per row of panels
        ax.set_yticks(range(len(names)), names if first else [], fontsize=10)
        ax.set_title(f"{name} (n = {int(sum(map(sum, m)))})", fontsize=11)
        ax.set_xlabel("predicted", fontsize=10)
        if first:
            ax.set_ylabel("true", fontsize=10)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.03)
    bar.set_label("share of the true class (row)", fontsize=10)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.suptitle("confusion matrices (test split; binary cells at the validation-chosen threshold): "
                 "count and row %", fontsize=11)
    return as_base64(fig)


@_reads_result
def roc_plot(data: StudyResult) -> str | None:
    """Each binary / multi-label cell's ROC curve overlaid, one panel per label, one legend below them all
    (a legend per panel hides the curves once a study has more than a few cells)."""
    cells = {n: r.extras["roc"] for n, r in data.cells.items() if r.extras.get("roc")}
    if not cells:
        return None
    labels = list(dict.fromkeys(lab for roc in cells.values() for lab in roc))
    cols = min(len(labels), 4)
    rows = math.ceil(len(labels) / cols)
    size = 5.0 if len(labels) == 1 else 3.6
    colours = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20")
    fig, axes = plt.subplots(rows, cols, figsize=(max(size * cols, 6.0), size * rows + 0.3 * len(cells) / 2 + 0.6),
                             squeeze=False)
    handles: dict[str, Any] = {}
    for i, lab in enumerate(labels):
        ax = axes[i // cols][i % cols]
        for k, (name, roc) in enumerate(cells.items()):
            if lab in roc:
                auc = data.cells[name].per_label[lab].auc.value if lab in data.cells[name].per_label else None
                text = f"{name} (AUC {_f(auc)})" if len(labels) == 1 else name
                (line,) = ax.plot(roc[lab]["fpr"], roc[lab]["tpr"], color=colours(k % colours.N), lw=1.5)
                handles.setdefault(text, line)
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        ax.set_title(lab, fontsize=10)
        ax.set_xlabel("1 - specificity", fontsize=9)
        ax.set_ylabel("sensitivity", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    for j in range(len(labels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("ROC curves per cell, overlaid (test split; AUCs with CIs in the results table)", fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(3, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.045 * math.ceil(len(handles) / 3) / rows + 0.02, 1, 1))
    return as_base64(fig)


@_reads_result
def setup_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    """What each cell ran: model, size, weights, epochs run / cap, images and patients per split, data."""
    cells = {n: r.extras["setup"] for n, r in data.cells.items() if r.extras.get("setup")}
    if not cells:
        return None
    head = ["cell", "the cell's own settings", "model", "image size", "pretrained weights", "epochs run / cap (best)",
            *(f"{s} images / patients" for s in SPLITS), "data"]
    rows = []
    for name, c in cells.items():
        opts = ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items())
        weights = {"none": "none (random)", "hub": "hub (ImageNet)"}.get(c["pretrained"], c["pretrained"])
        sp = c.get("splits") or {}
        own = ", ".join(dotted((data.overrides or {}).get(name, {}))) or "-"  # as typed on a command line
        rows.append([name, own, c["model"] + (f" ({opts})" if opts else ""), f"{c['image_size']} px", weights,
                     f"{c.get('epochs_run')} / {c.get('epochs_cap')} ({c.get('best_epoch')})",
                     *(f"{sp[s]['images']} / {sp[s]['patients']}" if s in sp else "n/a" for s in SPLITS),
                     f"{c['source']} at {c['root']}"])
    return head, rows


@_reads_result
def command_text(data: StudyResult) -> str:
    """The command line's overrides, verbatim (what changed the study file's values for every cell)."""
    cl = data.command_line
    if cl is None:
        return "not recorded (a study folder from an older cxrlab)"
    return " ".join(cl) if cl else "none (the study file's values)"


@_reads_result
def leakage_groups(data: StudyResult) -> list[tuple[str, list[str], dict[str, Any]]]:
    """Cells grouped by their patient overlap: (kind ok | bad | unknown, cell names, one cell's setup)."""
    groups: dict[str, tuple[str, list[str], dict[str, Any]]] = {}
    for name, r in data.cells.items():
        c = r.extras.get("setup")
        if not c:
            continue
        overlap = c.get("patient_overlap")
        kind = "unknown" if overlap is None else "bad" if any(overlap.values()) else "ok"
        key = repr((kind, overlap, c.get("splits")))
        groups.setdefault(key, (kind, [], c))[1].append(name)
    return list(groups.values())


def _leakage_lines(kind: str, c: dict[str, Any]) -> tuple[str, list[str], str]:
    """(title, lines, advice) of one leakage group, as plain text."""
    if kind == "unknown":
        return "Patient overlap between splits: not recorded", [], ""
    sp = c.get("splits") or {}
    if kind == "ok":
        pats = ", ".join(f"{s} {sp[s]['patients']}" for s in SPLITS if s in sp)
        return "No patient is in two splits", [f"Patients per split: {pats}."], ""
    ex = c.get("overlap_examples") or {}
    lines = [f"{k.replace('-', ' and ')}: {v} patient(s), e.g. {', '.join(ex.get(k, [])[:5]) or 'n/a'}"
             for k, v in c["patient_overlap"].items() if v]
    fix = ("add data.options.resplit=patient to the command line (one split by patient for every cell)"
           if c.get("source") == "kermany" else "a split by patient (a source without an official split, or "
           "data.split_file with a patient-level split)")
    advice = ("Images of these patients were trained and tested on, so the test metrics are likely optimistic. "
              f"It comes from the dataset's own split; to remove it: {fix}.")
    return "Patient leakage: patients are shared between splits", lines, advice


@_reads_result
def leakage_html(data: StudyResult) -> str:
    parts = []
    for kind, names, c in leakage_groups(data):
        title, lines, advice = _leakage_lines(kind, c)
        items = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
        parts.append(f"<div class='box {kind}'><strong>{html.escape(title)} (cells: {html.escape(', '.join(names))})"
                     f"</strong>{f'<ul>{items}</ul>' if items else ''}"
                     f"{f'<p>{html.escape(advice)}</p>' if advice else ''}</div>")
    return "".join(parts)


@_reads_result
def leakage_md(data: StudyResult) -> list[str]:
    md = []
    for kind, names, c in leakage_groups(data):
        title, lines, advice = _leakage_lines(kind, c)
        mark = {"bad": "WARNING: ", "ok": "", "unknown": ""}[kind]
        md += [f"> **{mark}{title}** (cells: {', '.join(names)})", ">"] + [f"> - {x}" for x in lines]
        md += ([">", f"> {advice}"] if advice else []) + [""]
    return md


@_reads_result
def published_table(data: StudyResult) -> tuple[list[str], list[list[str]]]:
    head = ["cell", "metric", "published", f"ours [{ci_label(data)}]",
            "ours - published"]
    rows = []
    for cell, pub in data.published.items():
        r = data.cells.get(cell)
        if r is None:
            continue
        # published ``macro`` is the macro AUC, ``accuracy`` the accuracy (multi-class / binary cells)
        for what, value, ours in ([("macro", pub.get("macro"), r.macro_auc), ("accuracy", pub.get("accuracy"), r.accuracy)]
                                  + [(lab, v, r.per_label[lab].auc if lab in r.per_label else None)
                                     for lab, v in pub.get("labels", {}).items()]):
            if value is None or (what not in ("macro", "accuracy") and what not in r.per_label):
                continue
            mine = ours.value if ours is not None else None
            rows.append([cell, what, present.published(value), present.ci(ours) if ours is not None else present.NA,
                         present.diff(mine - value) if finite(mine) else present.NA])
    return head, rows


@_reads_result
def localization_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    locs = {n: r.extras["localization"] for n, r in data.cells.items() if r.extras.get("localization")}
    if not locs:
        return None
    first = next(iter(locs.values()))["per_class"]
    order = sorted(first, key=lambda k: first[k].get("mean_box_area", 0.0))
    head = ["class (by mean box area)", "mean box area (px)"] + [f"{n} acc / prec" for n in locs]
    rows = [[lab, _f(first[lab].get("mean_box_area"), 0)]
            + [f"{_f(loc['per_class'].get(lab, {}).get('accuracy'), 2)} / "
               f"{_f(loc['per_class'].get(lab, {}).get('precision'), 2)}" for loc in locs.values()]
            for lab in order]
    return head, rows


def _audit_ci_label(data: StudyResult) -> str:
    """``95% CI, B=1000``: the B of the cells' audits (they resample with the study's B when ``study run`` ran)."""
    bs = sorted({r.extras["audit"].get("n_boot") for r in data.cells.values() if (r.extras.get("audit") or {}).get("n_boot")})
    return f"95% CI, B={'/'.join(str(b) for b in bs) or 'n/a'}"


@_reads_result
def audit_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    """Each cell's lung-energy share (CAM energy inside the lung masks) per label, its uniform-map baseline, and
    the audited images; a cell without an audit says why (``no masks (cxrlab audit --masks SPEC)``)."""
    cells = {n: r.extras.get("audit") or {} for n, r in data.cells.items()}
    if not cells:
        return None
    keys = list(dict.fromkeys(k for a in cells.values() for k in a.get("share", {})))
    keys = keys or ["-"]  # no cell audited: one column that says why, never a missing section
    ci = _audit_ci_label(data)
    one = len(keys) == 1
    head = ["cell", *(f"lung-energy share [{ci}]" if one else f"{k}: lung-energy share [{ci}]" for k in keys),
            "uniform map (same masks)", "audited positives / test images", "flagged (CI below uniform)"]
    rows = []
    for name, a in cells.items():
        cell = name + (" (baseline)" if name == data.baseline and data.transfer is None else "")
        if "share" not in a:
            rows.append([cell, *(a.get("missing", "no masks (cxrlab audit --masks SPEC)") for _ in keys), present.NA,
                         present.NA, present.NA])
            continue
        uni = "; ".join(f"{lab} {present.value(Estimate.from_dict(u))}" if not one else present.value(Estimate.from_dict(u))
                        for lab, u in a.get("uniform", {}).items())
        counts = a.get("counts") or {}
        rows.append([cell, *(_share(a, k) for k in keys), uni or present.NA,
                     f"{sum((a.get('n') or {}).values())} / {counts.get('test_images', present.NA)}",
                     ", ".join(a.get("flagged") or []) or "none"])
    return head, rows


def _share(a: dict[str, Any], key: str) -> str:
    """One cell's share of one label, or why there is none (no audited positive; every map without energy)."""
    if key not in a["share"]:
        return "no audited positive"
    est = Estimate.from_dict(a["share"][key], "value")
    if est.defined:
        return present.ci(est)
    zero, n = (a.get("no_energy") or {}).get(key), (a.get("n") or {}).get(key)
    return f"n/a (no CAM energy in {zero} of {n} maps)" if zero else present.NA


@_reads_result
def audit_tests_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    """Lung-energy share of cell A minus cell B (the baseline) per label, paired bootstrap on the same images."""
    pairs = data.audit.get("comparisons") or []
    rows = []
    bs = sorted({p.get("n_boot") for p in pairs} - {None})
    for pair in pairs:
        for r in pair["rows"]:
            d = Estimate.from_dict(r["diff"])
            diff = present.diff_ci(d) if d.defined else "n/a (a cell's maps have no energy there)"
            rows.append([pair["a"], pair["b"], r["label"], diff, _p(r["p"], pair.get("n_boot")),
                         f"{r['images']} (paired)" if r.get("paired") else "independent (different images)"])
    if not rows:
        return None
    head = ["cell A", "cell B", "label", f"lung-energy share diff A-B, observed [95% CI, B={'/'.join(map(str, bs))}]",
            "bootstrap p", "images"]
    return head, rows


def _audit_note(data: StudyResult) -> str:
    a = data.audit
    method = method_name(a.get("method") or "gradcam")
    masks = a.get("masks")
    where = (f"the masks at {masks}" if masks else "no masks: the cells were not audited (study run --masks SPEC, "
             "or cxrlab audit RUN --masks SPEC per cell)")
    return (f"Share of each cell's {method} CAM energy inside the lung masks ({where}), on the test images positive "
            "for the label (multi-class: its class; 'all test images': every audited test image with its true "
            "class's map), mean with a patient-bootstrap 95% CI; a uniform map on the same masks is the share of the "
            "image the lungs cover. The paired test resamples the images both cells audited (two models, the same "
            "images). A higher share is not a better model: see docs/audit.md for what it does and does not say.")


@_reads_result
def subgroups_table(data: StudyResult) -> tuple[list[str], list[list[str]]] | None:
    """Per cell with ``subgroups.json`` (``cxrlab subgroups``): per label and attribute, the worst ranked group
    (lowest AUC) and its AUC gap to the rest of the patients with CI and p (rows as in the run report's
    worst-group table, :func:`cxrlab.report.subgroups_report.worst_rows`)."""
    rows = []
    for name, r in data.cells.items():
        d = r.extras.get("subgroups")
        if d:
            rows += [[name, *row] for row in worst_rows(SubgroupResult.from_dict(d))]
    if not rows:
        return None
    return ["cell", *WORST_HEADER], rows


def _subgroups_note(data: StudyResult) -> str:
    done = [n for n, r in data.cells.items() if r.extras.get("subgroups")]
    rest = [n for n in data.cells if n not in done]
    return ("Per patient group at each cell's validation-chosen threshold (one per label, never re-tuned per "
            "group); the worst group is the lowest AUC among groups with enough positives and negatives; the gap is "
            "the group minus the rest of the patients with a patient-bootstrap 95% CI (p not adjusted for the "
            "number of groups). Full tables and forest plots: each cell's run report."
            + (f" Cells without a subgroup analysis (no sex/age in their predictions, or multi-class): "
               f"{', '.join(rest)}." if rest else ""))


@_reads_result
def axis_plot(data: StudyResult) -> str | None:
    """Headline metric vs the first axis, with 95% CI bars (one line per value of a second axis)."""
    if not data.axes:
        return None
    keys = list(data.axes)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    groups: dict[str, list[tuple[int, float, float, float]]] = {}
    for name, ov in data.overrides.items():
        metric, d = _headline(data.cells[name])
        if not d.defined:
            continue
        x = data.axes[keys[0]].index(ov[keys[0]])
        g = ", ".join(f"{k.split('.')[-1]}={ov[k]}" for k in keys[1:]) or metric
        groups.setdefault(g, []).append((x, d.value, d.low if d.has_ci else d.value, d.high if d.has_ci else d.value))
    for g, pts in groups.items():
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=g)
    ax.set_xticks(range(len(data.axes[keys[0]])), [str(v) for v in data.axes[keys[0]]])
    ax.set_xlabel(keys[0])
    ax.set_ylabel(f"{next(iter(data.cells.values())).headline[0]} ({ci_label(data)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return as_base64(fig)


@_reads_result
def curves_plot(data: StudyResult) -> str | None:
    cells = {n: r.extras["history"] for n, r in data.cells.items() if r.extras.get("history")}
    if not cells:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, h in cells.items():
        ep = [x["epoch"] for x in h]
        sel = h[-1].get("selection", "val_macro_auc")
        mark = "o" if len(ep) < 15 else None  # a 1-epoch cell is one point: without a marker it is not drawn
        axes[0].plot(ep, [x["val_loss"] for x in h], marker=mark, label=name)
        axes[1].plot(ep, [x.get(sel) for x in h], marker=mark, label=name)
        axes[1].set_ylabel(f"validation {sel.removeprefix('val_').replace('_', ' ')}")
    axes[0].set_ylabel("validation loss")
    epochs = [x["epoch"] for h in cells.values() for x in h]
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if max(epochs) - min(epochs) < 2:  # else the locator splits one epoch into fractions
            ax.set_xticks(range(min(epochs), max(epochs) + 1))
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("training curves per cell (same axes)")
    return as_base64(fig)


def _write_png(path: Path, b64: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(base64.b64decode(b64)))


def _html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    return page_table(head, rows, cls)  # the run page's table writer (cells are text here, escaped)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows])



def _setup_html(data: StudyResult) -> str:
    cl = command_text(data)
    root = f" <b>--root</b> <code>{html.escape(data.root)}</code>;" if data.root else ""
    out = (f"<p><b>Command-line overrides</b> (verbatim, for every cell):{root} <code>{html.escape(cl)}</code></p>"
           f"<p class='note'>The values that ran, cell by cell, are in <code>{StudyFolder.RESOLVED}</code>; the "
           f"study file as given in <code>{StudyFolder.PRESET}</code>"
           + (f", the recipe it builds on in <code>{StudyFolder.RECIPE}</code>" if data.base else "")
           + ".</p>")
    table = setup_table(data)
    return out + (_html_table(*table, cls="text") if table else "") + leakage_html(data)


def _setup_md(data: StudyResult) -> list[str]:
    root = f" `--root {data.root}`;" if data.root else ""
    md = [f"**Command-line overrides** (verbatim, for every cell):{root} `{command_text(data)}`", "",
          f"The values that ran, cell by cell, are in `{StudyFolder.RESOLVED}`; the study file as given in "
          f"`{StudyFolder.PRESET}`" + (f", the recipe it builds on in `{StudyFolder.RECIPE}`" if data.base
                                       else "") + ".", ""]
    table = setup_table(data)
    return md + ([_md_table(*table), ""] if table else []) + leakage_md(data)


def render_study(study: StudyFolder, data: StudyResult | dict[str, Any]) -> Path:
    """Write ``report.html`` (self-contained), ``report.md`` and its figures; return the HTML path."""
    data = coerce(StudyResult, data)
    ci = ci_label(data)
    resampled = {r.resampling for r in data.cells.values()} - {None}
    what = " and ".join(sorted(resampled)) or "patients where known, else images"
    sections: list[tuple[str, tuple[list[str], list[list[str]]] | None, str | None, str]] = [
        ("Results per cell", results_table(data), None,
         f"AUC with 95% bootstrap CIs ({ci.removeprefix('95% CI, ')} resamples of {what}); epochs run and the "
         "best epoch show each cell's budget (training stops when validation stops improving, within the "
         "recipe's cap)."),
        (f"Tests against the baseline ({data.baseline}) and requested pairs",
         tests_table(data) if data.transfer is None or data.comparisons else None, None,
         "DeLong test per label, Holm-adjusted over labels; paired bootstrap of the macro-AUC difference (the "
         "observed difference on the test set, with the resamples' 95% percentile interval); "
         "McNemar's exact test of accuracy for binary and multi-class cells. "
         "A resampling p-value with no crossing is reported as p < 1/B."),
        *transfer_sections(data.transfer),
        ("Published vs ours", published_table(data) if data.published else None, None,
         f"Published numbers: {data.published_source or 'the paper'}."
         + (" These cells ran on the synthetic phantom: the comparison shows the table's shape, not a "
            "reproduction." if data.phantom else "")),
        ("Operating point (binary cells)", operating_table(data), None,
         f"Each cell's threshold is chosen on its validation split (Youden), never on test; {ci}."),
        ("Confusion matrices", None, confusion_plot(data), ""),
        ("ROC curves", None, roc_plot(data), ""),
        ("Localisation by box size (CAM boxes, IoU >= 0.1)", localization_table(data), None,
         "Accuracy = share of images where a CAM box hits a true box; precision = hits / boxes; classes "
         "ordered by mean true-box area."),
        ("Where the model looks (lung-energy share, cxrlab audit)", audit_table(data), None, _audit_note(data)),
        ("Subgroups: the worst group per label (cxrlab subgroups)", subgroups_table(data), None,
         _subgroups_note(data)),
        (f"Lung-energy share against the baseline ({data.baseline})", audit_tests_table(data), None,
         "Paired bootstrap of the difference in mean lung-energy share (the observed difference on the shared test "
         "images, with the resamples' 95% percentile interval; patients resampled). A p-value with no crossing is "
         "reported as p < 1/B."),
        ("Metric vs axis", None, axis_plot(data), ""),
        ("Training curves", None, curves_plot(data), ""),
    ]
    title = data.title or data.name
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    md = [f"# {title}", ""]
    if data.phantom:
        parts.append(f"<div class='banner' role='alert'>{html.escape(PHANTOM_BANNER)}</div>")
        md += [f"> **{PHANTOM_BANNER}**", ""]
    lead = "The study file's description (the paper's setting; what ran is in the next section): "
    if data.description:
        parts.append(f"<p class='note'><i>{html.escape(lead)}</i>{html.escape(data.description)}</p>")
        md += [f"*{lead}*{data.description}", ""]
    if data.missing:
        parts.append(f"<p><b>Cells not finished:</b> {html.escape(', '.join(data.missing))}</p>")
        md += [f"**Cells not finished:** {', '.join(data.missing)}", ""]
    parts.append("<h2>What ran</h2>" + _setup_html(data))
    md += ["## What ran", "", *_setup_md(data)]
    for head, table, img, note in sections:
        if table is None and img is None:
            continue
        parts.append(f"<h2>{html.escape(head)}</h2><p class='note'>{html.escape(note)}</p>")
        md += [f"## {head}", "", note, ""]
        if table is not None:
            parts.append(_html_table(*table))
            md += [_md_table(*table), ""]
        if img is not None:
            parts.append(f"<p><img alt='{html.escape(head)}' src='data:image/png;base64,{img}'></p>")
            png = study.figure(head)
            _write_png(png, img)
            name = study.link(png)
            md += [f"![{head}]({name})", ""]
    parts.append("</body></html>")
    atomic_write_text(study.report_md, "\n".join(md) + "\n")
    return atomic_write_text(study.report_html, "\n".join(parts))
