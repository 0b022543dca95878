"""The duplicate check (issue 18): exact and near copies named, distinct phantom images never."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from cxrlab.data.phantom import render
from cxrlab.data.preprocess import Preprocess, load_image, preprocess
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.duplicates import MAX_DISTANCE, find_duplicates
from cxrlab.evaluate.records import DuplicateResult

EDGES = ("left", "right", "top", "bottom")


def near_copy(img: np.ndarray, edge: str) -> np.ndarray:
    """The issue's near copy: resized by 0.9, re-saved as JPEG, cropped by 3% at one edge."""
    h, w = img.shape
    small = cv2.resize(img, (round(0.9 * w), round(0.9 * h)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])
    small = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    h, w = small.shape
    c = round(0.03 * w)
    return {"left": small[:, c:], "right": small[:, :w - c], "top": small[c:], "bottom": small[:h - c]}[edge]


@pytest.fixture(scope="module")
def sets() -> dict[str, object]:
    """160 training images and a target: 5 exact copies, 5 near copies, 60 distinct images (64 px cache)."""
    pre = Preprocess(size=64)
    originals = [render(i, size=160, seed=11).pixels for i in range(220)]
    ref = np.stack([preprocess(x, pre) for x in originals[:160]])
    exact = [3, 40, 77, 101, 150]
    near = [8, 21, 64, 99, 133]
    query = [preprocess(originals[i], pre) for i in exact]
    query += [preprocess(near_copy(originals[i], EDGES[k % 4]), pre) for k, i in enumerate(near)]
    query += [preprocess(x, pre) for x in originals[160:]]
    qids = [f"copy_of_{i}" for i in exact] + [f"near_{i}" for i in near] + [f"distinct_{i}" for i in range(160, 220)]
    return {"ref": ref, "rids": [f"train_{i}" for i in range(160)], "query": np.stack(query), "qids": qids,
            "exact": exact, "near": near}


def test_copies_and_near_copies_are_named_and_distinct_images_are_not(sets: dict) -> None:
    res = find_duplicates(sets["ref"], sets["rids"], sets["query"], sets["qids"])
    found = {m.query: (m.reference, m.kind) for m in res.matches}
    want = {f"copy_of_{i}": (f"train_{i}", "exact") for i in sets["exact"]}
    want |= {f"near_{i}": (f"train_{i}", "near") for i in sets["near"]}
    assert found == want  # every copy by name, with its original; no distinct image
    assert all(m.distance <= res.method["max_distance"] for m in res.near)
    assert {m.crop.split()[0] for m in res.near} <= set(EDGES)  # the crop undone is reported
    assert sorted(res.leaked) == sorted(want)


def test_distinct_images_score_well_above_the_threshold(sets: dict) -> None:
    """Even the nearest distinct image (shared anatomy templates) stays far from the near-copy threshold."""
    ref, query = sets["ref"], sets["query"][10:]
    res = find_duplicates(ref, sets["rids"], query, sets["qids"][10:], max_distance=1.0)
    nearest = min(m.distance for m in res.matches)
    assert nearest > 1.4 * MAX_DISTANCE
    copies = find_duplicates(ref, sets["rids"], sets["query"][5:10], sets["qids"][5:10], max_distance=1.0)
    assert max(m.distance for m in copies.matches) < 0.025


def test_exact_only_and_files_copied_on_disk(tmp_path, sets: dict) -> None:
    """A file copied byte for byte decodes to the same pixels: exact, found without the near search."""
    img = render(0, size=96, seed=2).pixels
    cv2.imwrite(str(tmp_path / "a.png"), img)
    shutil.copy(tmp_path / "a.png", tmp_path / "b.png")
    pre = Preprocess(size=64)
    a, b = load_image(tmp_path / "a.png", pre), load_image(tmp_path / "b.png", pre)
    res = find_duplicates(a[None], ["a.png"], np.stack([b, sets["ref"][0]]), ["b.png", "other"], near=False)
    assert [(m.query, m.reference, m.kind) for m in res.matches] == [("b.png", "a.png", "exact")]
    assert res.method["near_checked"] is False


def test_record_round_trip_and_bad_input(sets: dict) -> None:
    res = find_duplicates(sets["ref"], sets["rids"], sets["query"][:10], sets["qids"][:10])
    back = DuplicateResult.from_dict(res.to_dict())
    assert back == res and res.to_dict()["n_exact"] == 5 and res.to_dict()["n_near"] == 5
    with pytest.raises(CxrlabError, match="64 px, query images 32 px"):
        find_duplicates(sets["ref"], sets["rids"], sets["query"][:2, :32, :32], ["a", "b"])
    with pytest.raises(CxrlabError, match="2 query images but 1 ids"):
        find_duplicates(sets["ref"], sets["rids"], sets["query"][:2], ["a"])
    with pytest.raises(CxrlabError, match="uint8"):
        find_duplicates(sets["ref"].astype(np.float32), sets["rids"], sets["query"][:2], ["a", "b"])


def test_duplicates_against_a_run_uses_its_preprocessing(tmp_path_factory, tiny_phantom) -> None:
    """Target files copied and near-copied from a run's training images are named, test images are not."""
    from conftest import train_tiny
    from cxrlab.data.preprocess import load_images
    from cxrlab.run import RunFolder
    from cxrlab.workflows.duplicates import duplicates_against_run, exclude, training_images

    run_dir = train_tiny(tiny_phantom, tmp_path_factory.mktemp("dup_runs"), "dup", seed=5)
    run = RunFolder(run_dir)
    split = run.read_split()
    target = tmp_path_factory.mktemp("target")
    names = []
    for k, rel in enumerate(split["train"][:3]):  # exact copies of training files
        shutil.copy(tiny_phantom / rel, target / f"exact{k}.png")
        names.append(f"exact{k}.png")
    for k, rel in enumerate(split["train"][3:6]):  # near copies
        img = cv2.imread(str(tiny_phantom / rel), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(target / f"near{k}.jpg"), near_copy(cv2.resize(img, (160, 160)), EDGES[k]))
        names.append(f"near{k}.jpg")
    for k, rel in enumerate(split["test"][:6]):  # images the run never trained on
        shutil.copy(tiny_phantom / rel, target / f"test{k}.png")
        names.append(f"test{k}.png")
    rec = run.read_model_record()
    imgs = load_images([target / n for n in names], rec.preprocess)  # what load_run_images does for a manifest
    out = run_dir / "external" / "t" / "duplicates.json"
    res = duplicates_against_run(run_dir, imgs, names, out=out)
    assert sorted(res.leaked) == sorted(names[:6])
    assert {m.query: m.reference for m in res.matches} == dict(zip(names[:6], split["train"][:6], strict=True))
    assert DuplicateResult.read(out) == res
    assert exclude(names, res) == names[6:]
    ref, ids = training_images(run)
    assert ref.shape == (len(split["train"]), rec.preprocess.size, rec.preprocess.size) and ids == split["train"]
    with pytest.raises(CxrlabError, match="model input is 32 x 32"):
        duplicates_against_run(run_dir, np.zeros((1, 16, 16), np.uint8), ["x"])
