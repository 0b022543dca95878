"""A tiny trained run with an ONNX export, trained once per session for the serve and card tests.

A plain module, not a ``conftest.py`` (the tests import the top ``conftest`` by name); each test
module wraps :func:`trained_run` in its own fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.run import RunFolder

_RUNS: dict[Path, RunFolder] = {}


def trained_run(phantom: Path, factory: pytest.TempPathFactory) -> RunFolder:
    """simple_cnn (width 4, dropout 0.2) on the tiny phantom at 32 px, 2 epochs, exported to ONNX."""
    from cxrlab.workflows import export_onnx, run_experiment

    if phantom not in _RUNS:
        runs = factory.mktemp("serve_runs")
        base = {
            "name": "served", "seed": 2, "runs_dir": str(runs),
            "data": {"source": "nih14", "root": str(phantom), "labels": list(LABELS), "image_size": 32,
                     "val_fraction": 0.2, "workers": 1},
            "model": {"name": "simple_cnn", "dropout": 0.2, "options": {"width": 4, "convs": 1}},
            "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
            "evaluate": {"n_boot": 50},
            "explain": {"enabled": False},
        }
        run_experiment(load_config(None, [], base=base))
        export_onnx(runs / "served")
        _RUNS[phantom] = RunFolder(runs / "served")
    return _RUNS[phantom]


def first_images(phantom: Path, n: int = 6) -> list[Path]:
    """A few phantom PNGs (frontal chest images like those the run was trained on)."""
    return sorted((phantom / "images").glob("*.png"))[:n]
