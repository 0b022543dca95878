"""What the commands print: result tables (rich) and the list of files written.

Kept apart from :mod:`cxrlab.cli` so the command definitions stay short; nothing
here computes, it only shows what a workflow returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def fmt(v: object) -> str:
    """A cell: floats to 3 places, None and NaN as n/a."""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def wrote(paths: list[Path | str]) -> None:
    """Every command says what it wrote where (one ``wrote PATH`` line per file or folder)."""
    for p in paths:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)


def _table(title: str, cols: list[str]) -> Table:
    t = Table(title=title)
    for i, col in enumerate(cols):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def run_summary(summary: dict[str, Any]) -> None:
    """A table of per-label AUC and, where present, localisation vs random boxes."""
    loc = summary.get("localization") or {}
    per = loc.get("per_class", {})
    t = _table(f"{summary.get('name', 'run')}: test split", ["label", "AUC", "loc. accuracy", "random boxes"])
    for lab, auc in summary["per_label_auc"].items():
        p = per.get(lab, {})
        t.add_row(lab, fmt(auc), fmt(p.get("accuracy", "-")), fmt(p.get("random_accuracy", "-")))
    if len(summary["per_label_auc"]) > 1:
        t.add_section()
        t.add_row("[bold]mean", f"[bold]{fmt(summary['macro_auc'])}",
                  fmt(loc.get("mean_accuracy", "-")), fmt(loc.get("random_mean_accuracy", "-")))
    console.print(t)


def _ci(d: dict[str, Any]) -> str:
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return f"{fmt(lo)}-{fmt(hi)}" if lo is not None else ""


def evaluation(run: Path, ev: dict[str, Any], task: str) -> None:
    """The evaluation table of a run (multi-class, binary with its operating point, or multi-label)."""
    title = f"{run}: test split (n = {ev['n']})"
    if task == "multiclass":
        t = _table(title, ["class", "precision", "recall", "F1", "AUC"])
        for lab, d in ev["per_class"].items():
            t.add_row(lab, *(fmt(d[k]) for k in ("precision", "recall", "f1", "auc")))
        console.print(t)
        a = ev["accuracy"]
        console.print(f"accuracy {a['value']:.3f} (95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f})")
        return
    t = _table(title, ["label", "AUC", "95% CI", "threshold", "sens.", "spec.", "ECE"])
    for lab, d in ev["per_label"].items():
        t.add_row(lab, fmt(d["auc"]), _ci(d), fmt(d["threshold"]), fmt(d["sensitivity"]), fmt(d["specificity"]),
                  fmt(d["ece"]))
    if len(ev["per_label"]) > 1:  # one label: macro and micro would only repeat it
        t.add_section()
        for k in ("macro_auc", "micro_auc"):
            t.add_row(k.split("_")[0], fmt(ev[k]["auc"]), _ci(ev[k]), "", "", "", "")
    console.print(t)
    for lab, d in ev["per_label"].items():
        op = d.get("operating_point")
        if op:
            rates = "  ".join(f"{k} {op[k]['value']:.3f} ({fmt(op[k]['ci_low'])}-{fmt(op[k]['ci_high'])})"
                              for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv"))
            c = op["confusion"]
            console.print(f"{lab} at threshold {op['threshold']:.3f}: {rates}\n"
                          f"confusion: TP {c['tp']}  FP {c['fp']}  TN {c['tn']}  FN {c['fn']}")


def comparison(r: dict[str, Any]) -> None:
    """DeLong per label and the paired macro-AUC bootstrap (p below 1/B printed as ``p < 1/B``)."""
    from cxrlab.evaluate.stats import format_p

    t = _table(f"{r['run_a']} vs {r['run_b']} (n = {r['n']})",
               ["label", "AUC A", "AUC B", "diff", "p (DeLong)", "p (Holm)"])
    for lab, d in r["per_label"].items():
        t.add_row(lab, fmt(d["auc_a"]), fmt(d["auc_b"]), f"{d['diff']:+.3f}", format_p(d["p"]).removeprefix("p = "),
                  format_p(d["p_holm"]).removeprefix("p = "))
    console.print(t)
    m = r["macro_auc_difference"]
    console.print(f"macro AUC difference {m['diff_mean']:+.4f} (95% CI {m['ci_low']:+.4f} to "
                  f"{m['ci_high']:+.4f}), paired bootstrap {format_p(m['p'], m.get('p_resolution'))}")
    console.print(r["note"])


def localization(run: Path, s: dict[str, Any], method: str, iou: float) -> None:
    """CAM box scores per class against random boxes."""
    t = _table(f"{run}: {method} boxes, IoU >= {iou} ({s['cases']} cases)",
               ["class", "n", "accuracy", "random acc.", "precision", "random prec."])
    for lab, d in s["per_class"].items():
        t.add_row(lab, str(d["n"]), *(fmt(d[k]) for k in ("accuracy", "random_accuracy", "precision",
                                                           "random_precision")))
    t.add_section()
    t.add_row("mean", str(s["cases"]), fmt(s["mean_accuracy"]), fmt(s["random_mean_accuracy"]),
              fmt(s["mean_precision"]), fmt(s["random_mean_precision"]))
    console.print(t)


def uncertainty(run: Path, s: dict[str, Any], passes: int, threshold: float) -> None:
    """MC-dropout summary per label."""
    t = _table(f"{run}: MC dropout, {passes} passes, std > {threshold} = uncertain",
               ["label", "uncertain", "AUC all", "AUC confident", "AUC uncertain"])
    for lab, d in s["per_label"].items():
        t.add_row(lab, f"{d['uncertain_fraction']:.1%}", fmt(d["auc_all"]), fmt(d["auc_confident"]),
                  fmt(d["auc_uncertain"]))
    console.print(t)
