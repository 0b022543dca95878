"""Facts a reviewer asks for that no config holds: the split as trained (patients, prevalence, overlap)
and the device; stored in ``summary.json`` so the report reads only the run folder.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxrlab.config import ExperimentConfig
from cxrlab.data.manifest import SPLITS, Manifest
from cxrlab.data.summary import summarize
from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder, environment
from cxrlab.train import distributed
from cxrlab.train.loop import resolve_device
from cxrlab.workflows.common import build_manifest, run_split


def split_summary(manifest: Manifest, frames: dict[str, pd.DataFrame], limit: int | None = None,
                  patient_fraction: float = 1.0) -> dict[str, Any]:
    """Images, patients, prevalence per split and the patients shared between splits, of ``frames``.

    Args:
        manifest: the dataset (labels, task, how its split was made).
        frames: the rows each split used (after ``data.limit`` and skipped images).
        limit: ``data.limit``, mentioned in the split method when set.
        patient_fraction: ``data.patient_fraction``, mentioned when below 1.
    """
    frame = pd.concat([f.assign(split=s) for s, f in frames.items()], ignore_index=True)
    method = manifest.split_method or "not recorded"
    if patient_fraction < 1:
        method += f"; a random {patient_fraction:.0%} of the patients used (data.patient_fraction)"
    if limit:
        method += f"; the first {limit} images of each split used (data.limit)"
    return summarize(Manifest(frame=frame, root=manifest.root, labels=manifest.labels, task=manifest.task,
                              split_method=method))


def device_record(cfg: ExperimentConfig) -> dict[str, Any]:
    """The device training ran on, in words (and the number of processes under torchrun)."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "CPU"
    return {"device": str(device), "name": name, "world_size": distributed.world()[1],
            "threads": torch.get_num_threads()}


def run_split_summary(run_dir: str | Path) -> dict[str, Any]:
    """A run's own split (``split.json``) with patients, prevalence and overlap.

    Rebuilt from the data when ``data.root`` is readable; otherwise the block the
    training stored in ``summary.json``.
    """
    run = RunFolder(run_dir)
    cfg = run.read_config()
    try:
        manifest = build_manifest(cfg)
        frames = {s: run_split(run, cfg, manifest, s) for s in SPLITS}
        out = split_summary(manifest, frames, cfg.data.limit, cfg.data.patient_fraction)
        out["from"] = f"{run.split_file} and the data at {cfg.data.root}"
    except CxrlabError as e:
        stored = (run.read_json(run.summary_file) or {}).get("data")
        if not stored:
            raise
        out = dict(stored)
        out["from"] = f"{run.summary_file} (the data is not readable here: {e})"
    out["run"] = str(run.path)
    return out


def versions() -> dict[str, str]:
    """The versions cxrlab runs with and its git commit (``cxrlab version``; the ``environment`` block
    each run's config.yaml records)."""
    return environment()
