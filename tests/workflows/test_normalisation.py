"""Training reads the same preprocessing record as predict, normalisation included.

A run trained with a non-default ``data.normalize`` (per-channel, 3 channels) is predicted by
``predict_images`` and ``cxrlab predict`` with PyTorch and ONNX Runtime within 1e-5 of its own
``predictions.csv``; model records of older formats load with the normalisation they were trained with.
"""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.data.preprocess import Preprocess, load_images, normalization
from cxrlab.data.transforms import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, to_float
from cxrlab.errors import ConfigError, CxrlabError
from cxrlab.run import MODEL_FORMAT_VERSION, ModelRecord, RunFolder, prob_columns
from cxrlab.workflows import export_onnx, predict_images, run_experiment
from cxrlab.workflows.common import open_model

CLASSES = ["Normal", "Opacity"]
MEAN, STD = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]  # far from the default 0.449 / 0.226


def _folder_dataset(root, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", 16), ("val", 6), ("test", 6)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(90, 25, (40, 40)).clip(0, 255)
                if c:
                    cv2.circle(img, (int(rng.integers(10, 30)), int(rng.integers(10, 30))), 6, 230, -1)
                cv2.imwrite(str(d / f"{split}_{name}_{i:02d}.png"), img.astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def normalised_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("normalise")
    root = _folder_dataset(tmp / "data")
    cfg = load_config(None, base={
        "name": "norm", "seed": 0, "runs_dir": str(tmp / "runs"), "task": "multiclass",
        "data": {"source": "folder", "root": str(root), "image_size": 32, "normalize": [MEAN, STD], "workers": 1,
                 "cache_dir": str(tmp / "cache")},
        "model": {"name": "simple_cnn", "in_chans": 3, "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "threads": 1},
        "evaluate": {"n_boot": 10}, "explain": {"enabled": False},
    })
    run_experiment(cfg)
    run = RunFolder(tmp / "runs" / "norm")
    pred = run.read_predictions("test")
    return run, pred, [root / p for p in pred["image"]]


def test_normalize_names_and_values():
    assert normalization("default", 3) == (GRAY_MEAN, GRAY_STD)
    assert normalization("imagenet", 1) == (GRAY_MEAN, GRAY_STD)  # one value for 1-channel models
    assert normalization("imagenet", 3) == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalization([0.5, [0.2, 0.3, 0.4]], 3) == (0.5, (0.2, 0.3, 0.4))
    with pytest.raises(CxrlabError, match="2 mean values for a model with 3"):
        normalization([[0.1, 0.2], 0.3], 3)
    with pytest.raises(ConfigError, match=r"data\.normalize: 3 mean values for model\.in_chans=1"):
        load_config(None, ["data.normalize=[[0.1,0.2,0.3],0.2]"])
    with pytest.raises(ConfigError, match=r"data\.normalize: must be default, imagenet or \[mean, std\]"):
        load_config(None, ["data.normalize=imagenet21k"])


def test_per_channel_to_float_matches_the_formula():
    x = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8)
    got = to_float(x, 3, tuple(MEAN), tuple(STD))
    want = torch.stack([(x.float() / 255 - m) / s for m, s in zip(MEAN, STD, strict=True)], 1)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(to_float(x, 3, 0.3, 0.2), to_float(x, 3, (0.3,) * 3, (0.2,) * 3), atol=1e-6)


def test_training_batches_use_the_splits_record(monkeypatch, tmp_path):
    from cxrlab.models import build_model
    from cxrlab.train import loop

    seen = []
    real = loop.to_float

    def spy(batch, in_chans, *norm):
        seen.append(norm)
        return real(batch, in_chans, *norm)

    monkeypatch.setattr(loop, "to_float", spy)
    pre = Preprocess(size=16, mean=0.1, std=0.4)
    cfg = load_config(None, base={"data": {"labels": ["A", "B"]}, "model": {"name": "simple_cnn"},
                                  "train": {"epochs": 1, "batch_size": 8, "augment": False, "threads": 1}})
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (16, 16, 16), dtype=np.uint8)
    y = torch.from_numpy(np.tile([[0.0, 1.0], [1.0, 0.0]], (8, 1)).astype(np.float32))
    model = build_model("simple_cnn", 2, width=4, convs=1)
    loop.fit(model, loop.ArraySplit(imgs, y, pre=pre), loop.ArraySplit(imgs, y, pre=pre), ["A", "B"], cfg,
             RunFolder(tmp_path).create())
    assert seen and all(n == (0.1, 0.4) for n in seen)
    with pytest.raises(CxrlabError, match="normalised differently"):
        loop.fit(model, loop.ArraySplit(imgs, y, pre=pre), loop.ArraySplit(imgs, y), ["A", "B"], cfg,
                 RunFolder(tmp_path / "b").create())


def test_model_json_holds_the_configured_normalisation(normalised_run):
    run, _, _ = normalised_run
    info = run.read_model_json()
    assert info["format_version"] == MODEL_FORMAT_VERSION
    assert info["preprocess"]["mean"] == MEAN and info["preprocess"]["std"] == STD
    rec = run.read_model_record()
    assert (rec.preprocess.mean, rec.preprocess.std) == (tuple(MEAN), tuple(STD))


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_reproduces_predictions_csv(normalised_run, engine):
    run, pred, files = normalised_run
    if engine == "onnx":
        export_onnx(run.path)
    got = predict_images(run.path, files, engine=engine, ood=False)
    cols = prob_columns(CLASSES)
    assert np.abs(got[cols].to_numpy() - pred[cols].to_numpy()).max() < 1e-5


def test_cli_predict_reproduces_predictions_csv(normalised_run, tmp_path):
    run, pred, files = normalised_run
    out = tmp_path / "p.csv"
    args = [a for f in files for a in ("-i", f)]
    res = run_cli("predict", run.path, *args, "--out", out)
    assert res.exit_code == 0, res.output
    cols = prob_columns(CLASSES)
    assert np.abs(pd.read_csv(out)[cols].to_numpy() - pred[cols].to_numpy()).max() < 1e-5


def test_the_normalisation_changes_the_answer(normalised_run):
    """The default normalisation gives other probabilities, so the tests above are not vacuous."""
    run, pred, files = normalised_run
    opened = open_model(run)
    images = load_images(files, opened.record.preprocess, workers=1)
    ours = opened.predictor.probabilities(images)
    default = type(opened.predictor).for_model(opened.model, "multiclass", 3).probabilities(images)
    assert np.abs(ours - pred[prob_columns(CLASSES)].to_numpy()).max() < 1e-5
    assert np.abs(ours - default).max() > 1e-3


def _old_format(info):
    """model.json as cxrlab 0.1.0 wrote it: no format_version, one number each (here: none at all)."""
    old = json.loads(json.dumps(info))
    old.pop("format_version")
    old["preprocess"].pop("mean")
    old["preprocess"].pop("std")
    old["preprocess"]["version"] = 1
    old.pop("normalization")
    return old


def test_old_records_load_with_the_old_defaults(normalised_run, tmp_path):
    run, _, _ = normalised_run
    old = _old_format(run.read_model_json())
    rec = ModelRecord.from_dict(old)
    assert rec.format_version == 1
    assert (rec.preprocess.mean, rec.preprocess.std) == (GRAY_MEAN, GRAY_STD)
    # a 0.1.0 record with its normalization block (the release wrote both) keeps those numbers
    both = {**old, "normalization": {"mean": 0.3, "std": 0.2, "scale": 1 / 255}}
    assert (ModelRecord.from_dict(both).preprocess.mean, ModelRecord.from_dict(both).preprocess.std) == (0.3, 0.2)
    # format 0: options at the top level
    legacy = {k: v for k, v in old.items() if k != "options"} | {"width": 4, "convs": 1}
    rec0 = ModelRecord.from_dict(legacy)
    assert rec0.format_version == 0 and rec0.options == {"width": 4, "convs": 1}
    # rewriting upgrades the file to the current format
    assert rec.to_dict()["format_version"] == MODEL_FORMAT_VERSION
    with pytest.raises(CxrlabError, match="format 99 is newer"):
        ModelRecord.from_dict({**old, "format_version": 99})


def test_old_run_folder_predicts_with_the_old_defaults(normalised_run, tmp_path):
    """A run folder whose model.json lacks mean/std opens with 0.449/0.226 (what it was trained with)."""
    import shutil

    run, _, files = normalised_run
    copy = RunFolder(tmp_path / "old")
    shutil.copytree(run.path, copy.path)
    copy.model_json.write_text(json.dumps(_old_format(run.read_model_json())))
    opened = open_model(copy)
    assert (opened.predictor.mean, opened.predictor.std) == (GRAY_MEAN, GRAY_STD)
    assert len(predict_images(copy.path, files[:2], ood=False)) == 2
