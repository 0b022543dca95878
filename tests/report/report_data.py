"""Three tiny finished runs, one per task, for the report tests (data builders and the training).

- multi-label: the tiny phantom (NIH layout, boxes, so localisation too);
- binary: a Kermany tree whose official split puts one patient in train *and* test;
- multi-class: a folder tree with train/val/test folders, CLAHE and letterbox.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.run import RunFolder
from cxrlab.workflows import run_experiment

SHARED_PATIENT = "person1"


def _image(path, positive, rng, shape=(48, 48)):
    """Grey noise with a gradient; a bright blob when ``positive``."""
    h, w = shape
    img = (rng.normal(90, 20, (h, w)) + np.linspace(0, 50, w)[None]).clip(0, 255)
    if positive:
        cv2.circle(img, (int(rng.integers(12, w - 12)), int(rng.integers(12, h - 12))), 7, 235, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img.astype(np.uint8))
    return path


def make_kermany(root, n_train=10, n_test=5, seed=0):
    """``{train,test}/{NORMAL,PNEUMONIA}/*.jpeg``; ``person1`` has images in train and in test."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            base = i + (100 if split == "test" else 1)
            _image(root / split / "NORMAL" / f"IM-{base:04d}-0001.jpeg", False, rng)
            _image(root / split / "PNEUMONIA" / f"person{base}_bacteria_{base}.jpeg", True, rng)
    _image(root / "test" / "PNEUMONIA" / f"{SHARED_PATIENT}_virus_999.jpeg", True, rng)  # leaks: person1 trains too
    return root


def make_folder_tree(root, classes=("COVID", "Normal", "Opacity"), seed=0):
    """``{train,val,test}/<class>/*.png``, non-square images (letterbox pads them)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        for c, name in enumerate(classes):
            for i in range(n):
                shape = (60, 40) if i % 2 else (40, 64)
                img_path = root / split / name / f"{split}_{name}_{i}.png"
                _image(img_path, c > 0, rng, shape)
                if c == 2:  # a second blob tells Opacity from COVID
                    img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
                    cv2.circle(img, (10, 10), 5, 250, -1)
                    cv2.imwrite(str(img_path), img)
    return root


def _config(name, runs, cache, data, **extra):
    base = {"name": name, "seed": 0, "runs_dir": str(runs),
            "data": {"image_size": 32, "workers": 1, "cache_dir": str(cache), **data},
            "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
            "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
            "evaluate": {"n_boot": 50},
            "explain": {"max_images": 8, "random_draws": 2, "figures": 4}}
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(None, base=base)


def train_report_runs(phantom: Path, tmp: Path) -> dict[str, RunFolder]:
    """``{"multilabel": run, "binary": run, "multiclass": run}``, each trained 2 epochs at 32 px in ``tmp``."""
    runs, cache = tmp / "runs", tmp / "cache"
    cfgs = {
        "multilabel": _config("multilabel", runs, cache, {"source": "nih14", "root": str(phantom),
                                                          "labels": list(LABELS), "val_fraction": 0.2}),
        "binary": _config("binary", runs, cache, {"source": "kermany", "root": str(make_kermany(tmp / "kermany")),
                                                  "val_fraction": 0.3}, train={"loss": "focal"}),
        "multiclass": _config("multiclass", runs, cache,
                              {"source": "folder", "root": str(make_folder_tree(tmp / "folder")),
                               "resize": "letterbox", "clahe": True, "clahe_tiles": 4},
                              task="multiclass"),
    }
    for cfg in cfgs.values():
        run_experiment(cfg)
    return {k: RunFolder(runs / k) for k in cfgs}
