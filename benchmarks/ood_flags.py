"""Benchmark: how often the OOD warning fires on test frontals vs noise, photo-like and lateral images.

Trains a small frontal-only model on the phantom (its OOD summary is fitted at
the end of training), then scores, through the same path as predict and serve
(files -> ``load_image`` -> penultimate features -> Mahalanobis distance):
the run's test frontals, uniform and Gaussian noise, procedural photo-like
colour JPEGs (sky, ground, sun, buildings, trees) and phantom lateral views.
Prints the flag rate per kind and the AUC of the score against the test
frontals, and writes JSON.

    python benchmarks/ood_flags.py [--n 1200] [--size 64] [--epochs 3] [--width 8] [--out bench_ood.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.lateral import draw_lateral
from cxrlab.data.preprocess import load_images
from cxrlab.run import RunFolder
from cxrlab.workflows import run_experiment
from cxrlab.workflows.common import open_model
from cxrlab.workflows.ood import open_scorer


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour 'outdoor photo': sky gradient, ground, a sun, buildings, trees, texture (BGR uint8)."""
    yy = np.linspace(0, 1, size)[:, None, None]
    sky = np.array(rng.uniform([150, 90, 40], [255, 200, 140])) * (1 - 0.5 * yy)
    img = np.broadcast_to(sky, (size, size, 3)).copy()
    horizon = int(size * rng.uniform(0.45, 0.75))
    img[horizon:] = rng.uniform([20, 60, 30], [90, 160, 110])
    cv2.circle(img, (int(rng.uniform(0, size)), int(rng.uniform(0, horizon / 2))), int(size * 0.08),
               (120, 230, 255), -1)
    for _ in range(int(rng.integers(2, 6))):
        x0, w = int(rng.uniform(0, size)), int(rng.uniform(0.08, 0.2) * size)
        top = int(horizon - rng.uniform(0.1, 0.4) * size)
        cv2.rectangle(img, (x0, top), (x0 + w, horizon), tuple(rng.uniform(40, 200, 3).tolist()), -1)
    for _ in range(int(rng.integers(1, 5))):
        c = (int(rng.uniform(0, size)), int(horizon - rng.uniform(0, 0.1) * size))
        cv2.circle(img, c, int(rng.uniform(0.05, 0.12) * size), (30, int(rng.uniform(90, 160)), 40), -1)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_kind(folder: Path, kind: str, n: int, size: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        if kind == "uniform noise":
            img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        elif kind == "gaussian noise":
            img = np.clip(rng.normal(128, 50, (size, size)), 0, 255).astype(np.uint8)
        elif kind == "photo-like":
            img = photo_like(rng, size)
        else:  # lateral view of a phantom patient, with random findings
            findings = {k: float(rng.random() < 0.3) * rng.uniform(0.5, 1) for k in
                        ("Cardiomegaly", "Effusion", "Consolidation", "Edema", "Atelectasis", "Nodule")}
            img = draw_lateral(size, Anatomy.draw(rng), tuple(rng.normal(0, 0.012, 2)), rng, findings)
        p = folder / f"{i:04d}.{'jpg' if kind == 'photo-like' else 'png'}"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1200, help="phantom images (frontal)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--per-kind", type=int, default=100)
    ap.add_argument("--out", default="bench_ood.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cxrlab-ood-"))
    tic = time.perf_counter()
    root = write_phantom(tmp / "phantom", n=a.n, size=a.size, seed=5)
    base = {"name": "ood", "seed": 0, "runs_dir": str(tmp / "runs"),
            "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": a.size,
                     "val_fraction": 0.2, "cache_dir": str(tmp / "cache")},
            "model": {"name": "simple_cnn", "options": {"width": a.width}},
            "train": {"epochs": a.epochs, "batch_size": 32, "lr": 3e-3},
            "evaluate": {"n_boot": 50}, "explain": {"enabled": False}}
    summary = run_experiment(load_config(None, [], base=base))
    run = RunFolder(tmp / "runs" / "ood")
    opened = open_model(run)
    scorer = open_scorer(run, opened.predictor)
    pre = opened.record.preprocess
    kinds = {"test frontals": [root / i for i in run.read_split()["test"]]}
    for k, kind in enumerate(("uniform noise", "gaussian noise", "photo-like", "lateral views")):
        kinds[kind] = write_kind(tmp / kind.replace(" ", "_"), kind, a.per_kind, a.size * 4, 100 + k)
    scores = {kind: scorer.score(load_images(paths, pre, workers=1))[0] for kind, paths in kinds.items()}
    ref = scores["test frontals"]
    rows = {}
    print(f"simple_cnn width {a.width}, {a.size} px, {a.epochs} epochs, test macro AUC {summary['macro_auc']:.3f}; "
          f"OOD threshold {scorer.threshold:.2f} (99th percentile of {scorer.summary['n_val']} validation images)")
    print(f"{'kind':<16}{'n':>6}{'flagged':>10}{'median score':>15}{'AUC vs frontals':>17}")
    for kind, s in scores.items():
        flagged = float(np.mean(s > scorer.threshold))
        auc = None if kind == "test frontals" else float(roc_auc_score(
            np.r_[np.zeros(len(ref)), np.ones(len(s))], np.r_[ref, s]))
        rows[kind] = {"n": len(s), "flagged": flagged, "median_score": float(np.median(s)), "auc_vs_frontals": auc}
        print(f"{kind:<16}{len(s):>6}{flagged:>10.1%}{np.median(s):>15.2f}{'' if auc is None else f'{auc:.3f}':>17}")
    res = {"n_phantom": a.n, "size": a.size, "epochs": a.epochs, "width": a.width,
           "macro_auc": summary["macro_auc"], "threshold": scorer.threshold, "n_val": scorer.summary["n_val"],
           "n_train": scorer.summary["n_train"], "kinds": rows, "seconds": round(time.perf_counter() - tic, 1)}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
