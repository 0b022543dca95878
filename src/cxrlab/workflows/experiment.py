"""One experiment end to end: data -> train -> test -> evaluate -> localise -> report.

The Python API behind ``cxrlab train``; the demo and studies call it too.
:func:`run_experiment` reads as the list of its steps; each step is a
function below.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrlab.config import ExperimentConfig
from cxrlab.data.cache import ImageCache, RowView, cache_key, prepare_cache
from cxrlab.data.labels import LabelPlan, apply_policy, relabel_uncertain
from cxrlab.data.labels import redraw as label_redraw
from cxrlab.data.manifest import Manifest
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import Calibration, calibrator, fit_calibration
from cxrlab.evaluate.evaluate import evaluation_of
from cxrlab.evaluate.records import Evaluation, Localization, RunSummary, fresh
from cxrlab.explain.localize import localize
from cxrlab.inference import Predictor
from cxrlab.locks import FolderLock
from cxrlab.models import build_model, cam_layer
from cxrlab.models.pretrained import MIN_SHARE, check_hub_weights, load_local_weights
from cxrlab.progress import say
from cxrlab.report.run_report import render_report, write_run_figures
from cxrlab.run import ModelRecord, RunFolder, prediction_table, prob_columns
from cxrlab.train import distributed
from cxrlab.train.loop import ArraySplit, fit, resolve_device
from cxrlab.workflows.common import build_manifest, geometries, preprocess_of
from cxrlab.workflows.facts import device_record, split_summary
from cxrlab.workflows.ood import fit_ood

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # for third-party code that uses the global RNG


def run_experiment(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train and evaluate ``cfg`` into ``runs_dir/name``; return the summary (also in summary.json).

    Args:
        resume: continue from the run's last completed epoch.
        overwrite: delete an existing run of the same name first.

    Raises:
        CxrlabError: the run exists and neither ``resume`` nor ``overwrite`` is set; bad data; etc.
    """
    tic = time.perf_counter()
    resolve_device(cfg.train.device)  # a wrong device fails before any work
    seed_everything(cfg.seed)
    threads = torch.get_num_threads()  # train.threads must not leak into the caller's process
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    lock = FolderLock(Path(cfg.runs_dir) / cfg.name)  # one writer per run folder until the run ends
    try:
        if distributed.is_main():  # before any work or name check: a second trainer is refused at once
            lock.acquire()
        manifest = build_manifest(cfg)
        if manifest.task != cfg.task:
            log.info("task %s (from source %s) replaces config task %s", manifest.task, cfg.data.source, cfg.task)
            cfg = cfg.model_copy(update={"task": manifest.task})
        check_labels(cfg, manifest)  # before any work: a split without both classes cannot train or test
        weights = check_weights(cfg, manifest.labels, overwrite)  # before the run folder is made
        run = open_run_folder(cfg, resume, overwrite)
        data = load_data(cfg, manifest, run, resume)
        data.pretrained = weights
        model = train_model(cfg, data, run, resume)
        if not distributed.is_main():  # rank 0 tests, explains and reports
            return {}
        return finish_run(cfg, run, model, data, manifest, tic)
    finally:
        lock.release()
        torch.set_num_threads(threads)


def open_run_folder(cfg: ExperimentConfig, resume: bool, overwrite: bool) -> RunFolder:
    """Refuse to mix two trainings in one folder; invalidate what the new weights would contradict.

    The caller holds the folder's :class:`~cxrlab.locks.FolderLock` (taken re-entrantly here too), so
    the name check, ``--overwrite`` and ``--resume`` never race another trainer of the same name.
    """
    run = RunFolder(Path(cfg.runs_dir) / cfg.name)
    if not distributed.is_main():
        return run
    if resume and overwrite:
        raise CxrlabError("--resume and --overwrite exclude each other")
    FolderLock(run.path).acquire().release()  # refused here if another process holds it
    if run.exists() and not (resume or overwrite):
        raise CxrlabError(f"{run.path}: a run of this name exists; use --resume to continue it, --overwrite "
                          "to replace it, or another name (name=...)")
    if overwrite:
        run.clear()
    run.create()
    removed = run.invalidate_derived()  # every file derived from earlier best weights goes together
    if removed and resume:
        log.info("resume: removed %d files derived from the earlier weights", len(removed))
    return run


@dataclass
class RunData:
    frames: dict[str, pd.DataFrame]
    splits: dict[str, ArraySplit]
    plans: dict[str, LabelPlan]
    labels: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    pretrained: dict[str, Any] = field(default_factory=dict)
    """What the initial weights were (:func:`check_weights`); stored in summary.json."""


def load_data(cfg: ExperimentConfig, manifest: Manifest, run: RunFolder, resume: bool) -> RunData:
    """Splits -> decode-once cache -> label policies; writes config, split and the model record."""
    frames = _split_frames(cfg, manifest)
    distributed.setup()
    with distributed.main_first():
        cache = _prepare(cfg, manifest, [i for f in frames.values() for i in f["image"]])
    frames, rows = _drop_unreadable(run, cache, frames)
    ids = {s: f["image"].tolist() for s, f in frames.items()}
    if resume and run.split_file.is_file() and run.read_split() != ids:
        raise CxrlabError(f"{run.split_file}: the split no longer matches the data; start a new run "
                          "(different name) instead of --resume")
    labels, pre = manifest.labels, preprocess_of(cfg)  # one record: model.json's and the training input's
    if distributed.is_main():
        run.write_config(cfg)
        run.write_split(ids)
        run.write_model_record(ModelRecord.new(cfg, labels, pre))
    splits, plans = {}, {}
    d = cfg.data
    for s, f in frames.items():
        absent = manifest.absent_mask(f)
        plan = (apply_policy(manifest.targets(f), labels, d.uncertain, d.blank, d.flip_p, absent) if s == "train"
                else apply_policy(manifest.targets(f), labels, "ignore", d.blank, absent=absent))
        redraw = (lambda rng, p=plan: label_redraw(p, rng)) if plan.flip_mask.any() else None
        splits[s] = ArraySplit(RowView(cache.images, rows[s]), torch.from_numpy(plan.targets), redraw=redraw, pre=pre)
        plans[s] = plan
    log.info("images: %s", {s: len(v) for s, v in splits.items()})
    return RunData(frames, splits, plans, labels)


def _split_frames(cfg: ExperimentConfig, manifest: Manifest) -> dict[str, pd.DataFrame]:
    """train, val, test rows in manifest order: ``data.patient_fraction`` of the patients, then the
    first ``data.limit`` of each split."""
    limit, fraction = cfg.data.limit, cfg.data.patient_fraction
    keep = None
    if fraction < 1:
        patients = np.array(sorted(manifest.frame["patient"].astype(str).unique()))
        n = max(1, round(fraction * len(patients)))
        keep = set(np.random.default_rng(cfg.seed).choice(patients, size=n, replace=False).tolist())
    out = {}
    for s in SPLITS:
        frame = manifest.split(s)
        if keep is not None:
            frame = frame[frame["patient"].astype(str).isin(keep)]
        out[s] = (frame if limit is None else frame.head(limit)).reset_index(drop=True)
    return out


def check_labels(cfg: ExperimentConfig, manifest: Manifest) -> None:
    """Every label needs positives and negatives in the train split (a binary test split too).

    ``data.limit`` takes the first files of each split: on Kermany that is all
    NORMAL, which used to train a model that cannot predict Pneumonia and then
    end in a traceback in the report.  A multi-label or multi-class test split
    without a class only gets a warning (that label's AUC is undefined; small
    official test sets such as CheXpert's lack rare labels).
    """
    d, frames = cfg.data, _split_frames(cfg, manifest)
    for split in ("train", "test"):
        frame = frames[split]
        if split == "train":
            plan = apply_policy(manifest.targets(frame), manifest.labels, d.uncertain, d.blank, d.flip_p,
                                manifest.absent_mask(frame))
        else:
            plan = apply_policy(manifest.targets(frame), manifest.labels, "ignore", d.blank,
                                absent=manifest.absent_mask(frame))
        pos = ((plan.targets == 1) | plan.flip_mask).sum(axis=0)
        neg = ((plan.targets == 0) | plan.flip_mask).sum(axis=0)
        no_pos = [lab for lab, p in zip(manifest.labels, pos, strict=True) if not p]
        no_neg = [] if cfg.task == "multiclass" else [lab for lab, n in zip(manifest.labels, neg, strict=True) if not n]
        lacking = []
        if no_pos:
            lacking.append(f"no {'image of class' if cfg.task == 'multiclass' else 'positive'} {', '.join(no_pos)}")
        if no_neg:
            lacking.append(f"no negative {', '.join(no_neg)}")
        if not lacking:
            continue
        what = f"{d.root}: the {split} split ({len(frame)} images) has {'; '.join(lacking)}"
        if split == "test" and cfg.task != "binary":
            log.warning("%s: the AUC is undefined there (n/a in the report)", what)
            continue
        raise CxrlabError(f"{what}, so the model cannot be {'trained' if split == 'train' else 'tested'}; "
                          f"{_label_hint(cfg)}")


def _label_hint(cfg: ExperimentConfig) -> str:
    d = cfg.data
    if d.limit is not None:
        return (f"data.limit={d.limit} keeps the first {d.limit} images of each split in file order (a folder "
                "dataset lists one class first); use data.patient_fraction=0.1 (a random share of the patients, "
                "every split keeps its class mix) instead")
    if d.patient_fraction < 1:
        return (f"data.patient_fraction={d.patient_fraction} keeps too few patients; use a larger share (or "
                "another seed)")
    return "check the data, or leave the label out (data.labels=[...])"


def check_weights(cfg: ExperimentConfig, labels: list[str], overwrite: bool = False) -> dict[str, Any]:
    """Resolve and check ``model.pretrained`` before the run folder is made; what the run starts from.

    ``hub``: the weights must be in the local cache or the hub reachable now.
    A file (or a run folder: its ``checkpoints/best.safetensors``) is loaded
    into a throw-away model, so a file of another architecture stops here, in
    one line, not after the images were decoded.  Returns the record stored as
    ``summary.json["pretrained"]`` (``loaded N of M tensors from FILE``).
    """
    m = cfg.model
    if m.pretrained == "none":
        return {"source": "none", "text": "none (random initialisation)"}
    if m.pretrained == "hub":
        where = check_hub_weights(m.name, m.options)
        return {"source": "hub", "weights": where, "text": f"timm hub (ImageNet): {', '.join(where)}"}
    given = Path(m.pretrained).expanduser()
    file = given
    if given.is_dir():
        file = RunFolder(given).weights_file("best")
        if not file.is_file():
            raise CxrlabError(f"{given}: model.pretrained names a folder without {file.relative_to(given)} "
                              "(not a finished cxrlab run?)")
    own = (Path(cfg.runs_dir) / cfg.name).resolve()
    if overwrite and file.resolve().is_relative_to(own):
        raise CxrlabError(f"model.pretrained={m.pretrained}: the weights lie in this run's own folder, which "
                          "--overwrite deletes; copy them elsewhere or train under another name")
    with torch.random.fork_rng(devices=[]):  # a throw-away model must not shift the run's initialisation
        model = build_model(m.name, len(labels), in_chans=m.in_chans, dropout=m.dropout, **m.options)
        report = load_local_weights(model, file, strict=m.pretrained_strict)
    log.info("%s", report.text)
    if distributed.is_main():
        say(report.text)
        if report.share < MIN_SHARE:
            log.warning("only %.0f%% of the tensors outside the head came from %s (model.pretrained_strict="
                        "false): most of the model starts from random weights", 100 * report.share, file)
    return {**report.to_record(), "given": m.pretrained}


def _prepare(cfg: ExperimentConfig, manifest: Manifest, ids: list[str]) -> ImageCache:
    p = preprocess_of(cfg)
    key = cache_key(cfg.data.source, str(manifest.root), ids, p)
    return prepare_cache([manifest.root / i for i in ids], ids, p, Path(cfg.data.cache_dir).expanduser(), key,
                         workers=cfg.data.workers, bad_images=cfg.data.bad_images,
                         verify=cfg.data.verify_cache)


def _drop_unreadable(run: RunFolder, cache: ImageCache, frames: dict[str, pd.DataFrame]
                     ) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Rows of each split in the cache, without the images ``bad_images: skip`` left out (listed)."""
    offsets = np.cumsum([0] + [len(f) for f in frames.values()])
    rows = {s: np.arange(offsets[k], offsets[k + 1]) for k, s in enumerate(frames)}
    if not cache.failed:
        return frames, rows
    skipped = []
    for s, f in frames.items():
        keep = ~f["image"].isin(cache.failed).to_numpy()
        skipped += [{"image": i, "split": s, "reason": cache.failed[i]} for i in f["image"][~keep]]
        frames[s], rows[s] = f[keep].reset_index(drop=True), rows[s][keep]
        if len(frames[s]) == 0:
            raise CxrlabError(f"every image of the {s} split is unreadable")
    if distributed.is_main():
        run.write_skipped(pd.DataFrame(skipped))
    say(f"[yellow]skipped {len(skipped)} unreadable images[/yellow] (data.bad_images=skip); "
        f"listed in {run.skipped_file}")
    return frames, rows


def train_model(cfg: ExperimentConfig, data: RunData, run: RunFolder, resume: bool) -> torch.nn.Module:
    """Train (U-SelfTrained: a teacher first, which relabels the uncertain entries); load ``best``."""
    labels, train = data.labels, data.splits["train"]

    def new_model() -> torch.nn.Module:
        m = cfg.model
        model = build_model(m.name, len(labels), in_chans=m.in_chans, dropout=m.dropout,
                            pretrained="hub" if m.pretrained == "hub" else "none", **m.options)
        if data.pretrained.get("file"):  # checked and announced by check_weights
            load_local_weights(model, data.pretrained["file"], strict=m.pretrained_strict)
        return model

    plan = data.plans["train"]
    if "selftrained" in plan.policies.values() and plan.uncertain_mask.any():
        stage1 = RunFolder(run.path / "selftrained_stage1").create()
        teacher = new_model()
        fit(teacher, train, data.splits["val"], labels, cfg, stage1, resume=resume)
        stage1.load_weights(teacher, "best")
        soft = _predictor(cfg, teacher).probabilities(train.images)
        relabelled = relabel_uncertain(plan, soft)
        log.info("U-SelfTrained: %d uncertain entries relabelled by the stage-1 model",
                 int(np.isfinite(relabelled).sum() - np.isfinite(plan.targets).sum()))
        train = data.splits["train"] = ArraySplit(train.images, torch.from_numpy(relabelled), train.redraw,
                                                  train.pre)
    model = new_model()
    data.history = fit(model, train, data.splits["val"], labels, cfg, run, resume=resume)
    if distributed.is_main():
        run.load_weights(model, "best")
    return model


def _predictor(cfg: ExperimentConfig, model: torch.nn.Module) -> Predictor:
    device = resolve_device(cfg.train.device)
    model.to(device)
    return Predictor.for_model(model, cfg.task, cfg.model.in_chans, preprocess_of(cfg), device=device)


def finish_run(cfg: ExperimentConfig, run: RunFolder, model: torch.nn.Module, data: RunData,
               manifest: Manifest, tic: float) -> dict[str, Any]:
    """Test and validation predictions, OOD summary, evaluation, thresholds, localisation, figures, report."""
    labels, predictor = data.labels, _predictor(cfg, model)
    raw = {s: predictor.probabilities(data.splits[s].images, tta=cfg.evaluate.tta, calibrated=False)
           for s in ("test", "val")}
    targets = {s: data.splits[s].targets.numpy() for s in ("test", "val")}
    # the calibration is fitted on validation, stored in model.json, and applied by the predictor from now on
    cal = fit_calibration(cfg.evaluate.calibration, targets["val"], raw["val"], labels, cfg.task)
    record_calibration(run, cal)
    predictor.calibrate = calibrator(cal.to_dict() if cal else None)
    tables = {}
    for s in ("test", "val"):
        tables[s] = prediction_table(data.frames[s], targets[s], predictor.calibrated(raw[s]), labels,
                                     raw=raw[s] if cal else None)
        run.write_predictions(tables[s], s)
    fit_ood(run, predictor, data.splits["train"].images, data.splits["val"].images, seed=cfg.seed)
    evaluation = evaluation_of(tables["test"], labels, cfg.task, tables["val"], n_boot=cfg.evaluate.n_boot,
                               seed=cfg.seed, rules=cfg.evaluate.threshold_rule, prevalence=cfg.evaluate.prevalence,
                               calibration=calibration_names(cal))
    run.write_json(run.evaluation_file, evaluation.to_dict())
    record_thresholds(run, evaluation, cfg.task)
    y_true = data.splits["test"].targets.numpy()
    probs = tables["test"][prob_columns(labels)].to_numpy()
    history = data.history
    cases: list[Any] = []
    localization = None
    if cfg.explain.enabled and manifest.boxes is not None and len(manifest.boxes):
        found, cases = _localize(cfg, predictor, data, manifest)
        localization = fresh(Localization, found)
    # the headline AUCs are the evaluation's (computed once, with their CIs)
    summary = RunSummary.of(
        cfg.name, evaluation, best_epoch=max((h["epoch"] for h in history if h.get("best")), default=None),
        epochs_run=len(history), n_images={s: len(f) for s, f in data.frames.items()},
        data=split_summary(manifest, data.frames, cfg.data.limit, cfg.data.patient_fraction),  # patients, overlap
        device=device_record(cfg), pretrained=data.pretrained,
        skipped_images=len(run.read_skipped()) if run.skipped_file.is_file() else None,
        localization=localization, wall_seconds=time.perf_counter() - tic)
    write_run_figures(run, cfg, summary, history, y_true, probs, labels, cases, data.splits["test"].numpy(),
                      evaluation)
    run.write_json(run.summary_file, summary.to_dict())
    render_report(run)
    return summary.to_dict()


def record_thresholds(run: RunFolder, evaluation: Evaluation, task: str) -> None:
    """Store the validation-chosen thresholds, their rule and what it reached in model.json (predict and
    serve decide with them)."""
    if task == "multiclass":
        return
    operating = {lab: {"rule": r.operating_point.rule, "validation_value": r.operating_point.validation}
                 for lab, r in evaluation.per_label.items()
                 if r.operating_point is not None and r.operating_point.rule is not None}
    rules = sorted({v["rule"] for v in operating.values()}) or ["youden"]
    rule = f"{', '.join(rules)} on validation (fixed 0.5 where undefined)"
    run.write_model_record(run.read_model_record().with_thresholds(evaluation.thresholds, rule, operating))


def record_calibration(run: RunFolder, cal: Calibration | None) -> None:
    """Store the calibration fitted on validation in model.json (None: the model's own probabilities)."""
    run.write_model_record(run.read_model_record().with_calibration(cal.to_dict() if cal else None))


def calibration_names(cal: Calibration | None) -> tuple[str, str]:
    """(method, parameters in words) of a fitted calibration, for the evaluation's before/after record."""
    return ("none", "") if cal is None else (cal.method, cal.summary())


def _localize(cfg: ExperimentConfig, predictor: Predictor, data: RunData, manifest: Manifest) -> tuple:
    test_ids = data.frames["test"]["image"].tolist()
    boxed = sorted(set(manifest.boxes["image"]) & set(test_ids))
    ex = cfg.explain
    return localize(predictor, cam_layer(predictor.model), data.splits["test"].images, test_ids, manifest.boxes,
                    data.labels, geometries(manifest.root, boxed, preprocess_of(cfg)), threshold=ex.threshold,
                    min_iou=ex.iou, draws=ex.random_draws, seed=cfg.seed, max_cases=ex.max_images,
                    method=ex.method)


def prepare_dataset(cfg: ExperimentConfig) -> ImageCache:
    """``cxrlab prepare``: decode the config's images into the very cache training will read."""
    manifest = build_manifest(cfg)
    return _prepare(cfg, manifest, [i for f in _split_frames(cfg, manifest).values() for i in f["image"]])
