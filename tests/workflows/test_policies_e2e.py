"""Uncertainty policies end to end on a CSV dataset with uncertain labels."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.sources import load_source
from cxrlab.workflows import run_experiment


@pytest.fixture(scope="module")
def uncertain_csv(tiny_phantom, tmp_path_factory):
    m = load_source("nih14", str(tiny_phantom), labels=list(LABELS))
    frame = m.frame.copy()
    rng = np.random.default_rng(0)
    unc = rng.random((len(frame), len(LABELS))) < 0.2
    vals = frame[list(LABELS)].to_numpy().copy()
    vals[unc] = -1
    out = pd.DataFrame({"path": [str(tiny_phantom / p) for p in frame["image"]], "patient": frame["patient"]})
    out[list(LABELS)] = vals
    path = tmp_path_factory.mktemp("csv") / "labels.csv"
    out.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("policy", ["selftrained", "random-flip", {"Mass": "ones", "default": "zeros"}])
def test_policy_trains_and_is_recorded(uncertain_csv, tmp_path, policy):
    cfg = load_config(None, base={
        "name": "pol", "seed": 0, "runs_dir": str(tmp_path),
        "data": {"source": "csv", "root": str(uncertain_csv), "labels": list(LABELS), "image_size": 32,
                 "workers": 1, "uncertain": policy},
        "model": {"name": "simple_cnn", "width": 4, "convs": 1},
        "train": {"epochs": 2}, "explain": {"enabled": False}, "evaluate": {"n_boot": 10},
    })
    s = run_experiment(cfg)
    assert np.isfinite(s["macro_auc"])
    saved = (tmp_path / "pol" / "config.yaml").read_text()
    assert "uncertain:" in saved
    stage1 = tmp_path / "pol" / "selftrained_stage1" / "metrics.jsonl"
    assert stage1.is_file() == (policy == "selftrained")
    rows = [json.loads(x) for x in (tmp_path / "pol" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
