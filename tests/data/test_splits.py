import json

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import complete_splits
from cxrlab.data.splits import stratified_patient_split
from cxrlab.errors import CxrlabError


def synthetic(n_patients=300, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        k = rng.integers(1, 4)
        base = rng.random(4) < [0.3, 0.1, 0.05, 0.5]
        for j in range(k):
            rows.append([f"{p}_{j}.png", f"P{p}", "", "", *(base | (rng.random(4) < 0.05)).astype(float)])
    return pd.DataFrame(rows, columns=["image", "patient", "view", "split", "a", "b", "c", "d"])


def test_iterative_stratification_by_patient_70_10_20():
    f = synthetic()
    y = f[["a", "b", "c", "d"]].to_numpy()
    split = stratified_patient_split(f["patient"], y, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    f["split"] = split
    pats = f.groupby("split")["patient"].apply(set)
    assert not pats["train"] & pats["val"] and not pats["train"] & pats["test"] and not pats["val"] & pats["test"]
    share = {s: len(pats[s]) / 300 for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.02) and share["test"] == pytest.approx(0.2, abs=0.02)
    # stratified: per-patient prevalence of every label is close in every split
    per_patient = f.groupby(["split", "patient"])[["a", "b", "c", "d"]].max().groupby("split").mean()
    assert (per_patient.max() - per_patient.min()).max() < 0.03, per_patient
    again = stratified_patient_split(f["patient"], y, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    assert (again == split).all()


def test_split_file_is_written_reused_and_checked(tmp_path):
    f = synthetic(60)
    path = tmp_path / "split.json"
    m = complete_splits(Manifest(f.copy(), tmp_path, ["a", "b", "c", "d"]), seed=1, split_file=path)
    saved = json.loads(path.read_text())
    assert len(saved["hash"]) == 16 and len(saved["data_hash"]) == 16
    m2 = complete_splits(Manifest(f.copy(), tmp_path, ["a", "b", "c", "d"]), seed=99, split_file=path)
    assert (m2.frame["split"] == m.frame["split"]).all()  # reused, not re-drawn with seed 99
    changed = f.iloc[:-3].copy()
    with pytest.raises(CxrlabError, match="split file no longer matches the data"):
        complete_splits(Manifest(changed, tmp_path, ["a", "b", "c", "d"]), split_file=path)
