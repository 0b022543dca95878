"""Evaluate and compare finished runs from their prediction tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import METHODS, Calibration, calibrator, fit_calibration
from cxrlab.evaluate.compare import compare_tables
from cxrlab.evaluate.evaluate import Rules, evaluation_of, split_prediction_table
from cxrlab.evaluate.records import Evaluation
from cxrlab.report.compare_report import render_comparison
from cxrlab.report.ensemble_report import render_ensemble_report
from cxrlab.report.run_report import render_report, write_evaluation_figures
from cxrlab.run import ModelRecord, RunFolder, prob_columns, raw_columns
from cxrlab.workflows.common import run_folder
from cxrlab.workflows.experiment import calibration_names, record_calibration, record_thresholds


def evaluate_run(run_dir: str | Path, n_boot: int = 1000, seed: int = 0, threshold_rule: Rules = None,
                 prevalence: dict[str, float] | None = None, calibration: str | None = None) -> dict[str, Any]:
    """Re-evaluate a run: AUCs with CIs, validation-chosen thresholds, calibration before and after.

    Writes ``evaluation.json``, stores the thresholds chosen on validation in
    ``model.json`` (as training does), redraws the evaluation figures and refreshes the report.
    Returns what ``evaluation.json`` now holds (:meth:`Evaluation.to_dict`).

    Args:
        threshold_rule: the rule choosing each label's threshold on validation (default: the run's
            ``evaluate.threshold_rule``; Youden's J for runs without a config).
        prevalence: ``{label: p}``: PPV and NPV at a deployment prevalence (default: the run's config).
        calibration: refit this calibration method on validation (``none`` removes it): the
            ``prob_`` columns of both prediction tables and ``model.json`` are rewritten from the
            model's own ``raw_`` probabilities; None keeps the run's calibration.
    """
    if n_boot < 10:
        raise CxrlabError(f"--n-boot must be >= 10 for a 95% CI (1000 is usual), got {n_boot}")
    run = run_folder(run_dir)
    rec = run.read_model_record()
    test = run.read_predictions("test")
    val = run.read_predictions("val") if run.has_predictions("val") else None
    settings = run.read_config().evaluate if run.config_file.is_file() else None
    if threshold_rule is None and settings is not None:
        threshold_rule = settings.threshold_rule
    if prevalence is None and settings is not None:
        prevalence = settings.prevalence
    if calibration is not None:
        test, val, rec = recalibrate(run, rec, test, val, calibration)
    cal = Calibration.from_dict(rec.calibration)
    ev = evaluation_of(test, rec.labels, rec.task, val, n_boot=n_boot, seed=seed, rules=threshold_rule,
                       prevalence=prevalence, calibration=calibration_names(cal))
    run.write_json(run.evaluation_file, ev.to_dict())
    if val is not None:
        record_thresholds(run, ev, rec.task)
    y, p, _ = split_prediction_table(test, rec.labels)
    write_evaluation_figures(run, rec.task, rec.labels, y, p, ev)
    if run.config_file.is_file():
        render_report(run)
    elif rec.name == "ensemble":
        render_ensemble_report(run)
    return ev.to_dict()


def recalibrate(run: RunFolder, rec: ModelRecord, test: pd.DataFrame, val: pd.DataFrame | None,
                method: str) -> tuple[pd.DataFrame, pd.DataFrame, ModelRecord]:
    """Refit the run's calibration (``method``) on validation; rewrite the tables' ``prob_`` and model.json."""
    if method not in METHODS:
        raise CxrlabError(f"unknown calibration {method!r}; use {', '.join(METHODS)}")
    if val is None:
        raise CxrlabError(f"{run.predictions_file('val')}: missing; a calibration is fitted on the validation "
                          "predictions")
    labels = rec.labels

    def own(table: pd.DataFrame) -> np.ndarray:  # the model's probabilities: raw_ where calibrated, else prob_
        cols = raw_columns(labels) if all(c in table.columns for c in raw_columns(labels)) else prob_columns(labels)
        return table[cols].to_numpy(dtype=np.float32)

    raw = {"test": own(test), "val": own(val)}
    cal = fit_calibration(method, val[labels].to_numpy(dtype=float), raw["val"], labels, rec.task)
    apply = calibrator(cal.to_dict() if cal else None)
    out = {}
    for split, table in (("test", test), ("val", val)):
        t = table.drop(columns=[c for c in raw_columns(labels) if c in table.columns])
        probs = raw[split] if apply is None else np.asarray(apply(raw[split]), dtype=np.float32)
        t[prob_columns(labels)] = probs
        if cal is not None:
            t[raw_columns(labels)] = raw[split]
        run.write_predictions(t, split)
        out[split] = t
    record_calibration(run, cal)
    return out["test"], out["val"], run.read_model_record()


def report_run(run_dir: str | Path) -> tuple[Path, str | None]:
    """Re-render ``RUN/report.html``; return its path and, for a run evaluated by an older cxrlab (its
    ``evaluation.json`` has a lower ``format_version``: it may lack the PR curves and the decisions at
    the threshold that the report now shows), a hint.

    An ensemble folder (no config, no weights) gets the report of
    :func:`~cxrlab.report.ensemble_report.render_ensemble_report`: members, combination and the
    classification results of ``cxrlab evaluate`` (a hint to run it when it has not been).
    """
    run = run_folder(run_dir)
    rec = run.read_model_record()
    ev = Evaluation.read(run.evaluation_file, rec.task)
    if rec.name == "ensemble" and not run.config_file.is_file():
        hint = None if ev else f"the ensemble is not evaluated yet: run `cxrlab evaluate {run.path}` first"
        return render_ensemble_report(run), hint
    hint = None
    if ev is not None and ev.outdated:  # freshness from the file's version, not from missing keys
        hint = (f"{run.evaluation_file} is from an older cxrlab (format {ev.format_version}, this one writes "
                f"{Evaluation.FORMAT_VERSION}): run `cxrlab evaluate {run.path}` to add the PR curves and the "
                "decisions at the threshold to the report")
    unfinished = run.unfinished_reason() if run.config_file.is_file() else None
    if unfinished:  # e.g. killed mid-epoch or stopped by a full disk: the report shows what was written
        hint = (f"{run.path}: training did not finish ({unfinished}); the report shows what it wrote so far; "
                "`cxrlab train --resume` completes it")
    return render_report(run), hint


def compare_runs(run_a: str | Path, run_b: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """DeLong per shared label (Holm-adjusted) and the paired macro-AUC bootstrap of two runs."""
    a, b = run_folder(run_a), run_folder(run_b)
    return compare_tables(a.read_predictions(), b.read_predictions(), a.read_model_record().labels,
                          b.read_model_record().labels, str(run_a), str(run_b), n_boot=n_boot, seed=seed)


def compare_page(run_a: str | Path, others: list[str | Path], results: list[dict[str, Any]],
                 out: str | Path | None = None) -> Path:
    """The HTML page of :func:`compare_runs` results (overlaid ROCs, forest plot of AUC differences).

    Args:
        run_a: the run every other was compared with.
        others: the other runs, in the order of ``results``.
        out: the page (default ``RUN_A/compare.html``).
    """
    first = RunFolder(run_a)
    path = Path(out) if out is not None else first.compare_file
    return render_comparison(first, [RunFolder(o) for o in others], results, path)
