"""The ``padchest`` source on its phantom layout: counts against an independent pandas read of the
written table, the manual-label option, 16-bit images, the vocabulary, and bad input."""

from __future__ import annotations

import ast
import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from cxrlab.data.io import read_gray
from cxrlab.data.phantom import render
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.data.phantom_layouts.padchest import TERMS
from cxrlab.data.sources import load_source
from cxrlab.data.sources.padchest import DEFAULT, TABLE
from cxrlab.data.vocabulary import Vocabulary
from cxrlab.errors import CxrlabError


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom_dataset("padchest", tmp_path_factory.mktemp("pc"), n=90, size=32, seed=2, workers=1).root


def table(root):
    return pd.read_csv(root / f"{TABLE}.gz", dtype={"ImageDir": str, "PatientID": str})


def test_reads_the_phantom_as_pandas_counts_it(phantom):
    m = load_source("padchest", str(phantom))
    raw = table(phantom)
    f = m.frame
    assert len(f) == len(raw) and f["patient"].nunique() == raw["PatientID"].nunique()
    terms = raw["Labels"].map(lambda t: ast.literal_eval(t) if isinstance(t, str) else None)
    empty = terms.isna()
    assert empty.sum() > 0 and int(f[list(DEFAULT)].isna().all(axis=1).sum()) == int(empty.sum())
    for term in DEFAULT:
        want = int(terms.map(lambda ts, t=term: bool(ts) and t in ts).sum())
        assert int((f[term] == 1).sum()) == want, term
    assert (f["pleural effusion"] == 1).sum() > 0 and not (f[list(DEFAULT)] == -1).any().any()
    assert f["method_label"].value_counts().to_dict() == raw["MethodLabel"].value_counts().to_dict()
    age = raw["StudyDate_DICOM"] // 10000 - raw["PatientBirth"]
    assert np.array_equal(f["age"].to_numpy(), age.to_numpy())
    assert (f["sex"] == raw["PatientSex_DICOM"]).all()
    # no official split: by patient, no patient in two splits
    assert set(f["split"]) == {"train", "val", "test"}
    assert f.groupby("patient")["split"].nunique().max() == 1
    # the 16-bit PNG is the rendered phantom, exactly (PNG is lossless)
    index = 5
    img = read_gray(m.root / f["image"].iloc[index])
    assert img.dtype == np.uint16 and np.array_equal(img, render(index, 32, 2).pixels.astype(np.uint16) * 257)
    assert f["image"].iloc[index].startswith(raw["ImageDir"].iloc[index] + "/")


def test_physician_only_and_the_machine_labels_differ(phantom):
    raw = table(phantom)
    manual = load_source("padchest", str(phantom), options={"method": "physician"}).frame
    assert len(manual) == int((raw["MethodLabel"] == "Physician").sum()) > 0
    assert (manual["method_label"] == "Physician").all()
    truth = pd.read_csv(phantom / "phantom_truth.csv").set_index("ImageID")
    names = manual["image"].str.split("/").str[1]
    ok = ~manual["pleural effusion"].isna().to_numpy()
    assert np.array_equal(manual.loc[ok, "pleural effusion"].to_numpy(),
                          truth.loc[names[ok], "pleural effusion"].to_numpy())  # manual labels: the truth
    model = load_source("padchest", str(phantom), options={"method": "model"}).frame
    names = model["image"].str.split("/").str[1]
    drawn = list(TERMS.values())
    ok = ~model[drawn].isna().any(axis=1).to_numpy()
    assert model.loc[ok, drawn].to_numpy().sum() < truth.loc[names[ok], drawn].to_numpy().sum()  # machine labels miss


def test_vocabulary_maps_padchest_terms():
    matches, _ = Vocabulary.load().match(["Effusion", "Nodule", "Mass", "Hernia"], "nih14", "padchest",
                                         ["pleural effusion", "nodule", "multiple nodules", "mass", "normal"])
    by = {m.model_label: m for m in matches}
    assert (by["Effusion"].target_column, by["Effusion"].kind) == ("pleural effusion", "renamed")
    assert by["Nodule"].target_columns == ("nodule", "multiple nodules") and by["Nodule"].kind == "several-to-one"
    assert by["Mass"].target_column == "mass" and not by["Hernia"].evaluable


def copy(phantom, tmp_path):
    dst = tmp_path / "pc"
    shutil.copytree(phantom, dst)
    return dst


def rewrite(root, edit):
    df = edit(table(root))
    (root / f"{TABLE}.gz").write_bytes(gzip.compress(df.to_csv(index=False).encode()))


def test_bad_input_is_one_line_naming_the_file_and_row(phantom, tmp_path):
    root = copy(phantom, tmp_path / "a")
    (root / f"{TABLE}.gz").unlink()
    with pytest.raises(CxrlabError, match="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv\\(.gz\\) not found"):
        load_source("padchest", str(root))
    root = copy(phantom, tmp_path / "b")
    rewrite(root, lambda d: d.drop(columns=["MethodLabel"]))
    with pytest.raises(CxrlabError, match=r"csv.gz: missing columns \['MethodLabel'\]"):
        load_source("padchest", str(root))
    root = copy(phantom, tmp_path / "c")
    rewrite(root, lambda d: d.assign(Labels=np.where(d.index == 3, "pleural effusion", d["Labels"])))
    with pytest.raises(CxrlabError, match=r"column 'Labels' holds 'pleural effusion' \(row 5\); expected a list"):
        load_source("padchest", str(root))
    root = copy(phantom, tmp_path / "d")
    rewrite(root, lambda d: d.assign(PatientBirth=np.where(d.index == 0, "unknown", d["PatientBirth"].astype(str))))
    with pytest.raises(CxrlabError, match=r"column 'PatientBirth' holds 'unknown' \(row 2\)"):
        load_source("padchest", str(root))
    with pytest.raises(CxrlabError, match=r"labels \['effusion'\] appear in no 'Labels' cell"):
        load_source("padchest", str(phantom), labels=["effusion"])
    root = copy(phantom, tmp_path / "e")
    gone = sorted(root.glob("*/*.png"))[:3]
    for p in gone:
        p.unlink()
    with pytest.raises(CxrlabError, match=r"3 images listed but not found .*-o missing=skip"):
        load_source("padchest", str(root))
    kept = load_source("padchest", str(root), options={"missing": "skip"}).frame
    assert len(kept) == len(table(root)) - 3
    with pytest.raises(CxrlabError, match="data.options.method: 'manual'"):
        load_source("padchest", str(phantom), options={"method": "manual"})
