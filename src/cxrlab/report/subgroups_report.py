"""The run report's "Subgroups" section: per patient group at the run's thresholds (``cxrlab subgroups``).

Built from a :class:`~cxrlab.evaluate.records.SubgroupResult`; numbers through :mod:`cxrlab.report.present`.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrlab.evaluate.records import SubgroupResult
from cxrlab.report import present
from cxrlab.report.html import esc, figure, table


def figure_key(label: str) -> str:
    """A label as part of a file name (``Pleural Effusion`` -> ``Pleural_Effusion``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def forest_rows(result: SubgroupResult, label: str) -> list[tuple[str, float, float, float]]:
    """(group, AUC gap to the rest, CI low, CI high) of every one-attribute group (few cases: marked)."""
    rows = []
    for gr in result.groupings.values():
        if len(gr.attributes) != 1 or len(gr.groups) < 2:
            continue
        for name, g in gr.groups.items():
            gl = g.per_label.get(label)
            if gl is None or "auc" not in gl.vs_rest:
                continue
            d = gl.vs_rest["auc"].diff
            rows.append((f"{gr.name} = {name}" + (" (few)" if gl.flagged else ""), d.value, d.low, d.high))
    return rows


def _group_rows(result: SubgroupResult, label: str, one_way: bool) -> list[list[object]]:
    rows: list[list[object]] = []
    res = result.p_resolution
    for gr in result.groupings.values():
        if (len(gr.attributes) == 1) != one_way:
            continue
        for name, g in gr.groups.items():
            gl = g.per_label.get(label)
            if gl is None:
                continue
            m = gl.metrics
            gap = gl.vs_rest.get("auc")
            med = gl.vs_median.get("tpr")
            mark = " (few: not ranked)" if gl.flagged else (" (worst)" if gr.worst.get(label) == name else "")
            rows.append([f"{gr.name} = {name}{mark}", g.images, g.patients, f"{gl.positives} / {gl.negatives}",
                         present.ci(m["prevalence"]), present.ci(m["auc"]), present.ci(m["tpr"]),
                         present.ci(m["fpr"]), present.ci(m["ppv"]),
                         present.diff_ci(gap.diff) if gap else present.NA,
                         present.pvalue(gap.p, res) if gap else present.NA,
                         present.diff_ci(med.diff) if med else present.NA])
    return rows


HEADER = ["group", "images", "patients", "pos / neg", "prevalence", "AUC", "TPR", "FPR", "PPV",
          "AUC - rest", "p", "TPR - median group"]


#: Columns of :func:`worst_rows` (the run report's and the study report's worst-group table).
WORST_HEADER = ["label", "group", "AUC", "AUC - rest", "p"]


def worst_rows(result: SubgroupResult) -> list[list[str]]:
    """Per label and one-attribute grouping: the worst ranked group, its AUC and AUC gap to the rest with CIs."""
    rows = []
    for lab in result.labels:
        for gr in result.groupings.values():
            w = gr.worst.get(lab)
            if len(gr.attributes) == 1 and w is not None:
                gl = gr.groups[w].per_label[lab]
                rows.append([lab, f"{gr.name} = {w}", present.ci(gl.metrics["auc"]),
                             present.diff_ci(gl.vs_rest["auc"].diff),
                             present.pvalue(gl.vs_rest["auc"].p, result.p_resolution)])
    return rows


def subgroups_section(result: SubgroupResult, figures: dict[str, Path]) -> str:
    """Worst group per label, then per label the groups (and intersections, folded) with the forest plot.

    Args:
        figures: label -> its forest plot (``RunFolder.figure("subgroups", figure_key(label))``).
    """
    worst = worst_rows(result)
    thr = ", ".join(f"{lab} {present.value(t)}" for lab, t in result.thresholds.items())
    parts = [f"<p>{present.value(result.n)} test images of {present.value(result.patients)} patients. "
             f"One threshold per label, chosen on validation ({esc(result.threshold_rule)}): {esc(thr)}; "
             "the same for every group, never re-tuned. 95% CIs from "
             f"{present.value(result.n_boot)} patient-level bootstrap resamples; a gap is the group minus the "
             "rest of the patients (p: two-sided bootstrap, not adjusted for the number of groups) or minus "
             f"the median group. Groups with fewer than {result.min_count} positives or negatives are "
             "marked and not ranked.</p>"]
    if worst:
        parts.append("<h3>Worst group per label (lowest AUC among the ranked groups)</h3>"
                     + table(WORST_HEADER, worst))
    for lab in result.labels:
        parts.append(f"<h3>{esc(lab)}</h3>" + table(HEADER, _group_rows(result, lab, True)))
        inter = _group_rows(result, lab, False)
        if inter:
            parts.append("<details><summary>two-way intersections</summary>" + table(HEADER, inter) + "</details>")
        if lab in figures:
            parts.append(figure(figures[lab], f"{lab}: AUC gap per group"))
    return "".join(parts)
