"""Phantom modes: each layout read back by its real source; subtle nodules; the default is unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxrlab.data.labels import apply_policy
from cxrlab.data.phantom import render
from cxrlab.data.phantom_dataset import write_phantom, write_phantom_dataset
from cxrlab.data.phantom_layouts.chexpert import (
    COMPETITION,
    RULES,
    grades,
    rules_of,
    train_value,
    write_phantom_chexpert,
)
from cxrlab.data.phantom_layouts.common import draw
from cxrlab.data.phantom_layouts.cxr5 import CLASSES, write_phantom_cxr5
from cxrlab.data.phantom_layouts.kermany import write_phantom_kermany
from cxrlab.data.sources import load_source

# sha256 over (relative path, bytes) of every file of write_phantom(n=40, size=64, seed=0), computed
# with the code before the phantom modes existed.  It pins the default NIH output (what `cxrlab demo`
# uses) byte for byte; it also depends on OpenCV's PNG encoder, so an OpenCV upgrade may change it.
DEFAULT_NIH_SHA256 = "1e93fccff9123c85e186cf99ef6e68759cc086848c193258d0c4182d054808f3"


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_default_nih_output_is_byte_identical(tmp_path):
    assert tree_hash(write_phantom(tmp_path / "a", n=40, size=64, seed=0, workers=1)) == DEFAULT_NIH_SHA256
    got = write_phantom_dataset("nih14", tmp_path / "b", n=40, size=64, seed=0, workers=1)
    assert got.source == "nih14" and got.task == "multilabel"
    assert tree_hash(got.root) == DEFAULT_NIH_SHA256


def _nodule_box(item):
    return next(b for lab, b in item.boxes if lab == "Nodule")


def _local_contrast(pixels: np.ndarray, box, size: int) -> float:
    """Peak inside the nodule minus the surrounding ring, in ring standard deviations, at ``size`` px."""
    f = size / pixels.shape[0]
    img = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    x, y, w, h = (v * f for v in box)
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(xx - (x + w / 2), yy - (y + h / 2))
    r = max(w / 2, 0.5)
    ring = img[(d > r + 1.5) & (d < 4 * r + 4)]
    return float((img[d <= r + 0.5].max() - ring.mean()) / (ring.std() + 1e-6))


def test_subtle_nodules_are_small_faint_and_lost_at_64px(tmp_path):
    widths, default_widths, c64, c256 = [], [], [], []
    for i in range(40):
        a, b = render(i, size=256, seed=0, subtle=True), render(i, size=256, seed=0)
        assert a.labels == b.labels  # same findings, only the nodules differ
        if not a.labels["Nodule"]:
            continue
        box = _nodule_box(a)
        widths.append(box[2] / 256)
        default_widths.append(_nodule_box(b)[2] / 256)
        x, y, w, h = box
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
        c64.append(_local_contrast(a.pixels, box, 64))
        c256.append(_local_contrast(a.pixels, box, 256))
    assert len(widths) >= 5
    assert max(widths) <= 0.03 and np.mean(widths) < 0.4 * np.mean(default_widths)
    assert np.median(c256) > 2.0 and np.median(c64) < 0.5 * np.median(c256)
    out = write_phantom(tmp_path, n=12, size=64, seed=0, workers=1, subtle=True)
    assert json.loads((out / "phantom.json").read_text())["subtle"] is True


def test_subtle_nodules_are_found_at_256px_but_look_like_their_mimics_at_64px():
    """A scale-matched blob detector (max of a difference of Gaussians, position unknown)."""
    from sklearn.metrics import roc_auc_score

    items = [render(i, size=256, seed=0, subtle=True) for i in range(120)]
    y = [it.labels["Nodule"] for it in items]
    auc = {}
    for res in (64, 256):
        scores = []
        for it in items:
            a = cv2.resize(it.pixels.astype(np.float32), (res, res), interpolation=cv2.INTER_AREA)
            sigma = 0.5 * res / 256 if res == 256 else 0.8
            d = cv2.GaussianBlur(a, (0, 0), sigma) - cv2.GaussianBlur(a, (0, 0), 3 * sigma)
            scores.append(d[int(0.2 * res):int(0.85 * res), int(0.15 * res):int(0.85 * res)].max())
        auc[res] = roc_auc_score(y, scores)
    assert auc[256] > 0.9 and auc[64] < 0.65, auc


# --- CheXpert ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory) -> Path:
    return write_phantom_chexpert(tmp_path_factory.mktemp("chexpert"), n=80, size=48, seed=2, workers=1)


def test_chexpert_layout_read_by_the_chexpert_source(chexpert_root):
    assert chexpert_root.name == "CheXpert-v1.0-small"
    m = load_source("chexpert", str(chexpert_root), val_fraction=0.15, seed=0)
    f = m.frame
    assert m.labels == list(COMPETITION) and set(f["split"]) == {"train", "val", "test"}
    assert set(f["view"]) == {"AP", "PA", "LATERAL"}
    lateral = f[f["view"] == "LATERAL"]
    assert 0.3 * 80 < len(lateral) < 0.7 * 80
    assert lateral["image"].str.endswith("view2_lateral.jpg").all()
    frontal_studies = set(f.loc[f["view"] != "LATERAL", "study"])
    assert set(lateral["study"]) <= frontal_studies and len(frontal_studies) == 80
    # valid.csv is the test split: true labels only; train.csv has uncertain and blank entries
    test, train = m.targets(m.split("test")), m.targets(f[f["split"] != "test"])
    assert np.isin(test, [0.0, 1.0]).all()
    assert (train == -1).any(axis=0).all() and np.isnan(train).any()
    groups = f.groupby("split")["patient"].apply(set)
    assert not (groups["test"] & (groups["train"] | groups["val"]))
    for views, want in (("frontal", len(f) - len(lateral)), ("lateral", len(lateral))):
        mv = load_source("chexpert", str(chexpert_root), options={"views": views})
        assert len(mv.frame) == want


def test_chexpert_labels_follow_the_hidden_truth(chexpert_root):
    truth = pd.read_csv(chexpert_root / "phantom_truth.csv").set_index("Path")
    for name in ("train.csv", "valid.csv"):
        table = pd.read_csv(chexpert_root / name).set_index("Path")
        for lab in COMPETITION:
            v, t, g = table[lab], truth.loc[table.index, lab], truth.loc[table.index, f"{lab} grade"]
            if name == "valid.csv":
                assert (v == t).all()
                continue
            assert (t[v == 1] == 1).all()  # a positive is true
            assert (t[(v == 0) | v.isna()] == 0).all()  # a negative or blank is absent
            assert set(g[v == -1]) <= {"clear", "mild", "lookalike"}
    # the same study: frontal and lateral carry the same labels
    train = pd.read_csv(chexpert_root / "train.csv")
    train["study"] = train["Path"].str.rsplit("/", n=1).str[0]
    assert (train.groupby("study")[list(COMPETITION)].nunique(dropna=False) == 1).all().all()


def test_uncertainty_policies_differ_by_the_known_rule():
    rules, n = rules_of("chexpert"), 4000
    rows = []
    for i in range(n):
        g = grades(i, 0, rules)
        m = draw(0, 9, i)
        m.random(), m.random()  # the AP/PA and lateral draws come first
        rows.append({lab: (g[lab], train_value(g[lab], rules.get(lab), m)) for lab in g})
    for lab in COMPETITION:
        grade = np.array([r[lab][0] for r in rows])
        value = np.array([np.nan if r[lab][1] is None else r[lab][1] for r in rows])
        unc, true = value == -1, np.isin(grade, ["clear", "mild"])
        rule = RULES[lab]
        assert abs(unc[grade == "mild"].mean() - rule.p_mild) < 0.1
        assert abs(unc[grade == "lookalike"].mean() - rule.p_lookalike) < 0.12
        ones = np.where(unc, 1.0, np.nan_to_num(value)) == true
        zeros = np.where(unc, 0.0, np.nan_to_num(value)) == true
        if lab in ("Atelectasis", "Edema"):  # -1 is mostly a faint true finding: U-Ones fits
            assert true[unc].mean() > 0.65 and ones.mean() > zeros.mean() + 0.02
        else:  # -1 is mostly an absent look-alike: U-Zeros fits
            assert true[unc].mean() < 0.5 and zeros.mean() > ones.mean() + 0.01


def test_chexpert_certain_mode_keeps_the_images(chexpert_root, tmp_path):
    root = write_phantom_chexpert(tmp_path, n=80, size=48, seed=2, workers=1, uncertain_rule=None)
    train = pd.read_csv(root / "train.csv")
    assert not (train[list(COMPETITION)] == -1).any().any()
    for p in train["Path"].iloc[:10]:
        assert (root.parent / p).read_bytes() == (chexpert_root.parent / p).read_bytes()
    m = load_source("chexpert", str(chexpert_root))
    raw = m.targets(m.split("train"))
    ones, zeros = (apply_policy(raw, m.labels, u).targets for u in ("ones", "zeros"))
    assert (ones != zeros).sum() == (raw == -1).sum() > 0


# --- Kermany ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [1, 0])
def test_kermany_layout_read_by_the_kermany_source(tmp_path, shared):
    root = write_phantom_kermany(tmp_path, n=90, size=48, seed=1, workers=1, shared_patients=shared)
    meta = json.loads((root / "phantom.json").read_text())
    m = load_source("kermany", str(root), options={"merge_val": False})
    f = m.frame
    assert set(f["split"]) == {"train", "val", "test"} and m.labels == ["Pneumonia"]
    assert set(f.groupby("split")["Pneumonia"].nunique()) == {2}  # both classes in every split
    assert (f["Pneumonia"] == f["image"].str.contains("/PNEUMONIA/")).all()
    pneu = f["Pneumonia"] == 1
    assert f.loc[pneu, "patient"].str.fullmatch(r"person\d+").all()
    assert f.loc[~pneu, "patient"].str.fullmatch(r"(NORMAL2-)?IM-\d{4}").all()
    assert f.loc[pneu, "image"].str.contains(r"person\d+_(?:bacteria|virus)_\d+\.jpeg$").all()
    assert (f.groupby("patient")["Pneumonia"].nunique() == 1).all()
    assert 0.55 < f["Pneumonia"].mean() < 0.9
    groups = f.groupby("split")["patient"].apply(set)
    assert sorted(groups["train"] & groups["test"]) == meta["shared_patients"]
    assert len(meta["shared_patients"]) == shared


# --- five classes -----------------------------------------------------------------------------


def test_cxr5_npz_and_folders_read_by_their_sources(tmp_path):
    npz_root = write_phantom_cxr5(tmp_path / "n", n=60, size=40, seed=4, fmt="npz", workers=1)
    folder_root = write_phantom_cxr5(tmp_path / "f", n=60, size=40, seed=4, fmt="folder", workers=1)
    a = load_source("npz", str(npz_root))  # class names from the file's label_names
    b = load_source("folder", str(folder_root), labels=list(CLASSES))
    assert a.labels == b.labels == list(CLASSES) and a.task == b.task == "multiclass"
    counts = json.loads((tmp_path / "n" / "phantom.json").read_text())["counts"]
    for m in (a, b):
        per = m.frame.groupby("split")[list(CLASSES)].sum()
        assert {s: {c: int(per.loc[s, c]) for c in CLASSES} for s in counts} == counts
        assert (per > 0).all().all()  # every class in every split
    data = np.load(npz_root)
    train = sorted(b.split("train")["image"], key=lambda p: Path(p).name)
    assert len(train) == len(data["train_images"])
    for k in (0, len(train) - 1):
        assert np.array_equal(cv2.imread(str(folder_root / train[k]), cv2.IMREAD_GRAYSCALE), data["train_images"][k])
        assert CLASSES[int(data["train_labels"][k])] == Path(train[k]).parent.name


# --- the entry point and determinism ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "n", "opts"), [
    ("chexpert", 16, {}), ("kermany", 40, {}), ("cxr5", 20, {"fmt": "folder"}), ("cxr5", 20, {"fmt": "npz"})])
def test_entry_point_is_deterministic_and_readable(tmp_path, kind, n, opts):
    a = write_phantom_dataset(kind, tmp_path / "a", n, 40, 7, workers=1, **opts)
    b = write_phantom_dataset(kind, tmp_path / "b", n, 40, 7, workers=1, **opts)
    c = write_phantom_dataset(kind, tmp_path / "c", n, 40, 8, workers=1, **opts)
    images = [p for p in (tmp_path / "a").rglob("*") if p.suffix in (".jpg", ".jpeg", ".png")]
    assert len(images) >= n or a.source == "npz"
    for p in images:
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    m_a = load_source(a.source, str(a.root), labels=a.labels if a.source != "kermany" else None)
    m_b = load_source(b.source, str(b.root), labels=b.labels if b.source != "kermany" else None)
    m_c = load_source(c.source, str(c.root), labels=c.labels if c.source != "kermany" else None)
    assert m_a.frame.equals(m_b.frame) and not m_a.frame.equals(m_c.frame)
    assert m_a.labels == a.labels and m_a.task == a.task
    if a.source == "npz":
        x, y = np.load(a.root), np.load(b.root)
        assert all(np.array_equal(x[k], y[k]) for k in x.files)
