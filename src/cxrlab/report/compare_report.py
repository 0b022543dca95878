"""The comparison page of ``cxrlab compare``: overlaid ROC curves per label and a forest plot of the
AUC differences with 95% CIs, next to the table; one self-contained HTML file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.stats import format_p
from cxrlab.report import plots_eval
from cxrlab.report.html import esc, figure, table, write_report
from cxrlab.run import RunFolder

Z95 = 1.959963984540054


def _diff_ci(d: dict[str, Any]) -> tuple[float, float, float]:
    """DeLong difference with its normal 95% CI."""
    diff, se = d.get("diff", float("nan")), d.get("se", float("nan"))
    return diff, diff - Z95 * se, diff + Z95 * se


def _section(a: RunFolder, b: RunFolder, r: dict[str, Any], tmp: Path, k: int) -> str:
    labels = r["labels"]
    pa = a.read_predictions()
    pb = b.read_predictions().set_index("image").loc[pa["image"]].reset_index()
    y, sa, _ = split_prediction_table(pa, labels)
    _, sb, _ = split_prediction_table(pb, labels)
    names = {"A": r["run_a"], "B": r["run_b"]}
    rocs = plots_eval.compare_rocs(y, {f"A: {Path(names['A']).name}": sa, f"B: {Path(names['B']).name}": sb},
                                   labels, tmp / f"roc_{k}.png")
    m = r["macro_auc_difference"]
    rows_forest = [(lab, *_diff_ci(r["per_label"][lab])) for lab in labels]
    if len(labels) > 1:
        rows_forest.append(("macro (paired bootstrap)", m["diff_mean"], m["ci_low"], m["ci_high"]))
    forest = plots_eval.forest(rows_forest, tmp / f"forest_{k}.png")
    rows = []
    for lab in labels:
        d = r["per_label"][lab]
        diff, lo, hi = _diff_ci(d)
        rows.append([lab, d["auc_a"], d["auc_b"], f"{diff:+.3f} ({lo:+.3f} to {hi:+.3f})",
                     format_p(d["p"]).removeprefix("p = "), format_p(d.get("p_holm")).removeprefix("p = ")])
    macro = (f"<p>Macro-AUC difference (A - B) {m['diff_mean']:+.4f}, 95% CI {m['ci_low']:+.4f} to "
             f"{m['ci_high']:+.4f}, paired bootstrap {esc(format_p(m['p'], m.get('p_resolution')))} "
             f"({m.get('n_boot', 'n/a')} resamples of {'patients' if 'patient' in pa else 'images'}).</p>")
    return (f"<p><b>A</b> = <code>{esc(names['A'])}</code>, <b>B</b> = <code>{esc(names['B'])}</code>; "
            f"n = {r['n']} shared test images.</p>"
            + table(["label", "AUC A", "AUC B", "difference (95% CI, DeLong)", "p (DeLong)", "p (Holm)"], rows)
            + macro + f"<p class='muted'>{esc(r['note'])}</p>"
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
