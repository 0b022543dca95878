"""``cxrlab study report``: one table, tests and plots over a study's cells, published numbers beside ours.

Computes (from the cells' run folders only): per-cell AUC / accuracy with CIs,
DeLong per label of each cell against the baseline (Holm-adjusted) and the
paired macro-AUC bootstrap, the study's extra comparisons, localisation per
class ordered by box size, and the published-vs-ours differences; then writes
``study.json``, ``report.md`` and a self-contained ``report.html``
(:mod:`cxrlab.report.study`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.compare import compare_tables
from cxrlab.report.study import render_study
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write_json
from cxrlab.studies.spec import StudySpec, load_study
from cxrlab.workflows.ensemble import ensemble_runs
from cxrlab.workflows.evaluate import evaluate_run


def _cell_row(run: RunFolder) -> dict[str, Any]:
    rec = run.read_model_record()
    ev = run.read_json(run.evaluation_file) or {}
    summary = run.read_json(run.summary_file) or {}
    row: dict[str, Any] = {"task": rec.task, "labels": rec.labels, "n": ev.get("n"),
                           "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
                           "history": run.read_metrics(), "localization": summary.get("localization")}
    if rec.task == "multiclass":
        row["accuracy"] = ev.get("accuracy")
        row["macro_auc"] = ev.get("macro_auc")
        row["per_label"] = {k: {"auc": v.get("auc")} for k, v in ev.get("per_class", {}).items()}
        row["confusion_matrix"] = ev.get("confusion_matrix")
    else:
        row["macro_auc"] = ev.get("macro_auc")
        row["per_label"] = {k: {key: v.get(key) for key in ("auc", "ci_low", "ci_high", "sensitivity",
                                                              "specificity", "threshold")}
                            for k, v in ev.get("per_label", {}).items()}
        for key in ("binary", "accuracy", "confusion_matrix"):  # binary metrics where evaluation has them
            if key in ev:
                row[key] = ev[key]
    return row


def _compare(folder: Path, a: str, b: str, n_boot: int) -> dict[str, Any]:
    ra, rb = RunFolder(folder / "runs" / a), RunFolder(folder / "runs" / b)
    res = compare_tables(ra.read_predictions(), rb.read_predictions(), ra.read_model_record().labels,
                         rb.read_model_record().labels, a, b, n_boot=n_boot)
    res["n_boot"] = n_boot
    return res


def _post_steps(spec: StudySpec, folder: Path, cells: list[str]) -> list[str]:
    """Post-steps per cell, e.g. the frontal+lateral study ensemble: new prediction-only cells."""
    added = []
    for step in spec.post:
        ens = step.get("ensemble")
        if not ens:
            raise CxrlabError(f"study {spec.name}: unknown post step {sorted(step)} (known: ensemble)")
        by, how = ens.get("by", "study"), ens.get("how", "mean")
        for cell in ens.get("cells", cells):
            name = f"{cell}+{by}_{how}"
            ensemble_runs([folder / "runs" / cell], folder / "runs" / name, how=how, by=by)
            evaluate_run(folder / "runs" / name, n_boot=200)
            added.append(name)
    return added


def study_report(folder: str | Path, plan: Any = None, ref: str | Path | None = None, n_boot: int = 1000) -> Path:
    """Write the study's report from its run folders; return ``report.html``.

    Args:
        folder: ``studies/<name>``.
        plan: the :class:`~cxrlab.workflows.study.StudyPlan` (after ``study run``); else the spec is read
            from ``folder/study.yaml`` or ``ref``.
    """
    folder = Path(folder)
    if plan is not None:
        spec, baseline = plan.spec, plan.baseline
        names = [c.name for c in plan.cells]
        (folder / "study.yaml").write_text(spec.model_dump_json(indent=1))
    else:
        spec, _ = load_study(ref or folder / "study.yaml")
        names = [c.name for c in spec.grid() if (folder / "runs" / c.name / "summary.json").is_file()]
        baseline = spec.baseline_cell() if spec.baseline_cell() in names else (names[0] if names else "")
    finished = [n for n in names if RunFolder(folder / "runs" / n).summary_file.is_file()]
    if not finished:
        raise CxrlabError(f"{folder}: no finished cell to report (run cxrlab study run first)")
    extra = _post_steps(spec, folder, finished)
    rows = {n: _cell_row(RunFolder(folder / "runs" / n)) for n in [*finished, *extra]}
    comparisons = [{"a": n, "b": baseline, **_compare(folder, n, baseline, n_boot)}
                   for n in finished if n != baseline and baseline in finished]
    for a, b in spec.comparisons:
        if a in finished and b in finished and not any({c["a"], c["b"]} == {a, b} for c in comparisons):
            comparisons.append({"a": a, "b": b, **_compare(folder, a, b, n_boot), "requested": True})
    data = {"name": spec.name, "title": spec.title, "description": spec.description, "baseline": baseline,
            "axes": spec.axes, "cells": rows, "comparisons": comparisons, "published": spec.published,
            "published_source": spec.published_source, "phantom": bool(plan and plan.phantom),
            "missing": [n for n in names if n not in finished],
            "overrides": {c.name: c.overrides for c in spec.grid() if c.name in rows}}
    atomic_write_json(folder / "study.json", data)
    return render_study(folder, data)
