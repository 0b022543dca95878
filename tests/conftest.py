"""Shared fixtures: a tiny phantom dataset and the real-sample folder (skipped if absent)."""

from __future__ import annotations

import os
import shutil
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


def train_tiny(root: Path, runs: Path, name: str, seed: int, *, image_size: int = 32, width: int = 4,
               epochs: int = 1, batch_size: int = 16, n_boot: int = 20, source: str = "nih14",
               labels: list[str] | None = None, val_fraction: float | None = 0.2) -> Path:
    """Train a simple_cnn (1 epoch, width 4 unless told) on the phantom at ``root`` into ``runs/name``.

    The defaults are the cheapest run on the NIH-layout phantom that writes a folder; the keywords are
    what other tests turn up (a model that has learned something for external validation) or change
    (another source and its labels; ``val_fraction=None`` leaves the source's own default).
    """
    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.workflows import run_experiment

    data = {"source": source, "root": str(root), "labels": list(LABELS) if labels is None else list(labels),
            "image_size": image_size, **({} if val_fraction is None else {"val_fraction": val_fraction}), "workers": 1}
    base = {"name": name, "seed": seed, "runs_dir": str(runs), "data": data,
            "model": {"name": "simple_cnn", "options": {"width": width, "convs": 1}},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": 3e-3},
            "evaluate": {"n_boot": n_boot}, "explain": {"enabled": False}}
    run_experiment(load_config(None, [], base=base))
    return runs / name


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A copy of a (module-scoped, shared) phantom tree at ``tmp_path/copy``, for a test that breaks files."""
    shutil.copytree(root, tmp_path / "copy")
    return tmp_path / "copy"


def one_line(fn) -> str:
    """The message of the :class:`CxrlabError` that ``fn()`` raises, checked to be one line."""
    from cxrlab.errors import CxrlabError

    with pytest.raises(CxrlabError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


#: The real NIH-derived DICOM (SIIM's sample) the DICOM-layout readers are tried on.
REAL_DICOM = REAL / "samples" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def real_dicom():
    """``(path, header)`` of :data:`REAL_DICOM` (pixels not read); skips the test when the file is absent."""
    import pydicom

    if not REAL_DICOM.is_file():
        pytest.skip(f"{REAL_DICOM} not found")
    return REAL_DICOM, pydicom.dcmread(REAL_DICOM, stop_before_pixels=True)
