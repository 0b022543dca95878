"""Shared fixtures: a tiny phantom dataset and the real-sample folder (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("CXRLAB_QUIET", "1")
if "CXRLAB_CACHE_DIR" not in os.environ:  # never write the user's cache from tests
    import tempfile

    os.environ["CXRLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cxrlab-test-cache-")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
if "CXRLAB_REAL_DATA" in os.environ:
    REAL = Path(os.environ["CXRLAB_REAL_DATA"])

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real sample data not found at {REAL}")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 phantom images of 64 px in the NIH layout (shared by the tests; do not modify)."""
    from cxrlab.data.phantom_dataset import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), n=120, size=64, seed=3, workers=1)


def run_cli(*args: object):
    """Run ``cxrlab ARGS`` in process (typer's CliRunner); the result has exit_code, stdout, stderr."""
    from typer.testing import CliRunner

    from cxrlab.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def train_tiny(root: Path, runs: Path, name: str, seed: int) -> Path:
    """Train a 1-epoch, width-4 simple_cnn on the NIH-layout phantom at ``root`` into ``runs/name``."""
    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.workflows import run_experiment

    base = {"name": name, "seed": seed, "runs_dir": str(runs),
            "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 32,
                     "val_fraction": 0.2, "workers": 1},
            "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
            "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3},
            "evaluate": {"n_boot": 20}, "explain": {"enabled": False}}
    run_experiment(load_config(None, [], base=base))
    return runs / name
