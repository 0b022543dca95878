"""One experiment end to end: data -> train -> evaluate -> explain -> report.

This is the Python API behind ``cxrlab train``; the demo calls it too.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrlab.config import ExperimentConfig
from cxrlab.data.cache import ImageCache, Preprocess, RowView, cache_key, prepare_cache
from cxrlab.data.io import image_size
from cxrlab.data.labels import apply_policy, relabel_uncertain
from cxrlab.data.labels import redraw as label_redraw
from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import load_source
from cxrlab.data.transforms import GRAY_MEAN, GRAY_STD
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.evaluate import evaluate_tables
from cxrlab.evaluate.metrics import macro, per_label_auc
from cxrlab.explain.localize import localize
from cxrlab.models import build_model, cam_layer
from cxrlab.models.fusion import DEFAULT_BACKBONES
from cxrlab.report.run_report import render_report, write_run_figures
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write, atomic_write_json
from cxrlab.train import distributed
from cxrlab.train.loop import ArraySplit, fit, predict, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # for third-party code that uses the global RNG


def _limit(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    return frame if limit is None else frame.head(limit).reset_index(drop=True)


def build_manifest(cfg: ExperimentConfig) -> Manifest:
    d = cfg.data
    if not d.root:
        raise CxrlabError("data.root is empty: set it in the config or as data.root=DIR")
    m = load_source(d.source, d.root, labels=d.labels, options=d.options, val_fraction=d.val_fraction,
                    fractions=dict(d.fractions), seed=cfg.seed, split_file=d.split_file)
    for s in ("train", "val", "test"):
        if (m.frame["split"] == s).sum() == 0:
            raise CxrlabError(f"{d.root}: the {s} split is empty")
    return m


def _model_info(cfg: ExperimentConfig, labels: list[str]) -> dict[str, Any]:
    return {
        "architecture": cfg.model.name, "num_classes": len(labels), "labels": labels,
        "task": cfg.task, "in_chans": cfg.model.in_chans, "input_size": cfg.data.image_size,
        "width": cfg.model.width, "convs": cfg.model.convs, "dropout": cfg.model.dropout,
        "backbones": list(cfg.model.backbones),
        "normalization": {"mean": GRAY_MEAN, "std": GRAY_STD, "scale": 1 / 255},
        "thresholds": dict.fromkeys(labels, 0.5),
    }


def preprocess_of(cfg: ExperimentConfig) -> Preprocess:
    d = cfg.data
    return Preprocess(size=d.image_size, resize=d.resize, clahe=d.clahe, clahe_clip=d.clahe_clip,
                      clahe_tiles=d.clahe_tiles)


def prepare_images(cfg: ExperimentConfig, manifest: Manifest, ids: list[str]) -> ImageCache:
    """Decode-once cache of these images at the config's size and preprocessing."""
    p = preprocess_of(cfg)
    key = cache_key(cfg.data.source, str(manifest.root), ids, p)
    paths = [manifest.root / i for i in ids]
    return prepare_cache(paths, ids, p, Path(cfg.data.cache_dir).expanduser(), key, workers=cfg.data.workers)


def model_from_run(run: RunFolder, which: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder from model.json and load its weights."""
    info = run.read_model_json()
    model = build_model(info["architecture"], info["num_classes"], in_chans=info["in_chans"],
                        dropout=info.get("dropout", 0.0), width=info.get("width", 32),
                        convs=info.get("convs", 2), backbones=tuple(info.get("backbones", DEFAULT_BACKBONES)))
    run.load_weights(model, which)
    return model, info


def run_experiment(cfg: ExperimentConfig, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate ``cfg``; return the run summary (also written to summary.json)."""
    tic = time.perf_counter()
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    manifest = build_manifest(cfg)
    labels = manifest.labels
    if manifest.task != cfg.task:
        log.info("task %s (from source %s) replaces config task %s", manifest.task, cfg.data.source, cfg.task)
        cfg = cfg.model_copy(update={"task": manifest.task})
    run = RunFolder(Path(cfg.runs_dir) / cfg.name)
    main = distributed.is_main()
    if main:
        run.create()
    splits = {s: _limit(manifest.split(s), cfg.data.limit) for s in ("train", "val", "test")}
    split_ids = {s: f["image"].tolist() for s, f in splits.items()}
    if resume and (run.path / "split.json").is_file():
        old = json.loads((run.path / "split.json").read_text())
        if any(old.get(s) != split_ids[s] for s in split_ids):
            raise CxrlabError(f"{run.path / 'split.json'}: the split no longer matches the data; "
                              "start a new run (different name) instead of --resume")
    if main:
        run.write_config(cfg)
        run.write_split(split_ids)
        run.write_model_json(_model_info(cfg, labels))

    distributed.setup()
    with distributed.main_first():
        cache = prepare_images(cfg, manifest, [i for f in splits.values() for i in f["image"]])
    offsets = np.cumsum([0] + [len(f) for f in splits.values()])
    arrays = {s: RowView(cache.images, np.arange(offsets[k], offsets[k + 1])) for k, s in enumerate(splits)}
    data, plans = {}, {}
    for s, f in splits.items():
        d = cfg.data
        plan = (apply_policy(manifest.targets(f), labels, d.uncertain, d.blank, d.flip_p) if s == "train"
                else apply_policy(manifest.targets(f), labels, "ignore", d.blank))
        redraw = (lambda rng, p=plan: label_redraw(p, rng)) if plan.flip_mask.any() else None
        data[s], plans[s] = ArraySplit(arrays[s], torch.from_numpy(plan.targets), redraw=redraw), plan
    log.info("images: %s", {s: len(v) for s, v in data.items()})

    def new_model() -> torch.nn.Module:
        return build_model(cfg.model.name, len(labels), in_chans=cfg.model.in_chans,
                           pretrained=cfg.model.pretrained, dropout=cfg.model.dropout, width=cfg.model.width,
                           convs=cfg.model.convs, backbones=cfg.model.backbones)

    if "selftrained" in plans["train"].policies.values() and plans["train"].uncertain_mask.any():
        # U-SelfTrained: stage 1 learns with the uncertain entries masked, then labels them itself
        stage1 = RunFolder(run.path / "selftrained_stage1").create()
        teacher = new_model()
        fit(teacher, data["train"], data["val"], labels, cfg, stage1, resume=resume)
        stage1.load_weights(teacher, "best")
        soft = predict(teacher, data["train"].images, cfg.model.in_chans, resolve_device(cfg.train.device),
                       task=cfg.task)
        relabelled = relabel_uncertain(plans["train"], soft)
        log.info("U-SelfTrained: %d uncertain entries relabelled by the stage-1 model",
                 int(np.isfinite(relabelled).sum() - np.isfinite(plans["train"].targets).sum()))
        data["train"] = ArraySplit(data["train"].images, torch.from_numpy(relabelled), data["train"].redraw)
    model = new_model()
    history = fit(model, data["train"], data["val"], labels, cfg, run, resume=resume)
    if not main:  # rank 0 evaluates, explains and reports
        return {}
    run.load_weights(model, "best")
    device = resolve_device(cfg.train.device)
    model.to(device)

    test = splits["test"]
    y_true = data["test"].targets.numpy()
    tta = cfg.evaluate.tta
    probs = predict(model, data["test"].images, cfg.model.in_chans, device, task=cfg.task, tta=tta)
    aucs = per_label_auc(y_true, probs, labels)
    pred_test = prediction_table(test, y_true, probs, labels)
    val_probs = predict(model, data["val"].images, cfg.model.in_chans, device, task=cfg.task, tta=tta)
    pred_val = prediction_table(splits["val"], data["val"].targets.numpy(), val_probs, labels)
    atomic_write(run.path / "predictions.csv", lambda tmp: pred_test.to_csv(tmp, index=False))
    atomic_write(run.path / "predictions_val.csv", lambda tmp: pred_val.to_csv(tmp, index=False))
    evaluation = evaluate_tables(pred_test, labels, cfg.task, pred_val, n_boot=cfg.evaluate.n_boot, seed=cfg.seed)
    atomic_write_json(run.path / "evaluation.json", evaluation)
    if cfg.task != "multiclass":  # predict uses the thresholds chosen on validation
        info = run.read_model_json()
        info["thresholds"] = {lab: d["threshold"] for lab, d in evaluation["per_label"].items()}
        info["threshold_rule"] = "youden on validation (fixed 0.5 where undefined)"
        run.write_model_json(info)

    summary: dict[str, Any] = {
        "name": cfg.name, "macro_auc": macro(aucs), "per_label_auc": aucs,
        "best_epoch": max((h["epoch"] for h in history if h.get("best")), default=None),
        "epochs_run": len(history), "n_images": {s: len(f) for s, f in splits.items()},
        "macro_auc_ci": [evaluation["macro_auc"].get("ci_low"), evaluation["macro_auc"].get("ci_high")],
    }
    cases: list[Any] = []
    sizes: dict[str, tuple[int, int]] = {}
    if cfg.explain.enabled and manifest.boxes is not None and len(manifest.boxes):
        test_ids = test["image"].tolist()
        boxed = sorted(set(manifest.boxes["image"]) & set(test_ids))
        sizes = {img: image_size(manifest.root / img) for img in boxed}
        ex = cfg.explain
        loc, cases = localize(model, cam_layer(model), data["test"].images, test_ids, manifest.boxes,
                              labels, sizes, in_chans=cfg.model.in_chans, device=device,
                              threshold=ex.threshold, min_iou=ex.iou, draws=ex.random_draws,
                              seed=cfg.seed, max_cases=ex.max_images, method=ex.method)
        summary["localization"] = loc

    summary["wall_seconds"] = time.perf_counter() - tic
    write_run_figures(run, cfg, summary, history, y_true, probs, labels, cases, data["test"].numpy(), sizes,
                      evaluation)
    atomic_write_json(run.path / "summary.json", summary)
    render_report(run)
    return summary


def prediction_table(frame: pd.DataFrame, y: np.ndarray, probs: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """image, patient, true label columns, then ``prob_<label>`` columns."""
    out = pd.DataFrame({"image": frame["image"].to_numpy(), "patient": frame["patient"].to_numpy()})
    for extra in ("study", "view"):
        if extra in frame.columns:
            out[extra] = frame[extra].to_numpy()
    for i, lab in enumerate(labels):
        out[lab] = y[:, i]
    for i, lab in enumerate(labels):
        out[f"prob_{lab}"] = probs[:, i]
    return out
