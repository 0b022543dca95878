"""Every source on a synthetic tree in its published layout, and the bad-input cases."""

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from cxrlab.data.sources import load_source
from cxrlab.data.sources.kermany import patient_from_name
from cxrlab.errors import CxrlabError


def png(path, value=100, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size, size), value, np.uint8)
    img[5:15, 5:15] = 255 - value
    cv2.imwrite(str(path), img)
    return path


def no_shared_patient(frame):
    sets = frame.groupby("split")["patient"].apply(set)
    names = list(sets.index)
    return all(not (sets[a] & sets[b]) for i, a in enumerate(names) for b in names[i + 1:])


# ---- CheXpert ----------------------------------------------------------------------
def make_chexpert(root, n_patients=30):
    base = root / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, n_patients + 1):
        for view in ("frontal", "lateral"):
            rel = f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_{view}.jpg"
            png(root / rel)
            vals = rng.choice([1.0, 0.0, -1.0, np.nan], size=5)
            rows.append([rel, "Female", 50, view.capitalize(), "AP" if view == "frontal" else "", *vals])
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "Atelectasis", "Cardiomegaly",
            "Consolidation", "Edema", "Pleural Effusion"]
    pd.DataFrame(rows, columns=cols).to_csv(base / "train.csv", index=False)
    valid = []
    for p in range(900, 905):
        rel = f"CheXpert-v1.0-small/valid/patient{p:05d}/study1/view1_frontal.jpg"
        png(root / rel)
        valid.append([rel, "Male", 60, "Frontal", "PA", 1.0, 0.0, 0.0, 1.0, 0.0])
    pd.DataFrame(valid, columns=cols).to_csv(base / "valid.csv", index=False)
    return base, pd.DataFrame(rows, columns=cols)


def test_chexpert_keeps_uncertain_and_blank_and_parses_views(tmp_path):
    base, table = make_chexpert(tmp_path)
    m = load_source("chexpert", str(base))
    assert m.labels == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    train = m.frame[m.frame["split"] != "test"]
    assert int((train[m.labels] == -1).sum().sum()) == int((table[m.labels] == -1).sum().sum())
    assert int(train[m.labels].isna().sum().sum()) == int(table[m.labels].isna().sum().sum())
    assert set(m.frame["view"]) == {"AP", "LATERAL", "PA"}
    assert (m.frame["split"] == "test").sum() == 5 and (m.frame["split"] == "val").sum() > 0
    assert no_shared_patient(m.frame)
    assert (m.root / m.frame["image"].iloc[0]).is_file()
    frontal = load_source("chexpert", str(base), options={"views": "frontal"})
    assert "LATERAL" not in set(frontal.frame["view"])


def test_chexpert_bad_values_and_missing_columns(tmp_path):
    base, table = make_chexpert(tmp_path, 4)
    table.loc[2, "Edema"] = 2
    table.to_csv(base / "train.csv", index=False)
    with pytest.raises(CxrlabError, match="'Edema' holds 2"):
        load_source("chexpert", str(base))
    table.drop(columns=["Edema"]).to_csv(base / "train.csv", index=False)
    with pytest.raises(CxrlabError, match=r"missing columns \['Edema'\]"):
        load_source("chexpert", str(base))


# ---- Kermany -----------------------------------------------------------------------
@pytest.mark.parametrize("name,patient", [
    ("person1234_bacteria_5678.jpeg", "person1234"), ("person7_virus_2.jpeg", "person7"),
    ("IM-0115-0001.jpeg", "IM-0115"), ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
])
def test_kermany_patient_ids(name, patient):
    assert patient_from_name(name) == patient


def test_kermany_layout_val_carved_by_patient(tmp_path):
    for split, n in (("train", 12), ("val", 2), ("test", 4)):
        for i in range(n):
            png(tmp_path / split / "NORMAL" / f"IM-{split[:2]}{i:02d}-0001.jpeg")
            png(tmp_path / split / "PNEUMONIA" / f"person{split[:2]}{i}_bacteria_{i}.jpeg")
            png(tmp_path / split / "PNEUMONIA" / f"person{split[:2]}{i}_virus_{i + 100}.jpeg")
    m = load_source("kermany", str(tmp_path), val_fraction=0.25)
    assert m.task == "binary" and m.labels == ["Pneumonia"]
    assert (m.frame["split"] == "test").sum() == 12
    assert (m.frame["split"] == "val").sum() > 0
    assert no_shared_patient(m.frame)
    (tmp_path / "test" / "NORMAL").rename(tmp_path / "gone")
    (tmp_path / "test" / "NORMAL").mkdir()
    with pytest.raises(CxrlabError, match="empty folder"):
        load_source("kermany", str(tmp_path))


# ---- folder / csv / npz ---------------------------------------------------------------
def test_folder_source_is_multiclass_and_empty_folder_is_an_error(tmp_path):
    for cls in ("COVID", "Normal", "TB"):
        for i in range(10):
            png(tmp_path / cls / f"{cls}_{i}.png")
    m = load_source("folder", str(tmp_path))
    assert m.task == "multiclass" and m.labels == ["COVID", "Normal", "TB"]
    assert (m.frame[m.labels].sum(axis=1) == 1).all()
    assert set(m.frame["split"]) == {"train", "val", "test"}
    (tmp_path / "Empty").mkdir()
    with pytest.raises(CxrlabError, match="Empty: empty class folder"):
        load_source("folder", str(tmp_path))
    with pytest.raises(CxrlabError, match="dataset folder not found"):
        load_source("folder", str(tmp_path / "nope"))


def test_csv_source_multilabel_multiclass_and_errors(tmp_path):
    for i in range(20):
        png(tmp_path / "img" / f"{i}.png")
    rows = pd.DataFrame({"path": [f"img/{i}.png" for i in range(20)], "patient": [f"p{i // 2}" for i in range(20)],
                         "A": [1, 0, -1, None] * 5, "B": [0, 1] * 10,
                         "label": ["x", "y", "z", "x"] * 5})
    rows.to_csv(tmp_path / "labels.csv", index=False)
    ml = load_source("csv", str(tmp_path), labels=["A", "B"])
    assert ml.task == "multilabel" and int((ml.frame["A"] == -1).sum()) == 5
    assert no_shared_patient(ml.frame)
    mc = load_source("csv", str(tmp_path / "labels.csv"))
    assert mc.task == "multiclass" and mc.labels == ["x", "y", "z"]
    rows.assign(path=[f"img/{i}.png" for i in range(18)] + ["img/missing1.png", "img/missing2.png"]).to_csv(
        tmp_path / "bad.csv", index=False)
    with pytest.raises(CxrlabError, match=r"2 image paths do not exist \(first: img/missing1.png, img/missing2.png\)"):
        load_source("csv", str(tmp_path / "bad.csv"), labels=["A"])
    rows.rename(columns={"path": "file"}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(CxrlabError, match="missing the image path column"):
        load_source("csv", str(tmp_path / "nopath.csv"))
    rows.assign(A=["maybe"] * 20).to_csv(tmp_path / "badval.csv", index=False)
    with pytest.raises(CxrlabError, match="'A' holds 'maybe'"):
        load_source("csv", str(tmp_path / "badval.csv"), labels=["A"])
    dup = pd.concat([rows, rows.head(1)])
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(CxrlabError, match="duplicate image ids"):
        load_source("csv", str(tmp_path / "dup.csv"), labels=["A"])


def test_npz_source_exports_png_and_reads_classes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 30), ("val", 6), ("test", 9)):
        arrays[f"{s}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 5, size=(n, 1))
    np.savez(tmp_path / "cxr5.npz", **arrays)
    names = ["Pneumonia", "TB", "Lung Opacity", "COVID", "Normal"]
    m = load_source("npz", str(tmp_path), labels=names)
    assert m.task == "multiclass" and m.labels == names
    assert m.frame["split"].value_counts().to_dict() == {"train": 30, "test": 9, "val": 6}
    first = cv2.imread(str(m.root / m.frame["image"].iloc[0]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(first, arrays["train_images"][0])
    np.savez(tmp_path / "cxr5.npz", train_images=arrays["train_images"])
    with pytest.raises(CxrlabError, match="has no 'train_labels'"):
        load_source("npz", str(tmp_path / "cxr5.npz"))


# ---- NIH bad input ---------------------------------------------------------------------
def test_nih_unknown_label_and_missing_images(tiny_phantom, tmp_path):
    import shutil

    root = tmp_path / "nih"
    shutil.copytree(tiny_phantom, root)
    entry = (root / "Data_Entry_2017.csv").read_text().splitlines()
    entry[1] = entry[1].replace(entry[1].split(",")[1], "Pneumonitis", 1)
    (root / "Data_Entry_2017.csv").write_text("\n".join(entry) + "\n")
    with pytest.raises(CxrlabError, match=r"unknown labels in 'Finding Labels': \['Pneumonitis'\]"):
        load_source("nih14", str(root))
    shutil.copy(tiny_phantom / "Data_Entry_2017.csv", root / "Data_Entry_2017.csv")
    for p in sorted((root / "images").glob("*.png"))[:3]:
        p.unlink()
    with pytest.raises(CxrlabError, match="3 listed images not found"):
        load_source("nih14", str(root))
    (root / "Data_Entry_2017.csv").write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(CxrlabError, match="missing columns"):
        load_source("nih14", str(root))


# ---- CLI ----------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cxrlab", *args], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "CXRLAB_QUIET": "1"})


def test_data_summary_cli_writes_json(tiny_phantom, tmp_path):
    out = tmp_path / "s.json"
    r = run_cli("data", "summary", "--source", "nih14", "--root", str(tiny_phantom),
                "--labels", "Nodule,Mass,Cardiomegaly", "--json", str(out))
    assert r.returncode == 0, r.stderr
    import json

    s = json.loads(out.read_text())
    assert sum(s["splits"][k]["images"] for k in ("train", "val", "test")) == 120
    assert s["patient_overlap"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert "Cardiomegaly" in r.stdout


def test_data_check_reports_every_bad_file_and_fails(tmp_path):
    for i in range(6):
        png(tmp_path / "A" / f"{i}.png")
        png(tmp_path / "B" / f"{i}.png")
    (tmp_path / "A" / "0.png").write_bytes(b"")
    good = (tmp_path / "A" / "1.png").read_bytes()
    (tmp_path / "A" / "1.png").write_bytes(good[: len(good) // 3])
    cv2.imwrite(str(tmp_path / "B" / "0.png"), np.zeros((8, 8), np.uint8))
    r = run_cli("data", "check", "--source", "folder", "--root", str(tmp_path))
    assert r.returncode == 1
    assert "0.png: image file is empty" in r.stderr and "1.png: truncated PNG" in r.stderr
    assert "too small" in r.stderr and "3 of 12 images have problems" in r.stderr
    assert "Traceback" not in r.stderr
