"""VinDr-CXR reader: its phantom layout read back against independent pandas counts, reader aggregation,
the Kaggle copy, DICOM headers, boxes scored by localize, and bad input as one line naming file and row."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import copy_of, needs_real, one_line, real_dicom, run_cli, train_tiny
from cxrlab.data.io import read_gray
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.data.phantom_layouts.vindr import PHANTOM_CLASSES, VINDR_LABELS
from cxrlab.data.sources import load_source

LABELS = list(PHANTOM_CLASSES)


@pytest.fixture(scope="module")
def vindr(tmp_path_factory) -> Path:
    ps = write_phantom_dataset("vindr", tmp_path_factory.mktemp("vindr") / "v", n=90, size=64, seed=1, workers=1)
    assert ps.source == "vindr" and ps.labels == LABELS
    return ps.root


def test_reader_matches_an_independent_count_of_the_tables(vindr):
    train = pd.read_csv(vindr / "annotations/image_labels_train.csv")
    test = pd.read_csv(vindr / "annotations/image_labels_test.csv")
    m = load_source("vindr", str(vindr), LABELS)
    f = m.frame
    assert len(f) == train["image_id"].nunique() + len(test) and f["patient"].nunique() == len(f)
    assert (f["split"] == "test").sum() == len(test)
    assert f["split"].isin(["train", "val"]).sum() == train["image_id"].nunique()
    assert train.groupby("image_id").size().eq(3).all()  # three readers per train image
    any_ = train.groupby("image_id")[LABELS].max()
    major = (train.groupby("image_id")[LABELS].mean() > 0.5).astype(int)
    got = f[f["split"] != "test"].set_index("patient")[LABELS]
    assert got.sum().to_dict() == any_.sum().astype(float).to_dict()
    assert f[f["split"] == "test"][LABELS].sum().to_dict() == test[LABELS].sum().astype(float).to_dict()
    maj = load_source("vindr", str(vindr), LABELS, {"aggregate": "majority"}).frame
    assert maj[maj["split"] != "test"][LABELS].sum().to_dict() == major.sum().astype(float).to_dict()
    assert (any_.sum() > major.sum()).any()  # the rule matters on this phantom, so the test can tell them apart
    boxes = pd.concat([pd.read_csv(vindr / f"annotations/annotations_{s}.csv") for s in ("train", "test")])
    assert len(m.boxes) == int(boxes["class_name"].isin(LABELS).sum()) > 0
    assert m.boxes["image"].isin(set(f["image"])).all()
    assert m.split_method.startswith("the dataset's own train/test split")


def test_default_labels_are_the_tables_columns_and_map_into_the_vocabulary(vindr):
    from cxrlab.data.vocabulary import Vocabulary

    m = load_source("vindr", str(vindr))
    assert m.labels == list(VINDR_LABELS)
    vocab = Vocabulary.load()
    unmapped = [c for c in m.labels if c not in vocab.sources["vindr"]]
    assert not unmapped


def test_images_are_dicoms_and_demographics_come_from_their_headers(vindr):
    m = load_source("vindr", str(vindr), LABELS)
    sample = m.frame.iloc[0]
    assert read_gray(vindr / sample["image"]).shape == (64, 64)
    sexes = [str(pydicom.dcmread(vindr / p, stop_before_pixels=True).get("PatientSex", "")) for p in m.frame["image"]]
    assert (m.frame["sex"] == "F").sum() == sexes.count("F") > 0
    assert m.frame["age"].isna().sum() == sexes.count("") > 0  # some headers lack them, as in VinDr
    assert m.image_sizes[sample["image"]] == (64, 64)


def test_the_kaggle_copy_reads_with_the_same_train_labels(vindr, tmp_path):
    root = tmp_path / "kaggle"
    shutil.copytree(vindr / "train", root / "train")
    ann = pd.read_csv(vindr / "annotations/annotations_train.csv")
    ann.insert(2, "class_id", ann["class_name"].astype("category").cat.codes)
    ann.to_csv(root / "train.csv", index=False)
    m = load_source("vindr", str(root), LABELS)
    phys = load_source("vindr", str(vindr), LABELS).frame
    phys = phys[phys["split"] != "test"].set_index("patient")[LABELS].sort_index()
    got = m.frame.set_index("patient")[LABELS].sort_index()
    pd.testing.assert_frame_equal(got, phys)
    assert set(m.frame["split"]) == {"train", "val", "test"}  # no test labels on Kaggle: split by cxrlab
    assert len(m.boxes) == int(ann["class_name"].isin(LABELS).sum())


def test_bad_input_is_one_line_naming_the_file_and_row(vindr, tmp_path):
    root = copy_of(vindr, tmp_path)
    boxes = root / "annotations/annotations_train.csv"
    table = pd.read_csv(boxes)
    i = int(np.flatnonzero(table["class_name"].isin(LABELS))[2])
    table.loc[i, "x_max"] = 500.0
    table.to_csv(boxes, index=False)
    msg = one_line(lambda: load_source("vindr", str(root), LABELS))
    assert "annotations_train.csv" in msg and f"line {i + 2}" in msg and "64 x 64" in msg

    (root / "annotations/image_labels_test.csv").unlink()
    msg = one_line(lambda: load_source("vindr", str(root), LABELS))
    assert "image_labels_test.csv" in msg and "not found" in msg

    root = copy_of(vindr, tmp_path / "b")
    labels = root / "annotations/image_labels_train.csv"
    table = pd.read_csv(labels)
    table.loc[4, "Cardiomegaly"] = 2
    table.to_csv(labels, index=False)
    msg = one_line(lambda: load_source("vindr", str(root), LABELS))
    assert "image_labels_train.csv" in msg and "line 6" in msg and "'Cardiomegaly'" in msg
    table.drop(columns=["Cardiomegaly"]).to_csv(labels, index=False)
    msg = one_line(lambda: load_source("vindr", str(root), LABELS))
    assert "image_labels_train.csv" in msg and "Cardiomegaly" in msg
    assert "aggregate" in one_line(lambda: load_source("vindr", str(vindr), LABELS, {"aggregate": "mean"}))


def test_localize_scores_the_vindr_boxes(vindr, tmp_path):
    from cxrlab.workflows import localize_run

    train_tiny(vindr, tmp_path, "v", 0, source="vindr", labels=LABELS, val_fraction=None)
    result = localize_run(tmp_path / "v", figures=0)
    test = pd.read_csv(vindr / "annotations/annotations_test.csv")
    assert result["matching"]["matched"] == int(test["class_name"].isin(LABELS).sum()) > 0
    r = run_cli("localize", tmp_path / "v")
    assert r.exit_code == 0, r.output


@needs_real
def test_a_real_dicom_reads_in_the_vindr_layout_and_its_boxes_are_checked_in_its_pixels(tmp_path):
    """No VinDr file is in the real samples: a real 1024-px CR DICOM stands in for one VinDr image."""
    src, head = real_dicom()
    iid = "0" * 32
    ann = tmp_path / "annotations"
    ann.mkdir()
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    shutil.copy(src, tmp_path / "train" / f"{iid}.dicom")
    shutil.copy(src, tmp_path / "test" / f"{'1' * 32}.dicom")
    rows = [{"image_id": iid, "rad_id": f"R{r}", **dict.fromkeys(VINDR_LABELS, 0)} for r in (1, 2, 3)]
    rows[0]["Cardiomegaly"] = rows[1]["Cardiomegaly"] = 1
    pd.DataFrame(rows).to_csv(ann / "image_labels_train.csv", index=False)
    pd.DataFrame([{"image_id": "1" * 32, **dict.fromkeys(VINDR_LABELS, 0), "No finding": 1}]).to_csv(
        ann / "image_labels_test.csv", index=False)
    boxes = pd.DataFrame([[iid, "R1", "Cardiomegaly", 300.0, 500.0, 700.0, 800.0],
                          [iid, "R2", "Cardiomegaly", 310.0, 510.0, 720.0, 810.0]],
                         columns=["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"])
    boxes.to_csv(ann / "annotations_train.csv", index=False)
    m = load_source("vindr", str(tmp_path), ["Cardiomegaly"])
    row = m.frame.set_index("patient").loc[iid]
    assert row["Cardiomegaly"] == 1 and row["sex"] == str(head.PatientSex)
    assert m.image_sizes[row["image"]] == (int(head.Columns), int(head.Rows)) and len(m.boxes) == 2
    assert read_gray(tmp_path / row["image"]).shape == (int(head.Rows), int(head.Columns))
    boxes.loc[1, "x_max"] = float(head.Columns) + 50
    boxes.to_csv(ann / "annotations_train.csv", index=False)
    msg = one_line(lambda: load_source("vindr", str(tmp_path), ["Cardiomegaly"]))
    assert "annotations_train.csv" in msg and "line 3" in msg and f"{head.Columns} x {head.Rows}" in msg
