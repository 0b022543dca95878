"""RSNA Pneumonia Detection reader: its phantom layout read back against independent pandas counts, the
DICOM headers (also of a real NIH-derived DICOM), boxes scored by localize, and bad input as one line."""

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
from cxrlab.data.sources import load_source

LABELS = ["Lung Opacity", "Normal", "No Lung Opacity / Not Normal"]


@pytest.fixture(scope="module")
def rsna(tmp_path_factory) -> Path:
    ps = write_phantom_dataset("rsna", tmp_path_factory.mktemp("rsna") / "r", n=90, size=64, seed=2, workers=1)
    assert ps.source == "rsna" and ps.labels == ["Lung Opacity"]
    return ps.root


def test_reader_matches_an_independent_count_of_the_tables(rsna):
    lab = pd.read_csv(rsna / "stage_2_train_labels.csv")
    info = pd.read_csv(rsna / "stage_2_detailed_class_info.csv").drop_duplicates()
    m = load_source("rsna", str(rsna), LABELS)
    f = m.frame
    assert len(f) == lab["patientId"].nunique() == f["patient"].nunique()
    assert lab.groupby("patientId").size().max() > 1  # several boxes on some images, as in RSNA
    assert f["Lung Opacity"].sum() == lab.groupby("patientId")["Target"].max().sum() > 0
    for c in ("Normal", "No Lung Opacity / Not Normal"):
        assert f[c].sum() == (info["class"] == c).sum() > 0
    assert len(m.boxes) == int((lab["Target"] == 1).sum()) and set(m.boxes["label"]) == {"Lung Opacity"}
    by_split = f.groupby("split")["patient"].apply(set)
    assert set(by_split.index) == {"train", "val", "test"}  # no official split: cxrlab's, by patient
    assert not (by_split["train"] & by_split["test"]) and "made by cxrlab" in m.split_method
    pneu = load_source("rsna", str(rsna), ["Pneumonia"])
    assert pneu.frame["Pneumonia"].sum() == f["Lung Opacity"].sum() and set(pneu.boxes["label"]) == {"Pneumonia"}


def test_sex_age_view_come_from_the_dicom_headers(rsna):
    m = load_source("rsna", str(rsna))
    heads = [pydicom.dcmread(rsna / p, stop_before_pixels=True) for p in m.frame["image"]]
    assert list(m.frame["sex"]) == [str(h.PatientSex) for h in heads]
    assert list(m.frame["age"]) == [float(str(h.PatientAge)) for h in heads]
    assert list(m.frame["view"]) == [str(h.ViewPosition) for h in heads]
    assert set(m.frame["view"]) == {"AP", "PA"}
    assert read_gray(rsna / m.frame["image"].iloc[0]).shape == (64, 64)
    assert load_source("rsna", str(rsna), options={"headers": False}).frame["sex"].eq("").all()


def test_bad_input_is_one_line_naming_the_file_and_row(rsna, tmp_path):
    root = copy_of(rsna, tmp_path)
    path = root / "stage_2_train_labels.csv"
    good = pd.read_csv(path)
    pos = int(good.index[good["Target"] == 1][0])
    neg = int(good.index[good["Target"] == 0][0])

    bad = good.copy()
    bad.loc[pos, "width"] = 400.0
    bad.to_csv(path, index=False)
    msg = one_line(lambda: load_source("rsna", str(root)))
    assert "stage_2_train_labels.csv" in msg and f"line {pos + 2}" in msg and "64 x 64" in msg

    bad = good.copy()
    bad.loc[neg, ["x", "y", "width", "height"]] = 1.0
    bad.to_csv(path, index=False)
    msg = one_line(lambda: load_source("rsna", str(root)))
    assert f"line {neg + 2}" in msg and "Target 0 with a box" in msg

    good.drop(columns=["Target"]).to_csv(path, index=False)
    assert "missing columns ['Target']" in one_line(lambda: load_source("rsna", str(root)))

    good.to_csv(path, index=False)
    info = pd.read_csv(root / "stage_2_detailed_class_info.csv")
    info.loc[pos, "class"] = "Normal"
    info.to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    msg = one_line(lambda: load_source("rsna", str(root)))
    assert "stage_2_detailed_class_info.csv" in msg and "'Normal' but Target 1" in msg
    (root / "stage_2_detailed_class_info.csv").unlink()
    assert load_source("rsna", str(root)).frame["Lung Opacity"].sum() > 0  # the class table is optional ...
    msg = one_line(lambda: load_source("rsna", str(root), ["Normal"]))  # ... unless its classes are asked for
    assert "stage_2_detailed_class_info.csv" in msg and "not found" in msg
    assert "unknown labels" in one_line(lambda: load_source("rsna", str(root), ["Effusion"]))


def test_localize_scores_the_rsna_boxes(rsna, tmp_path):
    from cxrlab.workflows import localize_run

    train_tiny(rsna, tmp_path, "r", 0, source="rsna", labels=["Lung Opacity"], val_fraction=None)
    result = localize_run(tmp_path / "r", figures=0)
    from cxrlab.run import RunFolder

    test = set(RunFolder(tmp_path / "r").read_split()["test"])
    lab = pd.read_csv(rsna / "stage_2_train_labels.csv")
    in_test = lab["patientId"].map(lambda p: f"stage_2_train_images/{p}.dcm").isin(test)
    assert result["matching"]["matched"] == int((in_test & (lab["Target"] == 1)).sum()) > 0
    r = run_cli("localize", tmp_path / "r")
    assert r.exit_code == 0, r.output


@needs_real
def test_a_real_nih_derived_dicom_reads_in_the_rsna_layout(tmp_path):
    """The SIIM sample is an NIH image with the same de-identified header RSNA's DICOMs have ("62", not "062Y")."""
    src, head = real_dicom()
    pid = str(head.PatientID)
    (tmp_path / "stage_2_train_images").mkdir()
    shutil.copy(src, tmp_path / "stage_2_train_images" / f"{pid}.dcm")
    rows = [[pid, 100.0, 200.0, 300.0, 400.0, 1], [pid, 600.0, 200.0, 300.0, 400.0, 1]]
    pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        tmp_path / "stage_2_train_labels.csv", index=False)
    m = load_source("rsna", str(tmp_path))
    row = m.frame.iloc[0]
    assert (row["sex"], row["age"], row["view"]) == (str(head.PatientSex), float(str(head.PatientAge)),
                                                    str(head.ViewPosition))
    assert m.image_sizes[row["image"]] == (int(head.Columns), int(head.Rows)) and len(m.boxes) == 2
    assert read_gray(tmp_path / row["image"]).shape == (int(head.Rows), int(head.Columns))
    pd.DataFrame([[pid, 900.0, 200.0, 300.0, 400.0, 1]], columns=["patientId", "x", "y", "width", "height",
                                                                  "Target"]).to_csv(
        tmp_path / "stage_2_train_labels.csv", index=False)
    msg = one_line(lambda: load_source("rsna", str(tmp_path)))
    assert "line 2" in msg and f"{head.Columns} x {head.Rows}" in msg


def test_nih_images_shipped_as_rsna_dicoms_are_found_by_the_duplicate_check(rsna, tiny_phantom, tmp_path):
    """RSNA's images are NIH's: planted copies (NIH phantom PNGs rewritten as RSNA DICOMs) are all found,
    the RSNA phantom's own images are not."""
    import cv2

    from cxrlab.data.io import to_uint8_resized
    from cxrlab.data.phantom_layouts.common import save_dicom
    from cxrlab.evaluate.duplicates import find_duplicates

    nih = sorted((tiny_phantom / "images").glob("*.png"))[:30]
    ref = np.stack([to_uint8_resized(read_gray(p), 32) for p in nih])
    root = copy_of(rsna, tmp_path)
    lab = pd.read_csv(root / "stage_2_train_labels.csv")
    negatives = list(dict.fromkeys(lab.loc[lab["Target"] == 0, "patientId"]))[:6]
    for pid, src in zip(negatives, nih[::5], strict=True):  # planted: six NIH images under RSNA ids
        save_dicom(root / "stage_2_train_images" / f"{pid}.dcm", cv2.imread(str(src), cv2.IMREAD_GRAYSCALE),
                   PatientID=pid, PatientSex="F", PatientAge="40", ViewPosition="PA")
    m = load_source("rsna", str(root))
    query = np.stack([to_uint8_resized(read_gray(root / p), 32) for p in m.frame["image"]])
    found = find_duplicates(ref, [p.name for p in nih], query, list(m.frame["patient"]))
    assert {mt.query for mt in found.matches} == set(negatives)
    assert {mt.reference for mt in found.matches} == {p.name for p in nih[::5]}


def test_a_header_that_holds_no_age_names_the_dicom(rsna, tmp_path):
    from cxrlab.data.phantom_layouts.common import save_dicom

    root = copy_of(rsna, tmp_path)
    m = load_source("rsna", str(root))
    rel = m.frame["image"].iloc[3]
    pixels = read_gray(root / rel).astype(np.uint8)
    save_dicom(root / rel, pixels, PatientSex="F", PatientAge="unknown", ViewPosition="PA")
    msg = one_line(lambda: load_source("rsna", str(root)))
    assert rel in msg and "PatientAge 'unknown'" in msg
    save_dicom(root / rel, pixels, PatientSex="X", PatientAge="40", ViewPosition="PA")
    msg = one_line(lambda: load_source("rsna", str(root)))
    assert rel in msg and "PatientSex 'X'" in msg
