"""A cross-site study's sections of the study report: the matrix, its heat map and the own-vs-other tests.

Draws only; the numbers are the :class:`~cxrlab.evaluate.records.TransferResult` that
:func:`cxrlab.workflows.transfer.transfer_result` builds.  Each section is ``(title, table, png, note)``
as :func:`cxrlab.report.study.render_study` lays them out.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cxrlab.evaluate.records import Comparison, TransferResult  # noqa: E402
from cxrlab.report import present  # noqa: E402
from cxrlab.report.plots import as_base64  # noqa: E402

Section = tuple[str, tuple[list[str], list[list[str]]] | None, str | None, str]

MATRIX = "Across sites: macro AUC, trained on (rows) x tested on (columns)"
TESTS = "Own site vs other sites, on the same images"
PER_LABEL = "Across sites per label"


def _trained(t: TransferResult, cell: str) -> str:
    on = t.trained_on[cell]
    return f"{cell} ({', '.join(on)})" if len(on) > 1 else cell


def _gap(t: TransferResult, cell: str) -> str:
    """The cell's own-site macro AUC minus its mean on the sites it never saw (a point summary of its row)."""
    own = [e.macro.value for e in t.entries if e.cell == cell and e.own and e.macro.defined]
    other = [e.macro.value for e in t.entries if e.cell == cell and not e.own and e.macro.defined]
    return present.diff(float(np.mean(own) - np.mean(other))) if own and other else present.NA


def matrix_table(t: TransferResult) -> tuple[list[str], list[list[str]]]:
    ci = f"95% CI, B={t.n_boot}"
    head = ["trained on", *(f"{s} [{ci}]" for s in t.sites), "own - other (mean)"]
    rows = []
    for cell in t.cells:
        row = [_trained(t, cell)]
        for site in t.sites:
            e = t.entry(cell, site)
            if e is None:
                row.append("not scored")
                continue
            text = present.ci(e.macro) + (" (own)" if e.own else "")
            if e.duplicates:
                text += f"; {e.duplicates} copies of its training images"
            row.append(text)
        rows.append([*row, _gap(t, cell)])
    return head, rows


def per_label_table(t: TransferResult) -> tuple[list[str], list[list[str]]]:
    labels = list(dict.fromkeys(lab for e in t.entries for lab in e.per_label))
    head = ["trained on", "label", *t.sites]
    rows = []
    for cell in t.cells:
        for lab in labels:
            cells = []
            for site in t.sites:
                e = t.entry(cell, site)
                est = e.per_label.get(lab) if e is not None else None
                cells.append(present.NA if est is None else present.ci(est) + (" (own)" if e.own else ""))
            rows.append([_trained(t, cell), lab, *cells])
    return head, rows


def tests_table(t: TransferResult) -> tuple[list[str], list[list[str]]]:
    head = ["tested on", "own model", "other model", "images (paired)",
            f"macro AUC own - other [95% CI, B={t.n_boot}]", "paired bootstrap p", "DeLong per label (Holm p)"]
    rows = []
    for c in t.comparisons:
        r = Comparison.from_dict(c)
        per = "; ".join(f"{lab} {present.diff(d.diff)} ({present.pvalue(d.p_holm)})" for lab, d in r.per_label.items())
        n = f"{r.n}" + (f" ({c.get('unpaired')} unpaired left out)" if c.get("unpaired") else "")
        rows.append([c["site"], c["a"], c["b"], n, present.diff_ci(r.macro, digits=4),
                     present.pvalue(r.p, r.p_resolution), per])
    return head, rows


def matrix_plot(t: TransferResult) -> str | None:
    """Heat map of the matrix: each entry's macro AUC and CI, own-site entries outlined."""
    if not t.entries:
        return None
    values = np.full((len(t.cells), len(t.sites)), np.nan)
    fig, ax = plt.subplots(figsize=(1.9 * len(t.sites) + 2.6, 0.75 * len(t.cells) + 1.6))
    for i, cell in enumerate(t.cells):
        for j, site in enumerate(t.sites):
            e = t.entry(cell, site)
            if e is None or not e.macro.defined:
                continue
            values[i, j] = e.macro.value
            ci = f"\n[{e.macro.low:.2f}, {e.macro.high:.2f}]" if e.macro.has_ci else ""
            ax.text(j, i, f"{e.macro.value:.3f}{ci}", ha="center", va="center", fontsize=8,
                    color="white" if e.macro.value < 0.7 else "black")
            if e.own:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    finite_values = values[np.isfinite(values)]
    low = min(0.5, float(finite_values.min())) if finite_values.size else 0.5
    im = ax.imshow(values, cmap="viridis", vmin=low, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(t.sites)), t.sites)
    ax.set_yticks(range(len(t.cells)), [_trained(t, c) for c in t.cells])
    ax.set_xlabel("tested on (the site's test split)")
    ax.set_ylabel("trained on")
    fig.colorbar(im, ax=ax, label="macro AUC")
    ax.set_title("macro AUC [95% CI]; outlined: the site the model trained on", fontsize=10)
    return as_base64(fig)


def transfer_sections(t: TransferResult | None) -> list[Section]:
    """The cross-site sections (none for a study without sites)."""
    if t is None:
        return []
    missing = f" Not scored: {', '.join(t.missing)}." if t.missing else ""
    notes = {
        MATRIX: ("Every model scored on every site's test split with cxrlab evaluate --on (the model's own "
                 "preprocessing; labels mapped by name through the label vocabulary). A column holds the same "
                 "images for every row; read down a column to see what a site would get from a model trained "
                 "elsewhere. The macro AUC averages the labels the site can score (both classes present); "
                 "patients resampled for the CIs. 'own - other' is a row's own-site macro AUC minus its mean on "
                 "the sites it never saw." + missing),
        TESTS: ("For each site, the model trained only there against each model that never saw it, on the images "
                "both scored: the paired bootstrap of the macro-AUC difference (observed, with the resamples' 95% "
                "percentile interval; patients resampled) and DeLong's test per label, Holm-adjusted over labels. "
                "A positive difference: the own-site model is better. A p-value with no crossing is p < 1/B. Two "
                "models trained apart also differ by chance (their samples and seeds), in either direction: a "
                "site effect is a drop across the matrix, not one significant pair."),
        PER_LABEL: "Per-label AUC [95% CI] of each model on each site; 'n/a': the site lacks the label.",
    }
    return [(MATRIX, matrix_table(t), matrix_plot(t), notes[MATRIX]),
            (TESTS, tests_table(t) if t.comparisons else None, None, notes[TESTS]),
            (PER_LABEL, per_label_table(t), None, notes[PER_LABEL])]
