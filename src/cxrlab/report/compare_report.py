"""The comparison page of ``cxrlab compare``: overlaid ROC curves per label and a forest plot of the
AUC differences with 95% CIs, next to the table; one self-contained HTML file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.records import Comparison
from cxrlab.report import plots_eval, present
from cxrlab.report.html import esc, figure, table, write_report
from cxrlab.run import RunFolder


def _section(a: RunFolder, b: RunFolder, raw: dict[str, Any], tmp: Path, k: int) -> str:
    r = Comparison.from_dict(raw)
    labels = list(r.per_label)
    pa = a.read_predictions()
    pb = b.read_predictions().set_index("image").loc[pa["image"]].reset_index()
    y, sa, _ = split_prediction_table(pa, labels)
    _, sb, _ = split_prediction_table(pb, labels)
    names = {"A": r.run_a, "B": r.run_b}
    rocs = plots_eval.compare_rocs(y, {f"A: {Path(names['A']).name}": sa, f"B: {Path(names['B']).name}": sb},
                                   labels, tmp / f"roc_{k}.png")
    m = r.macro
    rows_forest = [(lab, d.difference.value, d.difference.low, d.difference.high) for lab, d in r.per_label.items()]
    if len(labels) > 1:
        rows_forest.append(("macro (paired bootstrap)", m.value, m.low, m.high))
    forest = plots_eval.forest(rows_forest, tmp / f"forest_{k}.png")
    rows = [[lab, d.auc_a, d.auc_b, present.diff_ci(d.difference), present.pvalue(d.p), present.pvalue(d.p_holm)]
            for lab, d in r.per_label.items()]
    macro = (f"<p>Macro-AUC difference (A - B) {esc(present.diff_ci(m, digits=4))} (95% CI), paired bootstrap "
             f"{esc(present.p_text(r.p, r.p_resolution))} ({present.value(m.n_boot)} resamples of "
             f"{'patients' if 'patient' in pa else 'images'}).</p>")
    return (f"<p><b>A</b> = <code>{esc(names['A'])}</code>, <b>B</b> = <code>{esc(names['B'])}</code>; "
            f"n = {r.n} shared test images.</p>"
            + table(["label", "AUC A", "AUC B", "difference (95% CI, DeLong)", "p (DeLong)", "p (Holm)"], rows)
            + macro + f"<p class='muted'>{esc(r.note)}</p>"
            + figure(forest, "forest plot of AUC differences")
            + figure(rocs, "overlaid ROC curves"))


def render_comparison(first: RunFolder, others: list[RunFolder], results: list[dict[str, Any]],
                      path: Path) -> Path:
    """Write the comparison page of ``first`` against each of ``others`` (``results`` from compare)."""
    with tempfile.TemporaryDirectory(prefix="cxrlab-compare-") as tmp:
        sections = [(f"{Path(r['run_a']).name} vs {Path(r['run_b']).name}", _section(first, b, r, Path(tmp), k))
                    for k, (b, r) in enumerate(zip(others, results, strict=True))]
        return write_report(Path(path), f"cxrlab compare: {first.path.name}", sections,
                            subtitle="DeLong test per label (Holm-adjusted across labels), paired bootstrap of the "
                                     "macro AUC; differences are A - B")
