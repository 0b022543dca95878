"""Shared fixtures: a tiny phantom dataset and the real-sample folder (skipped if absent)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("CXRLAB_QUIET", "1")
if "CXRLAB_CACHE_DIR" not in os.environ:  # never write the user's cache from tests
    import tempfile

    os.environ["CXRLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cxrlab-test-cache-")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
if "CXRLAB_REAL_DATA" in os.environ:
    REAL = Path(os.environ["CXRLAB_REAL_DATA"])

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real sample data not found at {REAL}")

#: Debian's Chromium, driven by playwright for the page tests (never `playwright install`).
CHROMIUM = Path("/usr/bin/chromium")
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
    reason="needs the playwright package and /usr/bin/chromium (apt-get install chromium)")


def screenshots(tmp_path: Path) -> Path:
    """Where the page tests save screenshots: ``$CXRLAB_SCREENSHOTS``, else the test's tmp folder."""
    shots = Path(os.environ.get("CXRLAB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@contextmanager
def browser_page(path: Path, width: int = 1200, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """A headless-Chromium page (the CI's flags) with ``path`` loaded, and the list that collects its console
    errors, page errors and failed requests."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(Path(path).as_uri())
            page.wait_for_load_state("load")
            yield page, errors
        finally:
            browser.close()


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
