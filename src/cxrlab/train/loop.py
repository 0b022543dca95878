"""The training loop: epochs over uint8 batches, validation, best-by-score selection.

Selection and stopping follow Wollek et al.: the best checkpoint is the one with
the highest validation macro AUC (accuracy for multi-class; the validation loss
when no label of the validation split has both classes, said in a warning);
the learning rate drops by ``plateau_factor`` when the validation loss has not
improved for more than ``plateau_patience`` epochs; training stops after
``early_stop`` epochs without a better validation loss (``early_stop_on:
score`` uses the selection score instead).

Shuffling and augmentation of epoch ``e`` are drawn from a generator seeded by
``(seed, e)``, so a resumed run replays exactly what an uninterrupted one does.
Checkpoints, the metrics log and TensorBoard are callbacks (:mod:`.callbacks`);
validation runs through the one inference path (:class:`cxrlab.inference.Predictor`).
Training batches and validation are normalised with the ``mean``/``std`` of the
splits' preprocessing record (:attr:`ArraySplit.pre`, the record ``model.json``
holds), so a model is trained on exactly the input that predict feeds it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlab.config import ExperimentConfig
from cxrlab.data.preprocess import Preprocess
from cxrlab.data.transforms import Augment, augment, to_float
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.metrics import macro, per_label_auc
from cxrlab.inference import Predictor
from cxrlab.models import activation
from cxrlab.progress import make_progress, say
from cxrlab.run import RunFolder
from cxrlab.train import distributed
from cxrlab.train.callbacks import Callback, Checkpoints, MetricsLog, TensorBoard
from cxrlab.train.data import ArraySplit
from cxrlab.train.losses import make_loss
from cxrlab.train.optim import Phase, step_scheduler
from cxrlab.train.stopping import BestTracker

log = logging.getLogger(__name__)

__all__ = ["ArraySplit", "fit", "predict", "resolve_device", "selection_metric", "selection_score"]


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:N]`` | ``mps``, checked against this machine (one-line error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CxrlabError(f"train.device={name!r}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CxrlabError(f"train.device={name}: no CUDA GPU is available on this machine (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CxrlabError(f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CxrlabError(f"train.device={name}: MPS is not available on this machine")
    return device


def predict(model: nn.Module, images: Any, in_chans: int, device: torch.device, batch_size: int = 64,
            task: str = "multilabel", tta: bool = False, pre: Preprocess | None = None) -> np.ndarray:
    """Probabilities (N, L) of uint8 images (the inference path; ``pre`` normalises, default record if None)."""
    return Predictor.for_model(model, task, in_chans, pre, device=device,
                               batch_size=batch_size).probabilities(images, tta)


def selection_metric(task: str, val_targets: np.ndarray) -> str:
    """What picks the best checkpoint: accuracy (multi-class), macro AUC, or the validation loss
    when the AUC is undefined for every label (no label with both classes in validation)."""
    if task == "multiclass":
        return "val_accuracy"
    y = np.asarray(val_targets, dtype=float)
    defined = [bool(np.nanmin(y[:, j]) == 0 and np.nanmax(y[:, j]) == 1) for j in range(y.shape[1])
               if np.isfinite(y[:, j]).any()]
    if not any(defined):
        log.warning("validation AUC undefined for every label: selecting by validation loss")
        say("[yellow]warning:[/yellow] no label has both positives and negatives in the validation split, so "
            "the validation AUC is undefined; the best checkpoint is chosen by the lowest validation loss")
        return "val_loss"
    return "val_macro_auc"


def selection_score(task: str, y: np.ndarray, probs: np.ndarray, labels: list[str],
                    metric: str = "val_macro_auc", val_loss: float = float("nan")) -> tuple[str, float, dict]:
    """(metric, score, per-label AUCs); a higher score is better (the loss enters negated)."""
    aucs = per_label_auc(y, probs, labels)
    if task == "multiclass":
        return "val_accuracy", float(np.mean(y.argmax(1) == probs.argmax(1))), aucs
    if metric == "val_loss":
        return "val_loss", -val_loss, aucs
    return "val_macro_auc", macro(aucs), aucs


@dataclass
class _Trackers:
    best: BestTracker
    stop: BestTracker
    start: int = 1


def _restore(run: RunFolder, model: nn.Module, phases: Phase, t: Any, opt: Any, sched: Any) -> tuple:
    """Load ``last_state.pt``: model, optimiser, scheduler, RNG, trackers; the epoch to start at."""
    state = run.load_state()
    if state is None:  # killed before the first epoch's state: start over, dropping a logged epoch
        run.truncate_metrics(0)
        return opt, sched, _Trackers(BestTracker(t.early_stop), BestTracker(t.early_stop))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise CxrlabError(f"{run.checkpoints / 'last_state.pt'}: the saved state does not match this model "
                          "(architecture or labels changed?); start a new run instead of --resume") from None
    opt, sched = phases.setup(state["epoch"] + 1)
    if phases.of(state["epoch"]) == phases.of(state["epoch"] + 1):
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    run.truncate_metrics(state["epoch"])
    return opt, sched, _Trackers(BestTracker(t.early_stop, state["best_score"], state["best_epoch"]),
                                 BestTracker(t.early_stop, state["stop_best"], state["stop_epoch"]),
                                 start=state["epoch"] + 1)


def _augmenter(cfg: ExperimentConfig) -> Augment | None:
    a = cfg.train.augment
    return (Augment(hflip=a.hflip, rotate_deg=a.rotate_deg, zoom=a.zoom, shift=a.shift, brightness=a.brightness,
                    contrast=a.contrast, crop_scale=a.crop_scale) if a.enabled else None)


def _callbacks(run: RunFolder, model: nn.Module, cfg: ExperimentConfig, main: bool) -> list[Callback]:
    if not main:
        return []
    return [MetricsLog(run), *([TensorBoard(run)] if cfg.train.tensorboard else []), Checkpoints(run, model)]


def fit(model: nn.Module, train: ArraySplit, val: ArraySplit, labels: list[str],
        cfg: ExperimentConfig, run: RunFolder, resume: bool = False) -> list[dict[str, Any]]:
    """Train ``model``; write metrics and checkpoints into ``run``; return the history.

    Both splits are normalised by their preprocessing record (``train.pre``, ``val.pre``: the
    record written to ``model.json``); records that disagree on ``mean``/``std`` are refused.
    """
    t = cfg.train
    if (train.pre.mean, train.pre.std) != (val.pre.mean, val.pre.std):
        raise CxrlabError(f"training and validation images are normalised differently (mean/std "
                          f"{train.pre.mean}/{train.pre.std} vs {val.pre.mean}/{val.pre.std})")
    device = distributed.setup() or resolve_device(t.device)
    rank, world_size = distributed.world()
    main = rank == 0
    model.to(device)
    if t.channels_last == "on" or (t.channels_last == "auto" and device.type == "cuda"):
        model.to(memory_format=torch.channels_last)
    phases = Phase(model, cfg)
    opt, sched = phases.setup(1)
    trackers = _Trackers(BestTracker(t.early_stop), BestTracker(t.early_stop))
    if resume:
        opt, sched, trackers = _restore(run, model, phases, t, opt, sched)
        if main and trackers.start > 1:
            say(f"resuming at epoch {trackers.start} of {t.epochs}")
    else:
        run.truncate_metrics(0)
    history = run.read_metrics()
    metric = selection_metric(cfg.task, val.targets.numpy())
    loss_fn = make_loss(t.loss, cfg.task, train.targets.numpy(), t.focal_alpha, t.focal_gamma, t.label_smoothing)
    step = _Stepper(model, cfg, device, world_size, loss_fn, _augmenter(cfg))
    val_rows = np.arange(len(val))[rank::world_size]
    validator = Predictor.for_model(model, cfg.task, cfg.model.in_chans, val.pre, device=device,
                                    batch_size=2 * t.batch_size)
    callbacks = _callbacks(run, model, cfg, main)
    checkpoints = next((c for c in callbacks if isinstance(c, Checkpoints)), None)
    with make_progress(disable=not main) as bar:
        for epoch in range(trackers.start, t.epochs + 1):
            if trackers.stop.should_stop(epoch):
                break
            if phases.changes_at(epoch):
                opt, sched = phases.setup(epoch)  # phase 2: unfreeze, new optimiser at finetune_lr
                step.rewrap()
            task = bar.add_task(f"epoch {epoch}/{t.epochs}", total=step.steps(len(train)), info="")
            train_loss, seen, train_time = step.epoch(train, opt, epoch, lambda info, k=task: bar.update(
                k, advance=1, info=info))

            local = validator.logits(val.images[val_rows])
            logits = torch.from_numpy(distributed.gather_rows(local.numpy(), val_rows, len(val)))
            val_loss = float(loss_fn(logits, val.targets))
            name, score, aucs = selection_score(cfg.task, val.targets.numpy(), activation(logits, cfg.task).numpy(),
                                                labels, metric, val_loss)
            improved = trackers.best.update(epoch, score)
            if improved and checkpoints is not None:
                checkpoints.save_best()
            trackers.stop.update(epoch, -val_loss if t.early_stop_on == "loss" else score)
            lr = opt.param_groups[0]["lr"]
            step_scheduler(sched, val_loss)
            row = {"epoch": epoch, "phase": phases.of(epoch), "train_loss": train_loss,
                   "val_loss": val_loss, "val_macro_auc": macro(aucs), "val_auc": aucs,
                   name: val_loss if name == "val_loss" else score, "selection": name, "lr": lr,
                   "img_per_s": seen / max(train_time, 1e-9), "best": improved}
            history.append(row)
            if not main:
                continue
            row["world_size"] = world_size

            def state(epoch: int = epoch, opt: Any = opt, sched: Any = sched) -> dict[str, Any]:
                return {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched is not None else None,
                        "torch_rng": torch.get_rng_state(), "best_score": trackers.best.best,
                        "best_epoch": trackers.best.best_epoch, "stop_best": trackers.stop.best,
                        "stop_epoch": trackers.stop.best_epoch}

            for cb in callbacks:
                cb.on_epoch_end(epoch, row, state)
            shown = f"{name} {row[name]:.4f}"
            bar.update(task, info=f"loss {train_loss:.4f}  {shown}{'  *best*' if improved else ''}")
    phases.release()
    for cb in callbacks:
        cb.close()
    return history


class _Stepper:
    """One epoch of optimisation steps (shuffle, augment, bf16 autocast, accumulation, DDP/compile wrap)."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig, device: torch.device, world_size: int,
                 loss_fn: Any, aug: Augment | None):
        self.model, self.cfg, self.device, self.world_size = model, cfg, device, world_size
        self.loss_fn, self.aug = loss_fn, aug
        t = cfg.train
        self.use_amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
        self.rewrap()

    def rewrap(self) -> None:
        """(Re)build the stepped module; after freezing changes DDP must see the trainable parameters."""
        m: nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            m = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                        else None)
        self.wrapped = torch.compile(m) if self.cfg.train.compile else m

    def steps(self, n: int) -> int:
        bs = self.cfg.train.batch_size
        return (-(-n // self.world_size) + bs - 1) // bs

    def epoch(self, train: ArraySplit, opt: torch.optim.Optimizer, epoch: int,
              report: Any) -> tuple[float, int, float]:
        """Train one epoch; return (mean loss, images seen, seconds)."""
        t, seed = self.cfg.train, self.cfg.seed
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = distributed.shard(torch.randperm(len(train), generator=gen), t.batch_size)
        targets = train.epoch_targets(seed * 100_003 + epoch)
        channels_last = self.device.type == "cuda" and _is_channels_last(self.model)
        self.wrapped.train()
        tic, seen, loss_sum = time.perf_counter(), 0, 0.0
        steps = self.steps(len(train))
        opt.zero_grad(set_to_none=True)
        for s in range(steps):
            idx = order[s * t.batch_size:(s + 1) * t.batch_size]
            xb, yb = train.batch(idx, targets)
            x = to_float(xb.to(self.device, non_blocking=True), self.cfg.model.in_chans, train.pre.mean,
                         train.pre.std)
            if self.aug is not None:
                x = augment(x, gen, self.aug)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                logits = self.wrapped(x)
            loss = self.loss_fn(logits.float(), yb.to(self.device))
            (loss / t.accumulate).backward()
            if (s + 1) % t.accumulate == 0 or s + 1 == steps:
                opt.step()
                opt.zero_grad(set_to_none=True)
            seen += len(idx) * self.world_size
            loss_sum += loss.item() * len(idx) * self.world_size
            report(f"loss {loss_sum / seen:.4f}  {seen / (time.perf_counter() - tic):.0f} img/s")
        return loss_sum / max(seen, 1), seen, time.perf_counter() - tic


def _is_channels_last(model: nn.Module) -> bool:
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last)
