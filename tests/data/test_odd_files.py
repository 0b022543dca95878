"""Odd files and archives: each gets one line naming it, or decodes when it is valid (issues 16, 22)."""

import io
import logging
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

import cxrlab.data.io as cxio
from conftest import run_cli
from cxrlab.data.io import read_gray
from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import as_task, load_source
from cxrlab.errors import CxrlabError


def noise(seed: int, size: int = 40) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)


def folder_dataset(root: Path, classes=("A", "B"), n: int = 10) -> Path:
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i}.png"), noise(100 * k + i))
    return root


def tiny_train_config(root: Path, runs: Path, name: str = "odd", **data) -> Path:
    cfg = {"name": name, "seed": 0, "runs_dir": str(runs),
           "data": {"source": "folder", "root": str(root), "image_size": 32, "workers": 1, **data},
           "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
           "train": {"epochs": 1, "batch_size": 8}, "explain": {"enabled": False}}
    path = runs.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---- 16.10: bytes after the end marker ------------------------------------------------------
def test_bytes_after_the_end_marker_decode_and_a_missing_end_marker_is_still_truncation(tmp_path):
    img = noise(0, 64)
    for ext in ("png", "jpg"):
        ok = tmp_path / f"ok.{ext}"
        cv2.imwrite(str(ok), img)
        data = ok.read_bytes()
        trail = tmp_path / f"trail.{ext}"
        trail.write_bytes(data + np.random.default_rng(1).bytes(500))  # a scanner's trailer, > 64 bytes
        assert np.array_equal(read_gray(trail), read_gray(ok))
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(CxrlabError, match=f"cut.{ext}: truncated"):
            read_gray(cut)
    # an EXIF-style thumbnail (a whole JPEG in an APP1 segment) does not make a cut image look complete
    thumb = cv2.imencode(".jpg", img[:16, :16])[1].tobytes()
    main = (tmp_path / "ok.jpg").read_bytes()
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    with_thumb = main[:2] + app1 + main[2:]
    (tmp_path / "thumb.jpg").write_bytes(with_thumb)
    assert read_gray(tmp_path / "thumb.jpg").shape == (64, 64)
    (tmp_path / "thumbcut.jpg").write_bytes(with_thumb[: len(app1) + 2 + 200] + b"\xff\xd9")
    with pytest.raises(CxrlabError, match="truncated JPEG"):
        read_gray(tmp_path / "thumbcut.jpg")


# ---- 16.11: symlink loops and dangling links --------------------------------------------------
def test_symlink_loop_and_dangling_link_are_named_by_data_check_and_train(tmp_path):
    root = folder_dataset(tmp_path / "data")
    os.symlink("loop.png", root / "A" / "loop.png")  # a link to itself
    os.symlink(root / "B" / "gone.png", root / "B" / "dangling.png")
    r = run_cli("data", "check", "--source", "folder", "--root", root, "--workers", 1)
    assert r.exit_code == 1
    assert "loop.png: symbolic link loop" in r.stderr and "dangling.png: broken symbolic link" in r.stderr
    assert "2 of 22 images have problems" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--config", tiny_train_config(root, tmp_path / "runs"))
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert "loop.png: symbolic link loop" in r.stderr and "dangling.png: broken symbolic link" in r.stderr
    # a CSV that lists the loop: named by what it is, not "does not exist"
    rows = [f"A/{i}.png" for i in range(10)] + ["A/loop.png"]
    pd.DataFrame({"path": rows, "label": ["x", "y"] * 5 + ["x"]}).to_csv(root / "labels.csv", index=False)
    r = run_cli("data", "check", "--source", "csv", "--root", root, "--workers", 1)
    assert r.exit_code == 1 and "loop.png: symbolic link loop" in r.stderr and "1 of 11" in r.stderr


# ---- 16.12: NPZ archives ----------------------------------------------------------------------
def npz_arrays(seed: int = 0, dtype=np.uint8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for s, n in (("train", 14), ("val", 4), ("test", 6)):
        out[f"{s}_images"] = rng.integers(0, 255, size=(n, 28, 28)).astype(dtype)
        out[f"{s}_labels"] = np.arange(n).reshape(n, 1) % 3
    return out


def exported(m: Manifest, split: str = "train") -> np.ndarray:
    rows = m.frame[m.frame["image"].str.contains(f"/{split}/")].sort_values("image")
    return np.stack([cv2.imread(str(m.root / p), cv2.IMREAD_UNCHANGED) for p in rows["image"]])


def test_truncated_npz_and_object_arrays_are_one_line(tmp_path):
    np.savez(tmp_path / "a.npz", **npz_arrays())
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CxrlabError, match=r"a.npz: cannot read NPZ: truncated") as e:
        load_source("npz", str(tmp_path / "cut"))
    assert "\n" not in str(e.value)
    r = run_cli("data", "summary", "--source", "npz", "--root", tmp_path / "cut")
    assert r.exit_code == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr
    # a member damaged inside an intact directory (CRC error when the array is read)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in npz_arrays().items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(f"{k}.npy", b.getvalue())
    raw = bytearray(buf.getvalue())
    at = raw.find(b"train_images.npy") + 400
    raw[at:at + 50] = bytes(50)
    (tmp_path / "crc").mkdir()
    (tmp_path / "crc" / "b.npz").write_bytes(bytes(raw))
    with pytest.raises(CxrlabError, match=r"b.npz: cannot read 'train_images'"):
        load_source("npz", str(tmp_path / "crc"))
    arrays = npz_arrays()
    arrays["train_images"] = np.array([a for a in arrays["train_images"]] + [None], dtype=object)[:-1]
    (tmp_path / "obj").mkdir()
    np.savez(tmp_path / "obj" / "c.npz", **arrays)
    with pytest.raises(CxrlabError, match=r"c.npz: 'train_images' is an object array"):
        load_source("npz", str(tmp_path / "obj"))


def test_float_images_in_0_1_are_scaled_and_other_floats_refused(tmp_path, caplog):
    arrays = {k: (v / 255.0 if k.endswith("_images") else v) for k, v in npz_arrays().items()}
    np.savez(tmp_path / "f.npz", **arrays)
    with caplog.at_level(logging.WARNING):
        m = load_source("npz", str(tmp_path))
    assert "train_images, val_images, test_images hold float images in [0, 1]; exported scaled to 0..255" \
        in caplog.text
    got = exported(m)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - np.round(arrays["train_images"] * 255)).max() == 0
    for bad, what in ((arrays["train_images"] * 255.0, r"floats in \[0, 25\d\]"),
                      (np.where(arrays["train_images"] > 0.5, np.nan, arrays["train_images"]), "NaN or infinite")):
        d = tmp_path / what[:3].strip("\\")
        d.mkdir()
        np.savez(d / "g.npz", **{**arrays, "train_images": bad})
        with pytest.raises(CxrlabError, match=f"g.npz: 'train_images' holds {what}"):
            load_source("npz", str(d))


def test_npz_rewritten_after_its_export_is_exported_again(tmp_path, caplog):
    first, second = npz_arrays(0), npz_arrays(1)
    np.savez(tmp_path / "x.npz", **first)
    m = load_source("npz", str(tmp_path))
    assert np.array_equal(exported(m), first["train_images"])
    png = m.root / m.frame["image"].iloc[0]
    stamp = png.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        m = load_source("npz", str(tmp_path))  # unchanged: reused, nothing said
    assert png.stat().st_mtime_ns == stamp and "rebuilt" not in caplog.text
    np.savez(tmp_path / "x.npz", **second)  # same shapes, same size, new pixels
    with caplog.at_level(logging.WARNING):
        m = load_source("npz", str(tmp_path))
    assert np.array_equal(exported(m), second["train_images"])
    assert np.array_equal(exported(m, "test"), second["test_images"])
    assert "PNG export in" in caplog.text and "rebuilt for train, val, test" in caplog.text
    assert "the archive changed since" in caplog.text


# ---- 16.13: blank class cells, unreadable files, OpenCV's own error lines ---------------------
def test_blank_class_cell_in_a_multiclass_csv_names_file_and_line(tmp_path):
    root = folder_dataset(tmp_path)
    labels = ["x", "y"] * 5
    labels[3] = None
    pd.DataFrame({"path": [f"A/{i}.png" for i in range(10)], "label": labels}).to_csv(tmp_path / "labels.csv",
                                                                                      index=False)
    with pytest.raises(CxrlabError, match=r"labels.csv: 1 rows have a blank 'label' cell \(CSV line 5\)"):
        load_source("csv", str(root))


@pytest.fixture()
def unreadable(monkeypatch):
    """Make a file unreadable: chmod 000, and (as root, who reads it anyway) an open() that refuses it."""
    def make(path: Path) -> Path:
        path.chmod(0)
        if os.geteuid() == 0:
            real_open = open

            def refusing_open(file, *a, **k):
                if Path(file) == path:
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, *a, **k)

            monkeypatch.setattr(cxio, "open", refusing_open, raising=False)
        return path

    return make


def test_unreadable_image_is_one_line_in_data_check_train_and_predict(tmp_path, unreadable):
    root = folder_dataset(tmp_path / "data")
    runs = tmp_path / "runs"
    r = run_cli("train", "--config", tiny_train_config(root, runs, name="ok"))
    assert r.exit_code == 0, r.output
    bad = unreadable(root / "A" / "3.png")
    r = run_cli("data", "check", "--source", "folder", "--root", root, "--workers", 1)
    assert r.exit_code == 1 and "3.png: permission denied" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--config", tiny_train_config(root, runs, name="again"), "data.image_size=40")
    assert r.exit_code == 2 and "3.png: permission denied" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("predict", runs / "ok", "-i", bad)
    assert r.exit_code == 2 and "3.png: permission denied" in r.stderr and "Traceback" not in r.stderr


def test_opencv_prints_no_error_lines_of_its_own(tmp_path, capfd):
    img = noise(2, 64)
    files = []
    for ext in ("tif", "bmp"):
        ok = tmp_path / f"ok.{ext}"
        cv2.imwrite(str(ok), img)
        data = ok.read_bytes()
        for frac in (0.5, 0.9):
            files.append(tmp_path / f"cut{frac}.{ext}")
            files[-1].write_bytes(data[: int(len(data) * frac)])
    cv2.imwrite(str(tmp_path / "ok.png"), img)
    data = (tmp_path / "ok.png").read_bytes()
    files.append(tmp_path / "corrupt.png")
    files[-1].write_bytes(data[:60] + bytes(200) + data[260:])
    capfd.readouterr()
    for f in files:
        with pytest.raises(CxrlabError, match=f.name):
            read_gray(f)
    out = capfd.readouterr()
    assert "ERROR" not in out.err and "libpng" not in out.err and "imread_" not in out.err, out.err


# ---- 16.3: task=binary for single-label sources -------------------------------------------------
def test_task_binary_is_honoured_for_a_single_label_source_or_refused(tmp_path, caplog):
    two = folder_dataset(tmp_path / "two", ("NORMAL", "PNEUMONIA"))
    with caplog.at_level(logging.WARNING):
        m = load_source("folder", str(two), task="binary")
    assert m.task == "binary" and m.labels == ["PNEUMONIA"]
    assert m.frame["PNEUMONIA"].sum() == 10 and set(m.frame["PNEUMONIA"]) == {0.0, 1.0}
    assert "'PNEUMONIA' is the positive label" in caplog.text
    flipped = load_source("folder", str(two), labels=["PNEUMONIA", "NORMAL"], task="binary")
    assert flipped.labels == ["NORMAL"]
    assert load_source("folder", str(two)).task == "multiclass"  # without task=binary nothing changes
    three = folder_dataset(tmp_path / "three", ("a", "b", "c"))
    with pytest.raises(CxrlabError, match=r"three: task=binary needs a single-label source .* 3 classes"):
        load_source("folder", str(three), task="binary")
    rows = pd.DataFrame({"path": [f"a/{i}.png" for i in range(10)], "Nodule": [0, 1] * 5, "Mass": [1, 0] * 5})
    rows.to_csv(three / "labels.csv", index=False)
    one = load_source("csv", str(three), labels=["Nodule"], task="binary")
    assert one.task == "binary" and one.labels == ["Nodule"]
    with pytest.raises(CxrlabError, match=r"labels.csv: task=binary needs .* 2 label columns"):
        load_source("csv", str(three), labels=["Nodule", "Mass"], task="binary")
    with pytest.raises(CxrlabError, match="task=binary"):
        as_task(load_source("npz", str(_npz_dir(tmp_path))), "binary")  # 3 classes


def _npz_dir(tmp_path: Path) -> Path:
    d = tmp_path / "npz"
    d.mkdir()
    np.savez(d / "n.npz", **npz_arrays())
    return d


# ---- 22.9: duplicate rows name the labels file ---------------------------------------------------
def test_duplicate_rows_name_the_labels_file_and_the_ids(tmp_path):
    root = folder_dataset(tmp_path)
    rows = [f"A/{i}.png" for i in range(10)] + ["A/2.png", "A/7.png"]
    pd.DataFrame({"path": rows, "label": ["x", "y"] * 6}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(CxrlabError) as e:
        load_source("csv", str(root))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'labels.csv'}: 2 duplicate image ids")
    assert "A/2.png on lines 4, 12" in msg and "A/7.png on lines 9, 13" in msg
    frame = pd.DataFrame({"image": ["a", "a"], "patient": ["p", "q"], "view": "", "split": "", "L": [0.0, 1.0]})
    with pytest.raises(CxrlabError, match=r"^table.csv: 1 duplicate image ids.*\(a\)"):
        Manifest(frame=frame, root=tmp_path, labels=["L"], origin="table.csv")
