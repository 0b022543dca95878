"""Run-level analyses behind the CLI: MC-dropout uncertainty and ensembles of runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.compare import read_run_predictions
from cxrlab.evaluate.ensemble import ensemble_tables, fuse_by
from cxrlab.evaluate.uncertainty import mc_dropout_predict, uncertainty_summary
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write, atomic_write_json


def mc_dropout_run(run_dir: str | Path, passes: int = 25, threshold: float = 0.1) -> dict[str, Any]:
    """MC dropout on a run's test split; writes ``uncertainty.json`` and a std histogram."""
    from cxrlab.data.arrays import load_images
    from cxrlab.experiment import build_manifest, model_from_run
    from cxrlab.report.plots import std_histogram

    run = RunFolder(run_dir)
    cfg = run.read_config()
    model, info = model_from_run(run)
    manifest = build_manifest(cfg)
    test = manifest.split("test")
    images = torch.from_numpy(load_images(manifest.paths(test), info["input_size"], cfg.data.workers,
                                          desc="decode test"))
    from cxrlab.data.labels import apply_policy

    y = apply_policy(manifest.targets(test), info["labels"], "ignore", cfg.data.blank).targets
    mean, std = mc_dropout_predict(model, images, passes, info["in_chans"], info["task"], seed=cfg.seed)
    summary = uncertainty_summary(y, mean, std, info["labels"], threshold)
    summary["passes"] = passes
    atomic_write_json(run.path / "uncertainty.json", summary)
    std_histogram(std, info["labels"], threshold, run.figures / "mc_dropout_std.png")
    from cxrlab.report.run_report import render_report

    render_report(run)
    return summary


def ensemble_runs(runs: list[str | Path], out: str | Path, how: str = "mean",
                  by: str | None = None) -> Path:
    """Write a prediction-only run folder combining ``runs`` (evaluate/compare work on it)."""
    if not runs:
        raise CxrlabError("ensemble needs at least one run")
    tables, labels, task = [], None, None
    for r in runs:
        t, labs, tk = read_run_predictions(r)
        if labels is not None and (labs != labels or tk != task):
            raise CxrlabError(f"{r}: labels or task differ from {runs[0]}")
        tables.append(t)
        labels, task = labs, tk
    table = ensemble_tables(tables, labels, how)
    if by:
        table = fuse_by(table, labels, key=by, how=how)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((Path(runs[0]) / "model.json").read_text())
    info.update({"architecture": "ensemble", "members": [str(r) for r in runs], "combine": how,
                 "fused_by": by})
    atomic_write_json(out / "model.json", info)
    atomic_write(out / "predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
    vals = [Path(r) / "predictions_val.csv" for r in runs]
    if all(v.is_file() for v in vals) and not by:
        import pandas as pd

        vt = ensemble_tables([pd.read_csv(v) for v in vals], labels, how)
        atomic_write(out / "predictions_val.csv", lambda tmp: vt.to_csv(tmp, index=False))
    return out

