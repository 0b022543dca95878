"""A run folder written by the 0.1.0 release still evaluates, reports, predicts and serves.

``tests/fixtures/run_0_1_0/`` holds a tiny run trained by cxrlab 0.1.0 (commit 40d11d8; how it was
made: its README.md) and three of its test images. Each test works on a copy in ``tmp_path`` with the
current code and checks the answers against what the release itself wrote (its ``predictions.csv``),
so a change of a file format, of the model record or of the preprocessing shows up here as a broken
old run, not as a user's surprise. The data root the run names (``phantom``) is absent on purpose:
none of these commands may need the training data.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from conftest import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_0_1_0"
IMAGES = sorted((FIXTURE / "images").glob("*.png"))
RELEASE_PRED = pd.read_csv(FIXTURE / "run_0_1_0" / "predictions.csv")
LABELS = json.loads((FIXTURE / "run_0_1_0" / "model.json").read_text())["labels"]
PROBS = [f"prob_{k}" for k in LABELS]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A writable copy of the release's run folder (the fixture itself is never written)."""
    return Path(shutil.copytree(FIXTURE / "run_0_1_0", tmp_path / "run_0_1_0"))


def evaluation_aucs(run: Path) -> dict[str, tuple[float, float, float]]:
    """Per label (AUC, CI low, CI high) from ``RUN/evaluation.json``.

    The one place this test reads the evaluation format: when the typed ``Evaluation`` record lands,
    read it through the record here.
    """
    per = json.loads((run / "evaluation.json").read_text())["per_label"]
    return {k: (v["auc"], v["ci_low"], v["ci_high"]) for k, v in per.items()}


def release_probs(images: list[Path]) -> np.ndarray:
    """The probabilities the release wrote for these images (rows of its predictions.csv)."""
    rows = RELEASE_PRED.set_index(RELEASE_PRED["image"].map(lambda s: Path(s).name))
    return rows.loc[[p.name for p in images], PROBS].to_numpy(float)


def test_fixture_is_a_small_release_run_folder():
    cfg = yaml.safe_load((FIXTURE / "run_0_1_0" / "config.yaml").read_text())
    assert cfg["environment"]["cxrlab"] == "0.1.0"  # written by the release, not by the code under test
    assert not (FIXTURE / "run_0_1_0" / "report.html").exists()  # the tests render it
    assert not (FIXTURE / "run_0_1_0" / cfg["data"]["root"]).exists()  # no training data travels
    size = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert size < 300_000, f"the fixture grew to {size} bytes"
    assert len(IMAGES) == 3 and set(release_probs(IMAGES).shape) == {3, len(LABELS)}


def test_release_run_reports_as_written(run: Path):
    r = run_cli("report", run)
    assert r.exit_code == 0, r.output
    assert "did not finish" not in r.output  # a finished 0.1.0 run has no completion marker
    page = (run / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "run_0_1_0" in page
    assert all(lab in page for lab in LABELS)
    macro = json.loads((run / "summary.json").read_text())["macro_auc"]
    assert f"{macro:.3f}" in page or f"{macro:.2f}" in page


def test_release_run_evaluates_to_the_auc_of_its_predictions(run: Path):
    released = evaluation_aucs(run)
    r = run_cli("evaluate", run, "--n-boot", 50)
    assert r.exit_code == 0, r.output
    got = evaluation_aucs(run)
    assert set(got) == set(LABELS)
    for lab in LABELS:
        auc, lo, hi = got[lab]
        want = roc_auc_score(RELEASE_PRED[lab], RELEASE_PRED[f"prob_{lab}"])
        assert auc == pytest.approx(want, abs=1e-9) == pytest.approx(released[lab][0], abs=1e-9)
        assert 0.0 <= lo <= auc <= hi <= 1.0 and not math.isnan(lo)
    assert (run / "report.html").is_file()  # evaluate refreshes the report
    assert run_cli("report", run).exit_code == 0


def test_release_run_predicts_what_it_predicted_at_release(run: Path, tmp_path: Path):
    out = tmp_path / "torch.csv"
    r = run_cli("predict", run, *[a for p in IMAGES for a in ("-i", p)], "--out", out)
    assert r.exit_code == 0, r.output
    torch_probs = pd.read_csv(out)
    assert [Path(s).name for s in torch_probs["image"]] == [p.name for p in IMAGES]
    assert np.abs(torch_probs[PROBS].to_numpy() - release_probs(IMAGES)).max() < 1e-5
    # the old record also exports: ONNX Runtime answers as the release's PyTorch did
    assert run_cli("export", run).exit_code == 0
    out = tmp_path / "onnx.csv"
    r = run_cli("predict", run, *[a for p in IMAGES for a in ("-i", p)], "--engine", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert np.abs(pd.read_csv(out)[PROBS].to_numpy() - release_probs(IMAGES)).max() < 1e-5


def test_release_run_serves(run: Path):
    from cxrlab.serve.app import create_app

    client = TestClient(create_app(run, "auto"))  # what `cxrlab serve RUN` builds (no ONNX: PyTorch)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["engine"] == "torch"
    card = client.get("/model")
    assert card.status_code == 200, card.text
    assert card.json()["labels"] == LABELS and card.json()["task"] == "multilabel"
    r = client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in IMAGES])
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    got = np.array([[x["probabilities"][k] for k in LABELS] for x in res])
    assert np.abs(got - release_probs(IMAGES)).max() < 1e-5
    assert all(math.isfinite(x["ood"]["score"]) for x in res)  # the release's ood.json still loads
