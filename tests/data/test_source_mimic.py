"""The ``mimic`` source (MIMIC-CXR-JPG) on its phantom layout: counts against an independent pandas
read of the written tables, the labeller and test-label options, bad input, and external validation of
a NIH-trained run on it (labels matched by name)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, train_tiny
from cxrlab.data.io import read_gray
from cxrlab.data.phantom import render
from cxrlab.data.phantom_dataset import write_phantom, write_phantom_dataset
from cxrlab.data.sources import load_source
from cxrlab.data.sources.chexpert import OBSERVATIONS
from cxrlab.errors import CxrlabError

ALL = list(OBSERVATIONS)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    ps = write_phantom_dataset("mimic", tmp_path_factory.mktemp("mimic"), n=120, size=32, seed=3, workers=1)
    return ps.root


def tables(root):
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    return meta, split


def test_reads_the_phantom_as_pandas_counts_it(phantom):
    m = load_source("mimic", str(phantom), labels=ALL)
    meta, split = tables(phantom)
    f = m.frame
    assert len(f) == len(meta) > 120  # some studies hold two images
    assert f["patient"].nunique() == meta["subject_id"].nunique()
    # split sizes: the official split (validate -> val), no image moved
    want = split.set_index("dicom_id")["split"].replace({"validate": "val"})
    got = f.assign(dicom=f["image"].str.extract(r"/([^/]+)\.jpg$")[0]).set_index("dicom")["split"]
    assert (got.sort_index() == want.sort_index()).all()
    assert f["split"].value_counts().to_dict() == want.value_counts().to_dict()
    # per-label positives and uncertain: the study table joined to the images by pandas
    lab = pd.read_csv(phantom / "mimic-cxr-2.0.0-chexpert.csv.gz")
    joined = meta.merge(lab, on=["subject_id", "study_id"], how="left")
    for col in ALL:
        assert int((f[col] == 1).sum()) == int((joined[col] == 1).sum()), col
        assert int((f[col] == -1).sum()) == int((joined[col] == -1).sum()), col
        assert int(f[col].isna().sum()) == int(joined[col].isna().sum()), col
    assert (f["Pleural Effusion"] == -1).sum() > 0 and (f["Pleural Effusion"] == 1).sum() > 0
    # images are where the layout says and hold the rendered phantom
    row = f.iloc[0]
    study = int(row["study"][1:]) - 50_000_000
    img = read_gray(m.root / row["image"])
    assert img.shape == (32, 32)
    assert np.abs(img.astype(int) - render(study, 32, 3).pixels.astype(int)).mean() < 4  # JPEG
    assert set(f["view"]) <= {"AP", "PA"}


def test_negbio_and_the_radiologist_test_labels(phantom):
    neg = load_source("mimic", str(phantom), labels=ALL, options={"labeller": "negbio"}).frame
    che = load_source("mimic", str(phantom), labels=ALL).frame
    table = pd.read_csv(phantom / "mimic-cxr-2.0.0-negbio.csv.gz").set_index("study_id")
    studies = neg["study"].str[1:].astype(int)
    assert int((neg["Lung Lesion"] == -1).sum()) == int((table.loc[studies, "Lung Lesion"] == -1).sum())
    assert not neg[ALL].equals(che[ALL])
    rad = load_source("mimic", str(phantom), labels=ALL, options={"test_labels": "radiologist"}).frame
    test = rad["split"] == "test"
    assert test.sum() > 0
    truth = pd.read_csv(phantom / "phantom_truth.csv").set_index("study_id")
    t_studies = rad.loc[test, "study"].str[1:].astype(int)
    assert np.array_equal(rad.loc[test, "Pleural Effusion"].to_numpy(), truth.loc[t_studies, "Pleural Effusion"].to_numpy())
    assert not (rad.loc[test, ALL] == -1).any().any()  # radiologists: certain labels
    assert rad.loc[~test, ALL].equals(che.loc[~test, ALL])  # the rest keep the labeller's


def copy(phantom, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(phantom, dst)
    return dst


def rewrite(path, edit):
    df = pd.read_csv(path)
    df = edit(df)
    path.write_bytes(gzip.compress(df.to_csv(index=False).encode()))


def test_bad_input_is_one_line_naming_the_file(phantom, tmp_path):
    root = copy(phantom, tmp_path)
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(CxrlabError, match=r"mimic-cxr-2.0.0-chexpert.csv\(.gz\) not found"):
        load_source("mimic", str(root))
    root = copy(phantom, tmp_path / "b")
    rewrite(root / "mimic-cxr-2.0.0-metadata.csv.gz", lambda d: d.drop(columns=["ViewPosition"]))
    with pytest.raises(CxrlabError, match=r"metadata.csv.gz: missing columns \['ViewPosition'\]"):
        load_source("mimic", str(root))
    root = copy(phantom, tmp_path / "c")
    rewrite(root / "mimic-cxr-2.0.0-chexpert.csv.gz",
            lambda d: d.assign(Cardiomegaly=np.where(d.index == 4, "yes", d["Cardiomegaly"].astype(str))))
    with pytest.raises(CxrlabError, match=r"chexpert.csv.gz: column 'Cardiomegaly' holds 'yes' \(row 6\)"):
        load_source("mimic", str(root))
    root = copy(phantom, tmp_path / "d")
    rewrite(root / "mimic-cxr-2.0.0-split.csv.gz", lambda d: d.assign(split=np.where(d.index == 2, "dev", d["split"])))
    with pytest.raises(CxrlabError, match=r"split.csv.gz: split 'dev' \(row 4\)"):
        load_source("mimic", str(root))
    root = copy(phantom, tmp_path / "e")
    rewrite(root / "mimic-cxr-2.0.0-split.csv.gz", lambda d: d.iloc[1:])
    with pytest.raises(CxrlabError, match=r"metadata.csv.gz: dicom_id '.*' \(row 2\) is not in mimic-cxr-2.0.0-split"):
        load_source("mimic", str(root))
    root = copy(phantom, tmp_path / "f")
    first = next((root / "files").rglob("*.jpg"))
    first.unlink()
    with pytest.raises(CxrlabError, match=r"1 images listed but not found .*first: files/p"):
        load_source("mimic", str(root))
    with pytest.raises(CxrlabError, match="data.options.labeller: 'chexbert'"):
        load_source("mimic", str(phantom), options={"labeller": "chexbert"})


def test_external_validation_of_a_nih_run_maps_labels_by_name(phantom, tmp_path):
    from cxrlab.evaluate.records import ExternalResult
    from cxrlab.run import RunFolder

    run = train_tiny(write_phantom(tmp_path / "nih", n=90, size=32, seed=1, workers=1), tmp_path / "runs", "r", 0)
    res = run_cli("evaluate", run, "--on", "mimic", "--root", phantom, "--all-images")
    assert res.exit_code == 0, res.output
    result = ExternalResult.read(RunFolder(run).external_files("mimic")["result"])
    eff = result.labels["Effusion"]
    assert (eff.target_column, eff.canonical, eff.kind) == ("Pleural Effusion", "Pleural Effusion", "renamed")
    assert result.labels["Cardiomegaly"].kind == "exact" and result.labels["Cardiomegaly"].evaluable
    for lab in ("Nodule", "Mass"):  # MIMIC has Lung Lesion, not these: not evaluable, never negatives
        assert not result.labels[lab].evaluable
    assert result.n_images == len(load_source("mimic", str(phantom)).frame)


@pytest.mark.parametrize("kind,folder", [("mimic", "mimic-cxr-jpg/2.0.0"), ("padchest", "PadChest")])
def test_cli_writes_the_phantom_kinds(tmp_path, kind, folder):
    res = run_cli("phantom", "--out", tmp_path, "--kind", kind, "--n", 6, "--size", 32, "--workers", 1)
    assert res.exit_code == 0, res.output
    assert f"data.source={kind}" in res.output
    assert len(load_source(kind, str(tmp_path / folder)).frame) >= 6
