"""`localize --boxes` with a box file that does not fit the run (issue 16.5): matched/unmatched counts, the
coordinate frame checked, the box file named in the result and the report, and no overwrite of the
result scored on the dataset's own boxes."""

import json

import pandas as pd
import pytest

from conftest import run_cli, train_tiny
from cxrlab.explain.localize import boxes_outside, match_boxes


@pytest.fixture(scope="module")
def boxed_run(tiny_phantom, tmp_path_factory):
    from cxrlab.run import RunFolder

    path = train_tiny(tiny_phantom, tmp_path_factory.mktemp("loc_runs"), "loc", seed=5)
    return RunFolder(path)


def _write_boxes(frame: pd.DataFrame, path):
    out = frame.rename(columns={"image": "Image Index", "label": "Finding Label", "x": "Bbox [x", "w": "w",
                                "h": "h]"})
    out.to_csv(path, index=False)
    return path


def _nih_boxes(phantom) -> pd.DataFrame:
    from cxrlab.data.sources.nih import read_bbox_list

    return read_bbox_list(phantom / "BBox_List_2017.csv")


def test_match_boxes_counts_every_reason_and_never_guesses_a_shared_file_name():
    boxes = pd.DataFrame({"image": ["a/x.png", "x.png", "b/y.png", "v1.jpg", "t.png", "z.png", "a/x.png"],
                          "label": ["A", "A", "A", "A", "A", "A", "Nope"],
                          "x": 1.0, "y": 1.0, "w": 2.0, "h": 2.0})
    test = ["a/x.png", "p1/v1.jpg", "p2/v1.jpg", "q/y.png"]
    matched, m = match_boxes(boxes, test, other_ids=["train/t.png"], labels=["A"])
    assert list(matched["image"]) == ["a/x.png", "a/x.png", "q/y.png"]  # by id, then by unique file name
    assert (m["boxes"], m["matched"], m["ambiguous_name"], m["other_splits"], m["not_in_dataset"],
            m["unknown_label"]) == (7, 3, 1, 1, 1, 1)
    assert m["unknown_label_names"] == ["Nope"] and (m["test_images"], m["test_images_with_boxes"]) == (4, 2)
    sizes = {"a/x.png": (10, 10), "q/y.png": (10, 10)}
    far = matched.assign(x=[1.0, 500.0, 9.0], w=[2.0, 100.0, 0.0])
    assert list(boxes_outside(far, sizes)["x"]) == [500.0, 9.0]  # beyond the image; empty


def test_boxes_in_another_pixel_frame_are_refused_in_one_line(boxed_run, tiny_phantom, tmp_path):
    test = set(boxed_run.read_split()["test"])
    nih = _nih_boxes(tiny_phantom)
    nih = nih[nih["image"].map(lambda n: any(t.endswith(n) for t in test))]
    scaled = nih.assign(**{c: nih[c] * 16 for c in ("x", "y", "w", "h")})  # 1024-px boxes on 64-px images
    r = run_cli("localize", boxed_run.path, "--boxes", _write_boxes(scaled, tmp_path / "BBox_1024.csv"))
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.output
    assert "lie outside their images" in err and "on a 64 x 64 image" in err and "BBox_1024.csv" in err
    assert not list(boxed_run.path.glob("localization_*BBox_1024*.json"))


def test_box_file_result_names_its_file_counts_matches_and_keeps_the_dataset_result(boxed_run, tiny_phantom,
                                                                                   tmp_path):
    r = run_cli("localize", boxed_run.path)  # the dataset's own boxes
    assert r.exit_code == 0, r.output
    own = boxed_run.localization_file("gradcam")
    before = own.read_text()
    assert json.loads(before)["box_file"] is None
    split = boxed_run.read_split()
    nih = _nih_boxes(tiny_phantom)
    name_of = {t.rsplit("/", 1)[-1]: t for t in split["test"]}
    in_test = nih[nih["image"].isin(name_of)]
    in_train = nih[nih["image"].isin({t.rsplit("/", 1)[-1] for t in split["train"]})].head(3)
    ghost = in_test.head(2).assign(image=["ghost_1.png", "ghost_2.png"])
    odd = in_test.head(1).assign(label="Infiltrate_typo")
    boxes = pd.concat([in_test, in_train, ghost, odd], ignore_index=True)
    path = _write_boxes(boxes, tmp_path / "other boxes.csv")
    r = run_cli("localize", boxed_run.path, "--boxes", path)
    assert r.exit_code == 0, r.output
    assert f"{len(in_test)} of {len(boxes)} matched test images" in r.stdout
    result = boxed_run.localization_file("gradcam_other_boxes")
    assert str(result) in " ".join(r.stdout.split()) or result.name in r.stdout
    loc = json.loads(result.read_text())
    assert loc["box_file"] == str(path.resolve())
    m = loc["matching"]
    assert (m["boxes"], m["matched"], m["other_splits"], m["not_in_dataset"], m["unknown_label"]) == (
        len(boxes), len(in_test), len(in_train), 2, 1)
    assert m["test_images"] == len(split["test"]) and m["test_images_with_boxes"] == in_test["image"].nunique()
    assert own.read_text() == before  # the dataset-box result is not overwritten
    html = (boxed_run.path / "report.html").read_text()
    assert "Localisation (Grad-CAM, cxrlab localize): boxes of other boxes.csv" in html
    assert "localization_gradcam_other_boxes.json" in html and "localization_gradcam.json" in html
    assert "the dataset&#x27;s box" in html and f"{len(in_test)} of {len(boxes)} matched" in html
