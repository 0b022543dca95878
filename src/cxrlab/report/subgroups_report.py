"""The run report's "Subgroups" section: per patient group at the run's thresholds (``cxrlab subgroups``).

Built from a :class:`~cxrlab.evaluate.records.SubgroupResult`; numbers through :mod:`cxrlab.report.present`.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrlab.evaluate.records import Grouping, SubgroupResult, finite
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


def one_value(result: SubgroupResult) -> list[str]:
    """The attributes with one value in the data (``view`` = PA only): nothing to compare, one line on the page."""
    return [gr.name for gr in result.groupings.values() if len(gr.attributes) == 1 and len(gr.groups) < 2]


def _group_rows(result: SubgroupResult, label: str, one_way: bool) -> list[list[object]]:
    rows: list[list[object]] = []
    res = result.p_resolution
    single = set(one_value(result))
    for gr in result.groupings.values():
        if (len(gr.attributes) == 1) != one_way or single.intersection(gr.attributes):
            continue  # one value: a row of n/a, or in an intersection a copy of the other attribute's rows
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


def _ranked(gr: Grouping, label: str) -> list[str]:
    """The groups ranked for ``label`` (not flagged, AUC defined), lowest AUC first."""
    gls = {name: g.per_label[label] for name, g in gr.groups.items() if label in g.per_label}
    ranked = [name for name, gl in gls.items() if not gl.flagged and finite(gl.metrics["auc"].value)]
    return sorted(ranked, key=lambda name: gls[name].metrics["auc"].value)


def worst_rows(result: SubgroupResult) -> list[list[str]]:
    """Per label and one-attribute grouping: the worst ranked group, its AUC and AUC gap to the rest with CIs;
    "no gap" where the ranked groups tie (the analysis names no worst group then)."""
    rows = []
    for lab in result.labels:
        for gr in result.groupings.values():
            if len(gr.attributes) != 1:
                continue
            w = gr.worst.get(lab)
            ranked = _ranked(gr, lab)
            if w is None and len(ranked) >= 2:
                w, name = ranked[0], f"{gr.name}: no gap (the {len(ranked)} ranked groups tie)"
            elif w is not None:
                name = f"{gr.name} = {w}"
            else:
                continue
            gl = gr.groups[w].per_label[lab]
            rows.append([lab, name, present.ci(gl.metrics["auc"]), present.diff_ci(gl.vs_rest["auc"].diff),
                         present.pvalue(gl.vs_rest["auc"].p, result.p_resolution)])
    return rows


def unranked_note(result: SubgroupResult) -> str:
    """Why a label has no worst-group row for an attribute: fewer than two of its groups had enough cases."""
    missing: dict[str, list[str]] = {}
    for gr in result.groupings.values():
        if len(gr.attributes) == 1 and len(gr.groups) >= 2:
            for lab in result.labels:
                if gr.worst.get(lab) is None and len(_ranked(gr, lab)) < 2:
                    missing.setdefault(gr.name, []).append(lab)
    if not missing:
        return ""
    said = " or ".join(f"{attr} ({'every label' if labs == result.labels else ', '.join(labs)})"
                       for attr, labs in missing.items())
    return (f"No worst-group row for {said}: fewer than two of its groups had {result.min_count} positives and "
            f"{result.min_count} negatives for the label, so there is nothing to rank; each group's numbers are in "
            "the tables below.")


_RULE_NAMES = {"youden": "Youden's J", "max_f1": "max F1"}


def threshold_sentence(rule: str) -> str:
    """The threshold rule in words, one level of brackets: ``youden on validation (fixed 0.5 where undefined)
    (the run's, transported)`` -> ``the run's, chosen on its validation split by Youden's J (0.5 where that is
    undefined) and transported unchanged``."""
    notes = re.findall(r"\(([^()]*)\)", rule)
    base = re.sub(r"\s*\([^()]*\)", "", rule).strip()
    moved = any("transported" in n for n in notes)
    notes = [n.replace("fixed 0.5 where undefined", "0.5 where that is undefined") for n in notes
             if "transported" not in n]
    if base.endswith(" on validation"):
        names = [n.strip() for n in base.removesuffix(" on validation").split(",")]
        words = ", ".join(_RULE_NAMES.get(n, n.replace(":", " >= ")) for n in names)
        text = f"chosen on {'its' if moved else 'the'} validation split by {words}"
    else:
        text = f"rule: {base}"
    text += f" ({'; '.join(notes)})" if notes else ""
    return f"the run's, {text} and transported unchanged" if moved else text


def subgroups_section(result: SubgroupResult, figures: dict[str, Path]) -> str:
    """Worst group per label, then per label the groups (and intersections, folded) with the forest plot.

    Args:
        figures: label -> its forest plot (``RunFolder.figure("subgroups", figure_key(label))``).
    """
    worst = worst_rows(result)
    thr = ", ".join(f"{lab} {present.value(t)}" for lab, t in result.thresholds.items())
    parts = [f"<p>{present.value(result.n)} test images of {present.value(result.patients)} patients. "
             f"One threshold per label, {esc(threshold_sentence(result.threshold_rule))}: {esc(thr)}; "
             "the same for every group, never re-tuned. 95% CIs from "
             f"{present.value(result.n_boot)} patient-level bootstrap resamples; a gap is the group minus the "
             "rest of the patients (p: two-sided bootstrap, not adjusted for the number of groups) or minus "
             f"the median group. Groups with fewer than {result.min_count} positives or negatives are "
             "marked and not ranked.</p>"]
    single = one_value(result)
    if single:
        said = ", ".join(f"{a} ({next(iter(result.groupings[a].groups), '')})" for a in single)
        parts.append(f"<p>One value only in these images (nothing to compare, no rows): {esc(said)}.</p>")
    note = unranked_note(result)
    if worst or note:
        parts.append("<h3>Worst group per label (lowest AUC among the ranked groups)</h3>"
                     + (table(WORST_HEADER, worst) if worst else "")
                     + (f"<p class='muted'>{esc(note)}</p>" if note else ""))
    for lab in result.labels:
        parts.append(f"<h3>{esc(lab)}</h3>" + table(HEADER, _group_rows(result, lab, True)))
        inter = _group_rows(result, lab, False)
        if inter:
            parts.append("<details><summary>two-way intersections</summary>" + table(HEADER, inter) + "</details>")
        if lab in figures:
            parts.append(figure(figures[lab], f"{lab}: AUC gap per group"))
    return "".join(parts)
