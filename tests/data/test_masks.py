"""Masks as annotations: the three readers, the run-length codes, geometry, bad input, phantom masks."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from cxrlab.data.masks import (
    coco_rle_decode,
    coco_rle_encode,
    read_masks,
    rle_decode,
    rle_encode,
    structure_name,
)
from cxrlab.data.preprocess import Geometry, Preprocess
from cxrlab.errors import CxrlabError


def _blob(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# --- codes ------------------------------------------------------------------------------------


def test_chexmask_rle_is_row_major_one_based_start_length_pairs():
    m = np.array([[0, 1, 1], [1, 0, 0]], bool)  # row-major: 0 1 1 1 0 0 -> one run at pixel 2, length 3
    assert rle_encode(m) == "2 3"
    assert rle_encode(np.zeros((3, 3), bool)) == ""
    assert np.array_equal(rle_decode("1 1 9 1", 3, 3), _blob(3, 3, 0, 1, 0, 1) | _blob(3, 3, 2, 3, 2, 3))
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 40, 2)
        x = rng.random((h, w)) < rng.random()
        assert np.array_equal(rle_decode(rle_encode(x), h, w), x)


def test_coco_rle_matches_pycocotools_vectors_and_round_trips():
    # pycocotools' own example (mask.py): M = [0 0 1 1 1 0 1] has counts [2 3 1 1]
    m = np.array([[0, 0, 1, 1, 1, 0, 1]], bool)
    assert np.array_equal(coco_rle_decode({"size": [1, 7], "counts": [2, 3, 1, 1]}), m)
    # pycocotools 2.0.11 mask.encode of this 6x5 mask (column-major) gives b'5172L000O'
    ref = np.zeros((6, 5), bool)
    ref[1:4, 2:5] = True
    ref[5, 0] = True
    assert coco_rle_encode(ref)["counts"] == "5172L000O"
    assert np.array_equal(coco_rle_decode({"size": [6, 5], "counts": b"5172L000O"}), ref)
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = rng.integers(1, 50, 2)
        x = rng.random((h, w)) < rng.random()
        assert np.array_equal(coco_rle_decode(coco_rle_encode(x)), x)


def test_structure_names_are_normalised_and_findings_kept():
    assert structure_name("Left Lung") == "left_lung" and structure_name("RightLung") == "right_lung"
    assert structure_name("heart") == "heart" and structure_name("Airspace Opacity") == "Airspace Opacity"


# --- readers ----------------------------------------------------------------------------------


IDS = ["images/00000001_000.png", "images/00000002_000.png"]


def _masks_of(i: int) -> dict[str, np.ndarray]:
    return {"left_lung": _blob(40, 30, 5, 30, 17, 27), "right_lung": _blob(40, 30, 5, 30, 3, 13 + i),
            "heart": _blob(40, 30, 20, 34, 10, 22)}


def _check(ms, ids=IDS):
    assert ms.ids() == sorted(ids)
    for i, image in enumerate(ids):
        want = _masks_of(i)
        assert ms.structures(image) == ["left_lung", "right_lung", "lungs", "heart"]
        for s, m in want.items():
            assert np.array_equal(ms.get(image, s), m), (image, s)
        assert np.array_equal(ms.get(image, "lungs"), want["left_lung"] | want["right_lung"])
        assert ms.get(image, "Nodule") is None
    assert ms.get("images/99999999_000.png", "heart") is None


@pytest.mark.parametrize("flat", [False, True])
def test_png_folder_in_both_layouts(tmp_path, flat):
    for i, image in enumerate(IDS):
        stem = image.split("/")[-1][:-4]
        for s, m in _masks_of(i).items():
            p = tmp_path / (f"{stem}_{s}.png" if flat else f"{s}/{stem}.png")
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), m.astype(np.uint8) * (1 if flat else 255))  # 0/1 and 0/255 PNGs both read
    _check(read_masks(tmp_path, IDS))
    _check(read_masks(tmp_path), ["00000001_000", "00000002_000"])


def test_chexmask_csv(tmp_path):
    lines = ["Image Index,Dice RCA (Mean),Left Lung,Right Lung,Heart,Height,Width"]
    for i, image in enumerate(IDS):
        m = _masks_of(i)
        lines.append(f"{image.split('/')[-1]},0.9,{rle_encode(m['left_lung'])},{rle_encode(m['right_lung'])},"
                     f"{rle_encode(m['heart'])},40,30")
    (tmp_path / "ChestX-Ray8.csv").write_text("\n".join(lines) + "\n")
    _check(read_masks(tmp_path / "ChestX-Ray8.csv", IDS))


def test_coco_json_chexlocalize_and_dataset_forms(tmp_path):
    # CheXlocalize: {image id: {finding: RLE}}, ids are path parts joined by "_"
    ids = ["train/patient1/study1/view1_frontal.jpg", "train/patient2/study1/view1_frontal.jpg"]
    gt = {f"patient{i + 1}_study1_view1_frontal": {k.replace("_", " ").title(): coco_rle_encode(m)
                                                    for k, m in _masks_of(i).items()} for i in range(2)}
    gt["patient1_study1_view1_frontal"]["Nodule"] = coco_rle_encode(np.zeros((40, 30), bool))  # absent finding
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    _check(read_masks(tmp_path / "gt.json", ids), ids)
    # a COCO dataset with uncompressed counts
    cats = [{"id": k + 1, "name": s} for k, s in enumerate(("left_lung", "right_lung", "heart"))]
    anns = []
    for i in range(2):
        for k, (_, m) in enumerate(_masks_of(i).items()):
            flat = m.ravel(order="F").astype(int)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]]))).tolist()
            counts, pos = [], 0
            for a, b in zip(edges[0::2], edges[1::2], strict=True):
                counts += [a - pos, b - a]
                pos = b
            counts.append(flat.size - pos)
            anns.append({"id": len(anns), "image_id": i, "category_id": k + 1,
                         "segmentation": {"size": [40, 30], "counts": counts}})
    coco = {"images": [{"id": i, "file_name": IDS[i].split("/")[-1], "height": 40, "width": 30} for i in range(2)],
            "annotations": anns, "categories": cats}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    _check(read_masks(tmp_path / "coco.json", IDS))


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resize", ["squash", "letterbox"])
def test_mask_to_model_follows_the_box_geometry(resize):
    w, h = 300, 200
    g = Geometry(w, h, Preprocess(size=50, resize=resize))
    box = (60.0, 40.0, 120.0, 80.0)
    m = _blob(h, w, 40, 120, 60, 180)
    got = g.mask_to_model(m)
    bx, by, bw, bh = g.to_model(box)
    want = np.zeros((50, 50), bool)
    want[round(by):round(by + bh), round(bx):round(bx + bw)] = True
    assert got.shape == (50, 50) and got.dtype == bool
    assert (got ^ want).sum() <= 2 * (bw + bh) * 0.5 + 2  # at most the rounding of the edges differs
    if resize == "letterbox":  # the padding rows (50 / 300 * 50 = 8 px top and bottom) hold no mask
        assert not got[:8].any() and not got[-8:].any()


@pytest.mark.parametrize("resize", ["squash", "letterbox"])
def test_a_mask_of_another_size_is_resized_with_the_image_geometry(resize):
    w, h = 400, 300
    g = Geometry(w, h, Preprocess(size=64, resize=resize))
    full = _blob(h, w, 60, 240, 80, 200)
    quarter = cv2.resize(full.astype(np.uint8), (w // 4, h // 4), interpolation=cv2.INTER_NEAREST).astype(bool)
    a, b = g.mask_to_model(full), g.mask_to_model(quarter)
    assert (a & b).sum() / (a | b).sum() > 0.95
    tiny = np.zeros((h, w), bool)
    tiny[150, 200] = True  # smaller than a model pixel: kept as its best pixel, never lost
    assert g.mask_to_model(tiny).sum() >= 1


# --- bad input: one line each -----------------------------------------------------------------


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_wrong_aspect_ratio_is_one_line():
    g = Geometry(300, 200, Preprocess(size=32))
    with pytest.raises(CxrlabError) as e:
        g.mask_to_model(np.ones((200, 200), bool), where="m.png")
    assert "m.png" in _one_line(e) and "aspect ratio" in str(e.value)


def test_rle_past_the_image_size_is_one_line(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("Image Index,Left Lung,Height,Width\n00000001_000.png,5 100,8,8\n")
    with pytest.raises(CxrlabError) as e:
        read_masks(p, IDS).get(IDS[0], "left_lung")
    assert "c.csv:2" in _one_line(e) and "Height/Width" in str(e.value)
    p.write_text("Image Index,Left Lung\n00000001_000.png,5 10\n")
    with pytest.raises(CxrlabError, match="Height/Width"):
        read_masks(p, IDS)


def test_coco_counts_of_the_wrong_size_are_one_line(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"00000001_000": {"Nodule": {"size": [5, 5], "counts": [3, 4]}}}))
    with pytest.raises(CxrlabError) as e:
        read_masks(tmp_path / "g.json", IDS)
    assert "g.json" in _one_line(e) and "wrong size" in str(e.value)


def test_masks_of_other_images_and_empty_masks_are_left_out_and_counted(tmp_path, caplog):
    for name, m in (("00000001_000", _blob(8, 8, 1, 5, 1, 5)), ("77777777_000", _blob(8, 8, 1, 5, 1, 5)),
                    ("00000002_000", np.zeros((8, 8), bool))):
        (tmp_path / "heart").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "heart" / f"{name}.png"), m.astype(np.uint8) * 255)
    with caplog.at_level(logging.WARNING):
        ms = read_masks(tmp_path, IDS)
    assert ms.ids() == [IDS[0]]
    assert ms.left_out == {"not an image of the set": 1, "empty": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert any("77777777_000" in x and "not an image of the set" in x for x in lines)
    assert any("empty" in x and "00000002_000" in x for x in lines)
    assert all("\n" not in x for x in lines)
    with pytest.raises(CxrlabError) as e:  # none of them names an image of the set
        read_masks(tmp_path, ["images/5.png"])
    assert "none of its 3 masks" in _one_line(e)


def test_masks_of_one_image_with_two_sizes_and_unknown_specs_are_one_line(tmp_path):
    for s, shape in (("heart", (8, 8)), ("left_lung", (9, 8))):
        (tmp_path / s).mkdir()
        cv2.imwrite(str(tmp_path / s / "00000001_000.png"), np.full(shape, 255, np.uint8))
    with pytest.raises(CxrlabError) as e:
        read_masks(tmp_path, IDS)
    assert "one image, one mask size" in _one_line(e)
    with pytest.raises(CxrlabError, match="not found"):
        read_masks(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CxrlabError, match="unknown mask format"):
        read_masks(tmp_path / "x.txt")


# --- the phantom's own masks ------------------------------------------------------------------


def test_phantom_masks_change_no_pixel_and_hold_the_lung_findings(tmp_path):
    from cxrlab.data.phantom import LABELS
    from cxrlab.data.phantom_dataset import write_phantom
    from cxrlab.data.sources import load_source

    a = write_phantom(tmp_path / "a", n=24, size=64, seed=5, workers=1)
    b = write_phantom(tmp_path / "b", n=24, size=64, seed=5, workers=1, masks=True)
    for f in sorted((a / "images").iterdir()):
        assert f.read_bytes() == (b / "images" / f.name).read_bytes()
    assert "masks" not in json.loads((a / "phantom.json").read_text())
    assert json.loads((b / "phantom.json").read_text())["masks"]["structures"] == ["right_lung", "left_lung", "heart"]
    m = load_source("nih14", str(b), labels=list(LABELS), val_fraction=0.2, seed=0)
    ids = list(m.frame["image"])
    ms = read_masks(b / "masks", ids)
    assert sorted(ms.ids()) == sorted(ids) and not ms.left_out
    inside = []
    for _, row in m.boxes.iterrows():
        if row["label"] in ("Nodule", "Mass", "Consolidation"):  # drawn inside a lung
            lungs = ms.get(row["image"], "lungs")
            x, y, w, h = (int(round(row[k])) for k in ("x", "y", "w", "h"))
            cy, cx = y + h // 2, x + w // 2
            inside.append(bool(lungs[cy, cx]))
        if row["label"] == "Cardiomegaly":  # its box is the heart shadow's
            heart = ms.get(row["image"], "heart")
            ys, xs = np.nonzero(heart)
            assert abs(xs.min() - row["x"]) <= 1 and abs(ys.min() - row["y"]) <= 1
    assert inside and np.mean(inside) >= 0.9
    for image in ids[:5]:  # right lung on the image's left (a PA view), heart between them
        r, lft = ms.get(image, "right_lung"), ms.get(image, "left_lung")
        assert np.nonzero(r)[1].mean() < np.nonzero(lft)[1].mean()
        assert not (r & ms.get(image, "heart")).any()


@pytest.mark.parametrize("kind", ["kermany", "cxr5"])
def test_kermany_and_cxr5_phantom_masks_match_their_sources_image_ids(tmp_path, kind):
    from cxrlab.data.phantom_dataset import write_phantom_dataset
    from cxrlab.data.sources import load_source

    ps = write_phantom_dataset(kind, tmp_path, n=40, size=48, seed=2, workers=1, masks=True)
    m = load_source(ps.source, str(ps.root), labels=ps.labels, val_fraction=0.2, seed=0)
    ids = list(m.frame["image"])
    ms = read_masks(tmp_path / "masks", ids)
    assert sorted(ms.ids()) == sorted(ids) and not ms.left_out
    assert all(ms.get(i, "lungs").sum() > 0.1 * 48 * 48 for i in ids[:5])
