"""The preprocessing contract: a CLAHE + letterbox run answers the same in training, predict
(torch and ONNX), explain and localize, and a copied run folder needs nothing else."""

import shutil

import cv2
import numpy as np
import pytest

from cxrlab.config import load_config
from cxrlab.data.preprocess import Geometry, Preprocess, load_image
from cxrlab.explain.boxes import iou
from cxrlab.run import RunFolder, prob_columns
from cxrlab.workflows import export_onnx, predict_images, run_experiment
from cxrlab.workflows.common import open_model
from cxrlab.workflows.experiment import prepare_dataset

CLASSES = ["Normal", "Opacity"]


def _write_folder_dataset(root, n=48, seed=0):
    """Non-square grey images (portrait and landscape), a bright blob for 'Opacity'."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n // 3 if split == "train" else n // 8):
                h, w = (90, 60) if i % 2 else (56, 100)
                img = (rng.normal(90, 25, (h, w)) + np.linspace(0, 60, w)[None]).clip(0, 255)
                if c:
                    cv2.circle(img, (int(rng.integers(15, w - 15)), int(rng.integers(15, h - 15))), 8, 230, -1)
                cv2.imwrite(str(d / f"{split}_{name}_{i:03d}.png"), img.astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def clahe_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    root = _write_folder_dataset(tmp / "data")
    cfg = load_config(None, base={
        "name": "clahe", "seed": 0, "runs_dir": str(tmp / "runs"), "task": "multiclass",
        "data": {"source": "folder", "root": str(root), "image_size": 40, "clahe": True, "clahe_clip": 3.0,
                 "clahe_tiles": 4, "resize": "letterbox", "workers": 1, "cache_dir": str(tmp / "cache")},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
        "evaluate": {"n_boot": 10}, "explain": {"enabled": False},
    })
    run_experiment(cfg)
    return RunFolder(tmp / "runs" / "clahe"), cfg, root


def _test_files(run, root):
    pred = run.read_predictions("test")
    return pred, [root / p for p in pred["image"]]


def test_model_json_records_the_whole_contract(clahe_run):
    run, cfg, _ = clahe_run
    rec = run.read_model_record()
    assert rec.preprocess == Preprocess(size=40, resize="letterbox", clahe=True, clahe_clip=3.0, clahe_tiles=4)
    assert run.read_model_json()["preprocess"]["order"].startswith("decode > letterbox > clahe")


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_reproduces_training_predictions(clahe_run, engine, tmp_path):
    run, _, root = clahe_run
    if engine == "onnx":
        export_onnx(run.path)
    copy = tmp_path / "copied_run"  # a run folder copied alone predicts as training did
    shutil.copytree(run.path, copy)
    pred, files = _test_files(run, root)
    got = predict_images(copy, files, engine=engine)
    cols = prob_columns(CLASSES)
    assert np.abs(got[cols].to_numpy() - pred[cols].to_numpy()).max() < 1e-5


def test_explain_feeds_the_tensor_training_evaluated(clahe_run):
    run, cfg, root = clahe_run
    cache = prepare_dataset(cfg)  # the cache training read its test images from
    opened = open_model(run)
    pred, files = _test_files(run, root)
    rows = cache.rows(pred["image"].tolist()[:4])
    from_cache = opened.predictor.inputs(np.asarray(cache.images[rows]))
    from_file = opened.predictor.inputs(np.stack([load_image(f, opened.record.preprocess) for f in files[:4]]))
    assert from_cache.shape == (4, 1, 40, 40)
    assert np.array_equal(from_cache.numpy(), from_file.numpy())


@pytest.mark.parametrize("resize", ["squash", "letterbox"])
@pytest.mark.parametrize("wh", [(60, 90), (100, 56), (1024, 1024), (2500, 2048)])
def test_box_round_trip_and_placement(resize, wh):
    g = Geometry(*wh, Preprocess(size=224, resize=resize))
    w, h = wh
    box = (0.3 * w, 0.4 * h, 0.2 * w, 0.1 * h)
    assert iou(g.to_original(g.to_model(box)), box) >= 0.99
    x, y, bw, bh = g.image_in_model()
    assert x >= -1e-9 and y >= -1e-9 and x + bw <= 224 + 1e-9 and y + bh <= 224 + 1e-9
    if resize == "letterbox":  # the aspect ratio is kept: one scale for both axes
        assert bw / bh == pytest.approx(w / h, rel=0.02)


def test_letterbox_box_lands_on_the_object():
    """A bright square at a known place: its box mapped to model pixels covers the bright pixels there."""
    img = np.zeros((90, 150), np.uint8)
    img[30:50, 100:130] = 255
    p = Preprocess(size=60, resize="letterbox")
    from cxrlab.data.preprocess import preprocess

    model_img = preprocess(img, p)
    x, y, bw, bh = Geometry(150, 90, p).to_model((100, 30, 30, 20))
    inside = model_img[int(y) + 1:int(y + bh) - 1, int(x) + 1:int(x + bw) - 1]
    assert inside.min() > 200 and model_img.mean() < 60
