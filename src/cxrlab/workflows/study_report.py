"""``cxrlab study report``: one table, tests and plots over a study's cells, published numbers beside ours.

Computes (from the cells' run folders only): per-cell AUC / accuracy with CIs
(binary cells: accuracy and confusion at the validation-chosen threshold),
DeLong per label of each cell against the baseline (Holm-adjusted), the
paired macro-AUC bootstrap and McNemar's test of accuracy (binary and
multi-class cells), the study's extra comparisons, localisation per
class ordered by box size, and the published-vs-ours differences; then writes
``study.json``, ``report.md`` and a self-contained ``report.html``
(:mod:`cxrlab.report.study`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.compare import compare_decisions, compare_tables
from cxrlab.evaluate.operating import confusion_matrix
from cxrlab.report.study import render_study
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write_json, atomic_write_text
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
        op = _operating_point(ev) if rec.task == "binary" else None
        if op:  # binary: accuracy with CI and confusion at the validation-chosen threshold
            row["operating_point"] = op
            row["accuracy"] = op["accuracy"]
            row["confusion_matrix"] = confusion_matrix(op["confusion"])
    return row


def _operating_point(ev: dict[str, Any]) -> dict[str, Any] | None:
    """A binary run's decisions at its validation-chosen threshold (None before evaluation had them)."""
    return next(iter(ev.get("per_label", {}).values()), {}).get("operating_point")


def _threshold(run: RunFolder) -> float | None:
    op = _operating_point(run.read_json(run.evaluation_file) or {})
    return op["threshold"] if op else None


def _compare(folder: Path, a: str, b: str, n_boot: int) -> dict[str, Any]:
    ra, rb = RunFolder(folder / "runs" / a), RunFolder(folder / "runs" / b)
    pa, pb = ra.read_predictions(), rb.read_predictions()
    rec_a, rec_b = ra.read_model_record(), rb.read_model_record()
    res = compare_tables(pa, pb, rec_a.labels, rec_b.labels, a, b, n_boot=n_boot)
    res["n_boot"] = n_boot
    task = rec_a.task
    ta, tb = _threshold(ra), _threshold(rb)
    decided = task == "multiclass" or (task == "binary" and ta is not None and tb is not None)
    if decided and task == rec_b.task:  # paired accuracy: McNemar
        res["accuracy"] = compare_decisions(pa, pb, res["labels"], task, ta, tb, a, b)
    return res


def _post_steps(spec: StudySpec, folder: Path, cells: list[str], n_boot: int) -> list[str]:
    """Post-steps: prediction-only cells, e.g. the frontal+lateral study ensemble of each cell
    (``cells``, default all) or an ensemble of several cells (``groups: {name: [cell, ...]}``)."""
    added = []
    for step in spec.post:
        ens = step.get("ensemble")
        if not ens:
            raise CxrlabError(f"study {spec.name}: unknown post step {sorted(step)} (known: ensemble)")
        by, how = ens.get("by"), ens.get("how", "mean")
        jobs = {name: members for name, members in ens.get("groups", {}).items()
                if all(m in cells for m in members)}  # groups whose cells all finished
        if "groups" not in ens:
            by = by or "study"
            jobs = {f"{cell}+{by}_{how}": [cell] for cell in ens.get("cells", cells) if cell in cells}
        for name, members in jobs.items():
            ensemble_runs([folder / "runs" / m for m in members], folder / "runs" / name, how=how, by=by)
            evaluate_run(folder / "runs" / name, n_boot=n_boot)
            added.append(name)
    return added


def study_report(folder: str | Path, plan: Any = None, ref: str | Path | None = None,
                 n_boot: int | None = None) -> Path:
    """Write the study's report from its run folders; return ``report.html``.

    Args:
        folder: ``studies/<name>``.
        plan: the :class:`~cxrlab.workflows.study.StudyPlan` (after ``study run``); else the spec is read
            from ``folder/study.yaml`` or ``ref``.
        n_boot: bootstrap resamples of the paired tests and post-step CIs (default: the study's ``n_boot``).
    """
    folder = Path(folder)
    if plan is not None:
        spec, baseline = plan.spec, plan.baseline
        names = [c.name for c in plan.cells]
        atomic_write_text(folder / "study.yaml", spec.model_dump_json(indent=1))
        phantom = plan.phantom
    else:
        spec, _ = load_study(ref or folder / "study.yaml")
        phantom = (folder / "data.json").is_file()  # the phantom form writes its dataset's marker there
        names = [c.name for c in spec.grid() if (folder / "runs" / c.name / "summary.json").is_file()]
        wanted = (spec.phantom.baseline if phantom and spec.phantom else None) or spec.baseline_cell()
        baseline = wanted if wanted in names else (names[0] if names else "")
    finished = [n for n in names if RunFolder(folder / "runs" / n).summary_file.is_file()]
    if not finished:
        raise CxrlabError(f"{folder}: no finished cell to report (run cxrlab study run first)")
    n_boot = n_boot or spec.n_boot
    extra = _post_steps(spec, folder, finished, n_boot)
    rows = {n: _cell_row(RunFolder(folder / "runs" / n)) for n in [*finished, *extra]}
    comparisons = [{"a": n, "b": baseline, **_compare(folder, n, baseline, n_boot)}
                   for n in finished if n != baseline and baseline in finished]
    for a, b in spec.comparisons:
        if a in finished and b in finished and not any({c["a"], c["b"]} == {a, b} for c in comparisons):
            comparisons.append({"a": a, "b": b, **_compare(folder, a, b, n_boot), "requested": True})
    data = {"name": spec.name, "title": spec.title, "description": spec.description, "baseline": baseline,
            "axes": spec.axes, "cells": rows, "comparisons": comparisons, "published": spec.published,
            "published_source": spec.published_source, "phantom": phantom,
            "missing": [n for n in names if n not in finished],
            "overrides": {c.name: c.overrides for c in spec.grid() if c.name in rows}}
    atomic_write_json(folder / "study.json", data)
    return render_study(folder, data)
