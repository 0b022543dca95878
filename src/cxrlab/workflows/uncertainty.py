"""Monte-Carlo dropout on a run's own test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import Uncertainty, fresh
from cxrlab.evaluate.uncertainty import uncertainty_summary
from cxrlab.report.plots import std_histogram
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.workflows.common import build_manifest, load_run_images, open_model, run_split, targets


def uncertainty_run(run_dir: str | Path, passes: int = 25, threshold: float = 0.1) -> dict[str, Any]:
    """MC dropout over the test images of the run's ``split.json``; writes ``uncertainty.json``,
    a std histogram, and refreshes the report.  Returns what ``uncertainty.json`` holds
    (:meth:`~cxrlab.evaluate.records.Uncertainty.to_dict`)."""
    if passes < 2:
        raise CxrlabError(f"--passes must be >= 2, got {passes}")
    run = RunFolder(run_dir)
    cfg = run.read_config()
    opened = open_model(run)
    rec = opened.record
    manifest = build_manifest(cfg)
    test = run_split(run, cfg, manifest, "test")
    images = load_run_images(manifest, test["image"].tolist(), rec, cfg.data.workers, desc="decode test")
    mean, std = opened.predictor.mc_dropout(images, passes, seed=cfg.seed)
    found = uncertainty_summary(targets(manifest, test, rec.labels, cfg), mean, std, rec.labels, threshold)
    summary = fresh(Uncertainty, found, passes=passes, images=len(test)).to_dict()
    run.write_json(run.uncertainty_file, summary)
    std_histogram(std, rec.labels, threshold, run.figure("mc_dropout_std"))
    render_report(run)
    return summary
