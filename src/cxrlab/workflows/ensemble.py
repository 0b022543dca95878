"""Ensembles of runs: a prediction-only run folder that evaluate and compare work on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.ensemble import ensemble_tables, fuse_by
from cxrlab.run import RunFolder
from cxrlab.workflows.common import run_folder


def ensemble_runs(runs: list[str | Path], out: str | Path, how: str = "mean", by: str | None = None) -> Path:
    """Combine ``runs``' predictions (mean or max), optionally fused per ``by`` (e.g. ``study``).

    Runs tested on the same images are combined image by image (then fused per ``by``).  Runs
    tested on disjoint images, such as a frontal-only and a lateral-only model, need ``by``: their
    rows are pooled and fused per ``by`` (one study's frontal and lateral predictions combined).
    """
    if not runs:
        raise CxrlabError("ensemble needs at least one run")
    folders = [run_folder(r) for r in runs]
    records = [f.read_model_record() for f in folders]
    for f, rec in zip(folders[1:], records[1:], strict=True):
        if rec.labels != records[0].labels or rec.task != records[0].task:
            raise CxrlabError(f"{f.path}: labels or task differ from {folders[0].path}")
    labels = records[0].labels
    tables = [f.read_predictions() for f in folders]
    images = [set(t["image"]) for t in tables]
    disjoint = len(tables) > 1 and sum(map(len, images)) == len(set().union(*images))
    if by and disjoint:  # view-specific models (e.g. frontal-only + lateral-only): their rows, fused per study
        table = fuse_by(pd.concat(tables, ignore_index=True), labels, key=by, how=how)
    else:
        table = ensemble_tables(tables, labels, how)
        if by:
            table = fuse_by(table, labels, key=by, how=how)
    target = RunFolder(out)
    target.path.mkdir(parents=True, exist_ok=True)
    extra = {"members": [str(r) for r in runs], "combine": how, "fused_by": by}
    target.write_model_record(replace(records[0], name="ensemble", extra=extra))
    target.write_predictions(table, "test")
    if all(f.has_predictions("val") for f in folders) and not by:
        target.write_predictions(ensemble_tables([f.read_predictions("val") for f in folders], labels, how), "val")
    return target.path
