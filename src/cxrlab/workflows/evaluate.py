"""Evaluate and compare finished runs from their prediction tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.compare import compare_tables
from cxrlab.evaluate.evaluate import evaluate_tables
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.workflows.experiment import record_thresholds


def evaluate_run(run_dir: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Re-evaluate a run: AUCs with CIs, validation-chosen thresholds, calibration.

    Writes ``evaluation.json``, stores the thresholds chosen on validation in
    ``model.json`` (as training does) and refreshes the report.
    """
    if n_boot < 10:
        raise CxrlabError(f"--n-boot must be >= 10 for a 95% CI (1000 is usual), got {n_boot}")
    run = RunFolder(run_dir)
    rec = run.read_model_record()
    test = run.read_predictions("test")
    val = run.read_predictions("val") if run.has_predictions("val") else None
    ev = evaluate_tables(test, rec.labels, rec.task, val, n_boot=n_boot, seed=seed)
    run.write_json(run.evaluation_file, ev)
    if val is not None:
        record_thresholds(run, ev, rec.task)
    if run.config_file.is_file():
        render_report(run)
    return ev


def compare_runs(run_a: str | Path, run_b: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """DeLong per shared label (Holm-adjusted) and the paired macro-AUC bootstrap of two runs."""
    a, b = RunFolder(run_a), RunFolder(run_b)
    return compare_tables(a.read_predictions(), b.read_predictions(), a.read_model_record().labels,
                          b.read_model_record().labels, str(run_a), str(run_b), n_boot=n_boot, seed=seed)
