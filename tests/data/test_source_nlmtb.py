"""NLM TB (Shenzhen, Montgomery): the reader on its phantom layout, the lung masks' sides, bad input."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.masks import read_masks
from cxrlab.data.phantom_layouts.nlmtb import write_phantom_nlmtb
from cxrlab.data.sources import load_source
from cxrlab.data.sources.nlmtb import montgomery_masks, parse_reading
from cxrlab.errors import CxrlabError

N = 12


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_nlmtb(tmp_path_factory.mktemp("nlmtb"), n=N, size=48, seed=2, workers=1)


def _written(tree: Path) -> pd.DataFrame:
    """What the phantom wrote, counted from the files alone."""
    rows = []
    for f in sorted(tree.glob("*/CXR_png/*.png")):
        text = (f.parent.parent / "ClinicalReadings" / f"{f.stem}.txt").read_text()
        sex = "F" if re.search(r"female|Sex: F", text) else "M"
        rows.append({"set": f.parent.parent.name, "tb": int(f.stem[-1]), "sex": sex,
                     "age": int(re.search(r"(\d+)(yrs|Y)", text).group(1))})
    return pd.DataFrame(rows)


def test_parse_reading() -> None:
    assert parse_reading("male 35yrs\nnormal\n") == ("M", 35.0)
    assert parse_reading("Female  40 yrs\nSTB in the left upper field") == ("F", 40.0)
    sex, age = parse_reading("female 8month\n")
    assert sex == "F" and age == pytest.approx(8 / 12)
    assert parse_reading("Patient's Sex: F\nPatient's Age: 044Y\nnormal\n") == ("F", 44.0)
    sex, age = parse_reading("no demographics here")
    assert sex == "" and np.isnan(age)


def test_reader_counts_equal_the_written_files(tree: Path) -> None:
    m = load_source("nlmtb", str(tree))
    w = _written(tree)
    f = m.frame
    assert len(f) == len(w) == 2 * N and m.task == "binary"
    assert f["patient"].nunique() == len(f)  # one image per patient
    assert f.groupby("site")["Tuberculosis"].sum().to_dict() == {
        "Montgomery": w.loc[w["set"] == "MontgomerySet", "tb"].sum(),
        "Shenzhen": w.loc[w["set"] == "ChinaSet_AllFiles", "tb"].sum()}
    assert sorted(f["sex"]) == sorted(w["sex"])
    assert sorted(f["age"]) == sorted(w["age"].astype(float))
    assert set(f["view"]) == {"PA"}
    assert f["split"].value_counts().sum() == 2 * N and set(f["split"]) == {"train", "val", "test"}
    one = load_source("nlmtb", str(tree / "ChinaSet_AllFiles"))  # one set's folder as root
    assert len(one.frame) == N and set(one.frame["site"]) == {"Shenzhen"}


def test_montgomery_masks_named_by_the_patients_side(tree: Path, tmp_path: Path, caplog) -> None:
    m = load_source("nlmtb", str(tree))
    ids = list(m.frame["image"])
    mont = m.frame[m.frame["site"] == "Montgomery"]["image"]
    with caplog.at_level(logging.INFO):
        masks = montgomery_masks(tree, ids)
    assert len(masks) == len(mont) == len(list((tree / "MontgomerySet/ManualMask/leftMask").glob("*.png")))
    assert "the folder names are the patient's side" in caplog.text
    for image in mont:
        left = masks.get(image, "left_lung")
        assert np.nonzero(left)[1].mean() > left.shape[1] / 2  # PA: the patient's left is on the image's right
        assert (masks.get(image, "lungs") == left | masks.get(image, "right_lung")).all()
    via_audit = read_masks(tree / "MontgomerySet" / "ManualMask", ids)  # `cxrlab audit --masks .../ManualMask`
    assert via_audit.ids() == masks.ids()
    # folders named from the image's side: the sides still come out right, and the log says so
    swapped = tmp_path / "MontgomerySet"
    shutil.copytree(tree / "MontgomerySet", swapped)
    mm = swapped / "ManualMask"
    (mm / "leftMask").rename(mm / "tmp")
    (mm / "rightMask").rename(mm / "leftMask")
    (mm / "tmp").rename(mm / "rightMask")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = montgomery_masks(swapped)
    assert "the folder names are the image's side" in caplog.text
    stem = Path(mont.iloc[0]).stem
    assert (again.get(stem, "left_lung") == masks.get(mont.iloc[0], "left_lung")).all()


def test_bad_input_is_one_line_naming_the_file(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tree / "ChinaSet_AllFiles", root)
    shutil.copy(root / "CXR_png" / "CHNCXR_0001_1.png", root / "CXR_png" / "CHNCXR_0099_7.png")
    with pytest.raises(CxrlabError, match=r"CHNCXR_0099_7.png: file name is not <CHNCXR\|MCUCXR>_<id>_<0\|1>.png"):
        load_source("nlmtb", str(root))
    with pytest.raises(CxrlabError, match="no CXR_png/ folder"):
        load_source("nlmtb", str(tmp_path / "copy" / "ClinicalReadings"))
    with pytest.raises(CxrlabError, match="no ManualMask/ folder"):
        montgomery_masks(tree / "ChinaSet_AllFiles")


def test_vocabulary_maps_the_label() -> None:
    from cxrlab.data.vocabulary import Vocabulary

    v = Vocabulary.load()
    assert v.canonical("nlmtb", "Tuberculosis") == ("Tuberculosis", "exact")
    assert v.canonical("phantom-nlmtb", "Tuberculosis") == ("Tuberculosis", "exact")


def test_audit_reads_montgomery_masks_on_a_trained_run(tmp_path: Path) -> None:
    from cxrlab.config import load_config
    from cxrlab.workflows import run_experiment
    from cxrlab.workflows.audit import audit_run

    root = write_phantom_nlmtb(tmp_path / "data", n=40, size=48, seed=5, sets=("montgomery",), workers=1)
    base = {"name": "tb", "seed": 0, "runs_dir": str(tmp_path / "runs"),
            "data": {"source": "nlmtb", "root": str(root), "image_size": 32, "workers": 1},
            "task": "binary",
            "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
            "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3},
            "evaluate": {"n_boot": 20}, "explain": {"enabled": False}}
    run_experiment(load_config(None, [], base=base))
    result = audit_run(tmp_path / "runs" / "tb", root / "MontgomerySet" / "ManualMask", n_boot=20, sanity=0,
                       suspects=2)
    test = load_source("nlmtb", str(root)).split("test")
    assert result.counts["test_images"] == len(test)
    assert result.counts["with_masks"] == len(test)  # every Montgomery image has both lung masks
