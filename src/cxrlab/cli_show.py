"""What the commands print: result tables (rich) and the list of files written.

Kept apart from :mod:`cxrlab.cli` so the command definitions stay short; nothing
here computes, it only shows what a workflow returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cxrlab.evaluate.records import (
    Comparison,
    Evaluation,
    Localization,
    RunSummary,
    Uncertainty,
    coerce,
)
from cxrlab.report import present

console = Console()


def fmt(v: object) -> str:
    """A cell: a number as :func:`cxrlab.report.present.value` writes it (floats to 3 places, n/a)."""
    return present.value(v)


def wrote(paths: list[Path | str]) -> None:
    """Every command says what it wrote where (one ``wrote PATH`` line per file or folder)."""
    for p in paths:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)


def _table(title: str, cols: list[str]) -> Table:
    t = Table(title=title)
    for i, col in enumerate(cols):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def run_summary(summary: dict[str, Any] | RunSummary) -> None:
    """A table of per-label AUC and, where present, localisation vs random boxes."""
    summary = coerce(RunSummary, summary)
    loc = summary.localization
    per = loc.per_class if loc else {}
    t = _table(f"{summary.name}: test split", ["label", "AUC", "loc. accuracy", "random boxes"])
    for lab, auc in summary.per_label_auc.items():
        p = per.get(lab)
        t.add_row(lab, fmt(auc), fmt(p.accuracy) if p else "-", fmt(p.random_accuracy) if p else "-")
    if len(summary.per_label_auc) > 1:
        t.add_section()
        t.add_row("[bold]mean", f"[bold]{present.ci(summary.macro_auc)}",
                  fmt(loc.mean_accuracy) if loc else "-", fmt(loc.random_mean_accuracy) if loc else "-")
    console.print(t)


def evaluation(run: Path, ev: dict[str, Any] | Evaluation, task: str) -> None:
    """The evaluation table of a run (multi-class, binary with its operating point, or multi-label)."""
    ev = coerce(Evaluation, ev, task)
    title = f"{run}: test split (n = {fmt(ev.n)})"
    if ev.task == "multiclass":
        t = _table(title, ["class", "precision", "recall", "F1", "AUC (95% CI)"])
        for lab, d in ev.per_class.items():
            t.add_row(lab, fmt(d.precision), fmt(d.recall), fmt(d.f1), present.ci(d.auc))
        console.print(t)
        console.print(f"accuracy {present.ci(ev.accuracy)} (95% CI)")
        return
    t = _table(title, ["label", "AUC (95% CI)", "threshold", "sens.", "spec.", "ECE"])
    for lab, d in ev.per_label.items():
        t.add_row(lab, present.ci(d.auc), fmt(d.threshold), fmt(d.sensitivity), fmt(d.specificity), fmt(d.ece))
    if ev.single is None:  # one label: macro and micro would only repeat it
        t.add_section()
        t.add_row("macro", present.ci(ev.macro_auc), "", "", "", "")
        t.add_row("micro", present.ci(ev.micro_auc), "", "", "", "")
    console.print(t)
    if ev.per_source:  # a run over several sources: each source's own patients resampled
        ts = _table("per source (test AUC, 95% CI)", ["source", "images", *ev.labels, "macro"])
        for name, r in ev.per_source.items():
            ts.add_row(name, fmt(r.n), *(present.ci(r.per_label[lab]) if lab in r.per_label else "not in this source"
                                         for lab in ev.labels), present.ci(r.macro_auc))
        console.print(ts)
    for lab, d in ev.per_label.items():
        op = d.operating_point
        if op:
            rates = "  ".join(f"{k} {present.ci(e)}" for k, e in op.rates.items())
            c = op.confusion
            console.print(f"{lab} at threshold {fmt(op.threshold)}: {rates}\n"
                          f"confusion: TP {c['tp']}  FP {c['fp']}  TN {c['tn']}  FN {c['fn']}")


def comparison(r: dict[str, Any] | Comparison) -> None:
    """DeLong per label and the paired macro-AUC bootstrap (p below 1/B printed as ``p < 1/B``)."""
    r = coerce(Comparison, r)
    t = _table(f"{r.run_a} vs {r.run_b} (n = {r.n})",
               ["label", "AUC A", "AUC B", "diff (95% CI)", "p (DeLong)", "p (Holm)"])
    for lab, d in r.per_label.items():
        t.add_row(lab, fmt(d.auc_a), fmt(d.auc_b), present.diff_ci(d.difference), present.pvalue(d.p),
                  present.pvalue(d.p_holm))
    console.print(t)
    console.print(f"macro AUC difference {present.diff_ci(r.macro, digits=4)} (95% CI), paired bootstrap "
                  f"{present.p_text(r.p, r.p_resolution)}")
    console.print(r.note)


def localization(run: Path, s: dict[str, Any] | Localization, method: str, iou: float) -> None:
    """CAM box scores per class against random boxes."""
    s = coerce(Localization, s)
    t = _table(f"{run}: {method} boxes, IoU >= {iou} ({s.cases} cases)",
               ["class", "n", "accuracy", "random acc.", "precision", "random prec."])
    for lab, d in s.per_class.items():
        t.add_row(lab, str(d.n), *(fmt(v) for v in (d.accuracy, d.random_accuracy, d.precision, d.random_precision)))
    t.add_section()
    t.add_row("mean", str(s.cases), fmt(s.mean_accuracy), fmt(s.random_mean_accuracy),
              fmt(s.mean_precision), fmt(s.random_mean_precision))
    console.print(t)


def uncertainty(run: Path, s: dict[str, Any] | Uncertainty, passes: int, threshold: float) -> None:
    """MC-dropout summary per label."""
    s = coerce(Uncertainty, s)
    t = _table(f"{run}: MC dropout, {passes} passes, std > {threshold} = uncertain",
               ["label", "uncertain", "AUC all", "AUC confident", "AUC uncertain"])
    for lab, d in s.per_label.items():
        t.add_row(lab, present.percent(d.uncertain_fraction), fmt(d.auc_all), fmt(d.auc_confident),
                  fmt(d.auc_uncertain))
    console.print(t)
