"""The duplicate check in ``cxrlab evaluate --on`` (issue 18): a target holding five training images copied
byte for byte and five more resized by 0.9, cropped by 3% at one edge and re-saved as JPEG names all ten with
their training twins, and none of its distinct phantom images; ``--exclude-duplicates`` leaves them unscored."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, train_tiny
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.data.sources import load_source
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import DuplicateResult, ExternalResult
from cxrlab.run import RunFolder

EDGES = ("left", "right", "top", "bottom")


def near_copy(img: np.ndarray, edge: str) -> np.ndarray:
    """Resized by 0.9 and cropped by 3% at one edge (the caller re-saves it as JPEG)."""
    h, w = img.shape
    small = cv2.resize(img, (round(0.9 * w), round(0.9 * h)), interpolation=cv2.INTER_AREA)
    h, w = small.shape
    c = round(0.03 * w)
    return {"left": small[:, c:], "right": small[:, :w - c], "top": small[c:], "bottom": small[:h - c]}[edge]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny run on the nih14 phantom (64 px input) and a ``csv`` target: 5 exact copies, 5 near copies,
    20 of the run's own test images (other patients, same phantom) and 30 images of another phantom."""
    out = tmp_path_factory.mktemp("extdup")
    nih = write_phantom(out / "nih", n=160, size=128, seed=5, workers=1)
    run = RunFolder(train_tiny(nih, out / "runs", "r", 0, image_size=64, batch_size=32))
    split = run.read_split()
    source = load_source("nih14", str(nih), labels=list(LABELS)).frame.set_index("image")
    other_root = write_phantom(out / "other", n=30, size=128, seed=9, workers=1)
    other = load_source("nih14", str(other_root), labels=list(LABELS)).frame.set_index("image")

    target = out / "site"
    (target / "img").mkdir(parents=True)
    rows, want = [], {}
    train = split["train"]
    for k, ref in enumerate(train[:5]):  # byte-for-byte copies
        name = f"img/copy_{k}.png"
        shutil.copy(nih / ref, target / name)
        rows.append((name, source.loc[ref]))
        want[name] = (ref, "exact")
    for k, ref in enumerate(train[10:15]):  # resized, cropped, re-saved as JPEG
        name = f"img/near_{k}.jpg"
        img = cv2.imread(str(nih / ref), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(target / name), near_copy(img, EDGES[k % 4]), [cv2.IMWRITE_JPEG_QUALITY, 75])
        rows.append((name, source.loc[ref]))
        want[name] = (ref, "near")
    for k, ref in enumerate(split["test"][:20]):  # distinct: the run's own test patients
        name = f"img/test_{k}.png"
        shutil.copy(nih / ref, target / name)
        rows.append((name, source.loc[ref]))
    for k, ref in enumerate(other.index):  # distinct: another phantom
        name = f"img/other_{k}.png"
        shutil.copy(other_root / ref, target / name)
        rows.append((name, other.loc[ref]))
    table = pd.DataFrame([{"path": name, "patient": f"{'o' if 'other' in name else 'n'}{r['patient']}",
                           **{lab: int(r[lab]) for lab in LABELS}} for name, r in rows])
    table.to_csv(target / "labels.csv", index=False)
    return {"run": run, "nih": nih, "target": target, "want": want, "n": len(table), "split": split, "out": out}


def test_copies_are_named_with_their_training_twins_and_distinct_images_are_not(setup):
    from cxrlab.workflows.external import evaluate_external

    run = setup["run"]
    res = evaluate_external(run.path, "csv", setup["target"], name="site", all_images=True, n_boot=20)
    found = {m.query: (m.reference, m.kind) for m in res.duplicates.matches}
    assert found == setup["want"]  # all ten by name, each with its original; no distinct image
    assert len(res.duplicates.exact) == 5 and len(res.duplicates.near) == 5
    assert all(m.distance <= res.duplicates.method["max_distance"] for m in res.duplicates.near)
    assert res.duplicates.n_query == setup["n"] and res.duplicates.n_reference == len(setup["split"]["train"])
    assert res.n_images == setup["n"] and res.duplicates_excluded == 0  # reported, still scored
    files = run.external_files("site")
    on_disk = DuplicateResult.read(files["duplicates"])
    assert on_disk.to_dict() == res.duplicates.to_dict()
    back = ExternalResult.read(files["result"])
    assert back.duplicates.to_dict() == res.duplicates.to_dict() and back.format_version == 2
    page = files["report"].read_text()
    assert "Duplicates of training images" in page and "5 exact and 5 near copies" in page
    for query, (ref, _) in setup["want"].items():
        assert query in page and ref in page
    assert "distance &le; 0.028" in page  # the false-match threshold is stated


def test_exclude_duplicates_leaves_them_unscored(setup):
    run = setup["run"]
    res = run_cli("evaluate", run.path, "--on", "csv", "--root", setup["target"], "--all-images", "--name", "excl",
                  "--exclude-duplicates", "--n-boot", 20)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "duplicates of training images: 5 exact, 5 near" in said and "10 dropped from scoring" in said
    files = run.external_files("excl")
    scored = set(pd.read_csv(files["predictions"])["image"])
    assert not scored & set(setup["want"]) and len(scored) == setup["n"] - 10
    rec = ExternalResult.read(files["result"])
    assert rec.n_images == setup["n"] - 10 and rec.duplicates_excluded == 10
    assert "10 dropped from scoring" in files["report"].read_text()


def test_no_duplicate_check_says_so_and_removes_a_stale_file(setup):
    from cxrlab.workflows.external import evaluate_external

    run = setup["run"]
    files = run.external_files("skip")
    files["duplicates"].parent.mkdir(parents=True, exist_ok=True)
    files["duplicates"].write_text(json.dumps({"n_reference": 1, "n_query": 1, "matches": []}))
    res = run_cli("evaluate", run.path, "--on", "csv", "--root", setup["target"], "--all-images", "--name", "skip",
                  "--no-duplicate-check", "--n-boot", 20)
    assert res.exit_code == 0, res.output
    assert "duplicates of training images: not checked (--no-duplicate-check)" in " ".join(res.output.split())
    assert not files["duplicates"].exists()
    rec = ExternalResult.read(files["result"])
    assert rec.duplicates is None and rec.n_images == setup["n"]
    assert "not checked" in files["report"].read_text()
    with pytest.raises(CxrlabError, match="--exclude-duplicates needs the duplicate check"):
        evaluate_external(run.path, "csv", setup["target"], duplicate_check=False, exclude_duplicates=True)


def test_nih_adjudicated_target_maps_through_the_vocabulary_and_flags_training_images(setup):
    """An NIH-label run on ``nih14 -o relabels=FILE``: Pneumothorax scored, the adjudicated columns named;
    the adjudicated images the run trained on are exact copies, the others are not."""
    from cxrlab.data.sources.nih import ADJUDICATED
    from cxrlab.workflows.external import evaluate_external

    nih, split = setup["nih"], setup["split"]
    entry = pd.read_csv(nih / "Data_Entry_2017.csv")
    test = set(open(nih / "test_list.txt").read().split())
    rows = ["Image Index,Patient ID,Fracture,Pneumothorax,Airspace opacity,Nodule or mass,Set Id"]
    for k, name in enumerate(entry["Image Index"][:60]):
        vals = ["YES" if (k + j) % (3 + j) == 0 else "NO" for j in range(4)]
        rows.append(f"{name},1,{','.join(vals)},{'test' if name in test else 'val'}")
    relabels = setup["out"] / "google2019_nih-chest-xray-labels.csv"
    relabels.write_text("\n".join(rows) + "\n")
    res = evaluate_external(setup["run"].path, "nih14", nih, {"relabels": str(relabels)}, name="adjudicated",
                            all_images=True, n_boot=20)
    assert res.labels["Pneumothorax"].evaluable and res.labels["Pneumothorax"].kind == "exact"
    assert not res.labels["Nodule"].evaluable
    assert set(res.target_only) == set(ADJUDICATED) - {"Pneumothorax"}
    assert res.n_images == 60
    scored = pd.read_csv(setup["run"].external_files("adjudicated")["predictions"])["image"]
    trained = set(split["train"])
    assert {m.query for m in res.duplicates.matches} == {i for i in scored if i in trained}
    assert all(m.kind == "exact" and m.query == m.reference for m in res.duplicates.matches)
