"""Defects found on real and odd input: each gives a clear one-line error or the documented behaviour."""

import json
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.data.io import read_gray
from cxrlab.data.phantom import LABELS
from cxrlab.errors import ConfigError, CxrlabError
from cxrlab.models import build_model
from cxrlab.run import RunFolder
from cxrlab.train.loop import selection_metric
from cxrlab.workflows import evaluate_run, predict_images, run_experiment, uncertainty_run


def _png_claiming(path, width, height):
    """A valid small PNG whose IHDR claims another size (CRC fixed, so readers trust the header)."""
    ok, buf = cv2.imencode(".png", np.full((8, 8), 128, np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def tiny(root, runs, **over):
    base = {"name": "t", "seed": 0, "runs_dir": str(runs),
            "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 32, "workers": 1},
            "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
            "train": {"epochs": 1, "batch_size": 16}, "evaluate": {"n_boot": 10}, "explain": {"enabled": False}}
    return load_config(None, [f"{k}={v}" for k, v in over.items()], base=base)


def test_png_named_jpg_reads_by_content(tmp_path):
    img = (np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    (tmp_path / "x.jpg").write_bytes((tmp_path / "x.png").read_bytes())
    assert np.array_equal(read_gray(tmp_path / "x.jpg"), img)


def test_huge_header_is_one_line_in_read_check_and_predict(tmp_path, tiny_phantom):
    bomb = _png_claiming(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(CxrlabError, match=r"bomb.png: .*(exceed|too large)"):
        read_gray(bomb)
    # data check on a folder dataset holding the file
    for c in ("A", "B"):
        (tmp_path / "ds" / c).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "ds" / c / f"{i}.png"), np.full((16, 16), 40 * i, np.uint8))
    (tmp_path / "ds" / "A" / "bomb.png").write_bytes(bomb.read_bytes())
    r = run_cli("data", "check", "--source", "folder", "--root", tmp_path / "ds")
    assert r.exit_code == 1 and "bomb.png" in r.stderr and "Traceback" not in r.output + r.stderr


def test_train_and_predict_refuse_a_huge_header(tmp_path, tiny_phantom):
    import shutil

    root = tmp_path / "ph"
    shutil.copytree(tiny_phantom, root)
    victim = sorted((root / "images").glob("*.png"))[5]
    _png_claiming(victim, 40000, 40000)
    with pytest.raises(CxrlabError, match=r"exceed|too large"):
        run_experiment(tiny(root, tmp_path / "runs"))
    # bad_images: skip trains without it and lists it
    s = run_experiment(tiny(root, tmp_path / "runs", **{"data.bad_images": "skip", "name": "skip"}))
    run = RunFolder(tmp_path / "runs" / "skip")
    skipped = run.read_skipped()
    assert s["skipped_images"] == 1 and skipped["image"].iloc[0].endswith(victim.name)
    assert victim.name not in (run.split_file.read_text())
    r = run_cli("predict", run.path, "-i", victim)
    assert r.exit_code == 2 and victim.name in r.stderr and "Traceback" not in r.stderr


def test_undefined_validation_auc_selects_by_loss():
    y = np.zeros((10, 3), np.float32)
    assert selection_metric("multilabel", y) == "val_loss"
    y[0, 1] = 1
    assert selection_metric("multilabel", y) == "val_macro_auc"
    assert selection_metric("multiclass", np.eye(3)[[0, 1, 2, 0]]) == "val_accuracy"


def test_all_negative_validation_trains_and_says_so(tiny_phantom, tmp_path):
    from cxrlab.train.loop import ArraySplit, fit

    cfg = tiny(tiny_phantom, tmp_path, **{"train.epochs": 2})
    run = RunFolder(tmp_path / "direct").create()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (20, 32, 32), dtype=np.uint8)
    train = ArraySplit(imgs, torch.from_numpy((rng.random((20, 6)) < 0.3).astype(np.float32)))
    val = ArraySplit(imgs[:8], torch.zeros(8, 6))
    hist = fit(build_model("simple_cnn", 6, width=4, convs=1), train, val, list(LABELS), cfg, run)
    assert all(h["selection"] == "val_loss" for h in hist) and hist[0]["best"]
    assert run.weights_file("best").is_file()


@pytest.mark.parametrize("name", ["simple_cnn", "resnet18"])
def test_configured_dropout_zero_stays_zero(name):
    m = build_model(name, 3, dropout=0.0, **({"width": 4} if name == "simple_cnn" else {}))
    rates = [x.p for x in m.modules() if isinstance(x, torch.nn.Dropout)]
    assert all(r == 0.0 for r in rates)
    if name == "resnet18":
        assert m.drop_rate == 0.0


def test_fusion_dropout_default_and_explicit_zero():
    from cxrlab.models.fusion import FusionNet

    small = {"backbones": ["resnet18", "resnet18"]}
    assert build_model("fusion", 2, **small).drop.p == 0.5
    zero = build_model("fusion", 2, dropout=0.0, **small)
    assert isinstance(zero, FusionNet) and zero.drop.p == 0.0


def test_unknown_model_option_is_a_clear_error():
    with pytest.raises(CxrlabError, match="does not accept the given options"):
        build_model("simple_cnn", 2, depth=3)


def test_device_and_n_boot_mistakes_fail_before_work(tiny_phantom, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(CxrlabError, match="no CUDA GPU"):
            run_experiment(tiny(tiny_phantom, tmp_path, **{"train.device": "cuda:1"}))
        assert not (tmp_path / "t").exists()  # nothing was written
    with pytest.raises(ConfigError, match="train.device"):
        tiny(tiny_phantom, tmp_path, **{"train.device": "gpu"})
    r = run_cli("train")
    assert r.exit_code == 2 and "--config" in r.stderr


def test_uncertainty_uses_the_runs_split_and_writes_valid_json(tiny_phantom, tmp_path):
    run_experiment(tiny(tiny_phantom, tmp_path, **{"model.dropout": 0.3, "data.limit": 20}))
    run = RunFolder(tmp_path / "t")
    u = uncertainty_run(run.path, passes=3)
    assert u["images"] == len(run.read_split()["test"]) == 20
    json.loads(run.uncertainty_file.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    r = run_cli("evaluate", run.path, "--n-boot", "0")
    assert r.exit_code == 2 and "--n-boot" in r.stderr


def test_evaluate_keeps_validation_thresholds(tiny_phantom, tmp_path):
    run_experiment(tiny(tiny_phantom, tmp_path, **{"train.epochs": 2}))
    run = RunFolder(tmp_path / "t")
    before = run.read_model_record()
    ev = evaluate_run(run.path, n_boot=20)
    after = run.read_model_record()
    assert after.threshold_rule.startswith("youden") and before.thresholds == pytest.approx(after.thresholds)
    assert after.thresholds == pytest.approx({k: v["threshold"] for k, v in ev["per_label"].items()})
    assert run.report_file.is_file()


def test_older_model_json_still_loads_with_a_warning(tiny_phantom, tmp_path, caplog):
    run_experiment(tiny(tiny_phantom, tmp_path))
    run = RunFolder(tmp_path / "t")
    info = run.read_model_json()
    old = {k: v for k, v in info.items() if k not in ("format_version", "preprocess", "options")}  # format 0
    old.update({"width": 4, "convs": 1, "backbones": ["densenet121", "efficientnet_b3"]})
    run.model_json.write_text(json.dumps(old))
    img = sorted((tiny_phantom / "images").glob("*.png"))[:2]
    with caplog.at_level("WARNING"):
        out = predict_images(run.path, img)
    assert len(out) == 2 and "no preprocessing record" in caplog.text


def test_patient_fraction_keeps_whole_patients_in_every_split():
    import pandas as pd

    from cxrlab.data.manifest import Manifest
    from cxrlab.workflows.experiment import _split_frames

    rows = [{"image": f"{p}_{k}.png", "patient": str(p), "view": "PA", "split": split, "A": float(k % 2)}
            for p, split in zip(range(200), ["train"] * 140 + ["val"] * 20 + ["test"] * 40, strict=True)
            for k in range(1 + p % 3)]
    manifest = Manifest(frame=pd.DataFrame(rows), root=".", labels=["A"], task="multilabel")
    full = _split_frames(load_config(None, ["data.root=."]), manifest)
    half = _split_frames(load_config(None, ["data.root=.", "data.patient_fraction=0.5"]), manifest)
    kept = {s: set(f["patient"]) for s, f in half.items()}
    assert sum(len(v) for v in kept.values()) == 100  # half of the 200 patients
    assert 55 <= len(kept["train"]) <= 85 and 3 <= len(kept["val"]) <= 17  # each split keeps about its share
    for s, f in half.items():  # whole patients: every image of a kept patient
        assert len(f) == full[s]["patient"].isin(kept[s]).sum()
    again = _split_frames(load_config(None, ["data.root=.", "data.patient_fraction=0.5"]), manifest)
    assert all(again[s].equals(half[s]) for s in half)  # the same draw for the same seed
    with pytest.raises(ConfigError, match="patient_fraction"):
        load_config(None, ["data.patient_fraction=0"])
