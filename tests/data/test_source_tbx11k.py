"""The ``tbx11k`` source on its phantom layout and on the shipped real sample, and its bad-input lines."""

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REAL, run_cli
from cxrlab.data.io import read_gray
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.data.sources import load_source
from cxrlab.data.sources.tbx11k import CATEGORIES, CLASSES
from cxrlab.errors import CxrlabError
from cxrlab.explain.localize import boxes_outside, match_boxes

SAMPLE = REAL / "samples" / "tbx11k_test_data"
FOLDER_CLASS = {"health": "Healthy", "sick": "Sick but not TB", "tb": "Tuberculosis"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    ps = write_phantom_dataset("tbx11k", tmp_path_factory.mktemp("tbx11k"), n=48, size=48, seed=5, workers=1)
    assert (ps.source, ps.labels, ps.task) == ("tbx11k", list(CLASSES), "multiclass")
    return ps.root


def copy_of(phantom, tmp_path):
    return shutil.copytree(phantom, tmp_path / "tbx")


def written_tables(root):
    """An independent count of what the phantom wrote: the split lists and the COCO files, by pandas."""
    lists = pd.concat([pd.read_csv(root / "lists" / f"TBX11K_{s}.txt", header=None, names=["name"]).assign(split=s)
                       for s in ("train", "val")], ignore_index=True)
    lists["cls"] = lists["name"].str.split("/").str[0].map(FOLDER_CLASS)
    anns = []
    for s in ("train", "val"):
        coco = json.loads((root / "annotations" / "json" / f"TBX11K_{s}.json").read_text())
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        anns += [(names[a["image_id"]], cats[a["category_id"]]) for a in coco["annotations"]]
    return lists, pd.DataFrame(anns, columns=["name", "category"])


def test_reads_its_phantom_layout(phantom):
    lists, anns = written_tables(phantom)
    m = load_source("tbx11k", str(phantom))
    f = m.frame
    assert m.task == "multiclass" and m.labels == list(CLASSES)
    assert len(f) == len(lists) == len(list((phantom / "imgs").glob("*/*.png")))
    assert f["patient"].nunique() == len(lists)  # one image per patient
    got = f.assign(name=f["image"].str.slice(5)).set_index("name")
    for cls in CLASSES:
        assert int(f[cls].sum()) == int((lists["cls"] == cls).sum())
    assert (f[list(CLASSES)].sum(axis=1) == 1).all()
    # the official val list is the test split; validation is carved from the official train list
    official = got.loc[lists["name"], "split"].to_numpy()
    assert ((official == "test") == (lists["split"] == "val").to_numpy()).all()
    assert (official[(lists["split"] == "train").to_numpy()] != "test").all()
    assert (f["split"] == "val").any() and m.split_method.startswith("the dataset's own train/test split")
    assert len(m.boxes) == len(anns) == int((lists["cls"] == "Tuberculosis").sum())
    assert m.boxes["category"].value_counts().to_dict() == anns["category"].value_counts().to_dict()
    assert set(m.boxes["label"]) == {"Tuberculosis"} and set(m.boxes["category"]) <= set(CATEGORIES)
    assert boxes_outside(m.boxes, m.image_sizes).empty
    assert set(m.image_sizes.values()) == {(48, 48)}
    img = read_gray(phantom / f["image"].iloc[0])
    assert img.shape == (48, 48)
    # localize finds every box on the TB output once the images are a run's test split
    matched, counts = match_boxes(m.boxes, list(f["image"]), labels=list(CLASSES))
    assert counts["matched"] == len(anns) and counts["unknown_label"] == 0


def test_box_lies_on_the_drawn_tb_pattern(tmp_path):
    """The written box is where the lesion is: against the same patient and pose drawn healthy (its
    grey levels fitted linearly, since acquisition rescales each image), the TB image is brighter
    inside its box and not outside it."""
    from cxrlab.data.phantom_layouts.tbx11k import _render

    inside, outside = [], []
    for i in range(8):
        box = _render((i, 96, 1, "tb", str(tmp_path / "tb.png")))
        assert _render((i, 96, 1, "health", str(tmp_path / "h.png"))) is None
        tb, healthy = (read_gray(tmp_path / f).astype(float).ravel() for f in ("tb.png", "h.png"))
        excess = (tb - np.polyval(np.polyfit(healthy, tb, 1), healthy)).reshape(96, 96)
        x, y, w, h = (int(round(v)) for v in box)
        mask = np.zeros(excess.shape, bool)
        mask[y:y + h, x:x + w] = True
        inside.append(excess[mask].mean())
        outside.append(excess[~mask].mean())
    assert min(inside) > 0 and np.mean(inside) > 5 * np.abs(outside).max(), (inside, outside)


def test_binary_protocol(phantom):
    lists, _ = written_tables(phantom)
    m = load_source("tbx11k", str(phantom), labels=["Tuberculosis"], task="binary")
    assert m.task == "binary" and m.labels == ["Tuberculosis"]
    assert int(m.frame["Tuberculosis"].sum()) == int((lists["cls"] == "Tuberculosis").sum())


def test_cli_writes_the_layout(tmp_path):
    r = run_cli("phantom", "--out", tmp_path / "p", "--kind", "tbx11k", "--n", 16, "--size", 32, "--workers", 1)
    assert r.exit_code == 0, r.stdout
    assert "data.source=tbx11k" in r.stdout
    assert len(load_source("tbx11k", str(tmp_path / "p")).frame) == 16


def one_line_error(root, match, **kw):
    with pytest.raises(CxrlabError, match=match) as e:
        load_source("tbx11k", str(root), **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def edit_coco(root, split, fn):
    path = root / "annotations" / "json" / f"TBX11K_{split}.json"
    coco = json.loads(path.read_text())
    fn(coco)
    path.write_text(json.dumps(coco))
    return path


def test_box_outside_the_image_names_file_and_annotation(phantom, tmp_path):
    root = copy_of(phantom, tmp_path)

    def widen(coco):
        coco["annotations"][0]["bbox"][2] = 500.0

    path = edit_coco(root, "train", widen)
    aid = json.loads(path.read_text())["annotations"][0]["id"]
    msg = one_line_error(root, "outside")
    assert str(path) in msg and f"annotation {aid} " in msg


def test_unknown_category_and_box_on_a_healthy_image(phantom, tmp_path):
    root = copy_of(phantom, tmp_path)
    edit_coco(root, "train", lambda c: c["categories"][0].update(name="Pneumonia"))
    one_line_error(root, r"TBX11K_train.json: category 'Pneumonia'")
    root2 = copy_of(phantom, tmp_path / "b")

    def on_healthy(coco):
        healthy = next(im for im in coco["images"] if im["file_name"].startswith("health/"))
        coco["annotations"][0]["image_id"] = healthy["id"]

    edit_coco(root2, "train", on_healthy)
    one_line_error(root2, r"TBX11K_train.json: annotation \d+ puts a TB box on health/")


def test_list_and_disk_disagree(phantom, tmp_path):
    root = copy_of(phantom, tmp_path)
    gone = (root / "lists" / "TBX11K_val.txt").read_text().split()[0]
    (root / "imgs" / gone).unlink()
    msg = one_line_error(root, "listed images are not under")
    assert "TBX11K_val.txt" in msg and gone in msg
    root2 = copy_of(phantom, tmp_path / "b")
    cv2.imwrite(str(root2 / "imgs" / "sick" / "s9999.png"), np.zeros((48, 48), np.uint8))
    one_line_error(root2, r"TBX11K_train.txt: 1 images .* in no official split \(first: sick/s9999.png\)")


def test_missing_layout_and_bad_json(phantom, tmp_path):
    one_line_error(tmp_path, "no imgs/ folder")
    root = copy_of(phantom, tmp_path)
    (root / "annotations" / "json" / "TBX11K_val.json").write_text("{not json")
    one_line_error(root, "TBX11K_val.json: cannot read the COCO JSON")
    one_line_error(phantom, "data.labels must be", labels=["Pneumonia"])


def test_split_from_the_json_when_there_are_no_lists(phantom, tmp_path):
    root = copy_of(phantom, tmp_path)
    lists, _ = written_tables(root)
    shutil.rmtree(root / "lists")
    m = load_source("tbx11k", str(root))
    assert int((m.frame["split"] == "test").sum()) == int((lists["split"] == "val").sum())
    assert int(m.frame["split"].isin(["train", "val"]).sum()) == int((lists["split"] == "train").sum())


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"TBX11K sample not found at {SAMPLE}")
def test_real_sample_reads():
    coco = json.loads((SAMPLE / "annotations" / "json" / "TBX11K_train.json").read_text())
    m = load_source("tbx11k", str(SAMPLE))
    f = m.frame
    assert sorted(f["image"]) == sorted(f"imgs/{im['file_name']}" for im in coco["images"])
    assert int(f["Tuberculosis"].sum()) == sum(im["file_name"].startswith("tb/") for im in coco["images"])
    assert int(f["Healthy"].sum()) == sum(im["file_name"].startswith("health/") for im in coco["images"])
    assert set(f["split"]) <= {"train", "val"}  # all in TBX11K_train.json; cxrlab carves val from it
    assert len(m.boxes) == len(coco["annotations"])
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(m.boxes["category"]) == sorted(cats[a["category_id"]] for a in coco["annotations"])
    assert boxes_outside(m.boxes, m.image_sizes).empty
    for p in f["image"]:  # RGB PNGs read as grey at their 512 px
        assert read_gray(SAMPLE / p).shape == m.image_sizes[p][::-1]
