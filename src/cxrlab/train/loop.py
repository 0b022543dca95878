"""The training loop: epochs over in-memory uint8 batches, validation, checkpoints.

Selection and stopping follow seed 001: the best checkpoint is the one with
the highest validation macro AUC (accuracy for multi-class); the learning rate
drops by ``plateau_factor`` when the validation loss has not improved for more
than ``plateau_patience`` epochs (torch's ReduceLROnPlateau); training stops
after ``early_stop`` epochs without a better validation loss
(``early_stop_on: score`` uses the selection score instead).

Shuffling and augmentation of epoch ``e`` are drawn from a generator seeded by
``(seed, e)``, so a resumed run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlab.config import ExperimentConfig
from cxrlab.data.cache import RowView
from cxrlab.data.transforms import Augment, augment, to_float
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.metrics import macro, per_label_auc
from cxrlab.models import head_parameters
from cxrlab.progress import make_progress
from cxrlab.run import RunFolder
from cxrlab.train import distributed
from cxrlab.train.losses import activation, make_loss
from cxrlab.train.stopping import BestTracker


@dataclass
class ArraySplit:
    images: np.ndarray | RowView  # uint8 (N, S, S): an array, or rows of the memory-mapped cache
    targets: torch.Tensor  # float32 (N, L); NaN = ignore
    redraw: Callable[[np.random.Generator], np.ndarray] | None = None
    """Per-epoch targets (random-flip policy); ``None`` keeps ``targets``."""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and targets of rows ``idx`` (read in row order: sequential memmap access)."""
        rows = np.sort(idx.numpy())
        return torch.from_numpy(np.ascontiguousarray(self.images[rows])), targets[torch.from_numpy(rows)]

    def numpy(self) -> np.ndarray:
        return self.images.numpy() if isinstance(self.images, RowView) else np.asarray(self.images)

    def epoch_targets(self, epoch_seed: int) -> torch.Tensor:
        if self.redraw is None:
            return self.targets
        return torch.from_numpy(self.redraw(np.random.default_rng(epoch_seed)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, in_chans: int, device: torch.device,
                   batch_size: int = 64) -> torch.Tensor:
    """Logits (N, L) on the CPU for uint8 images (N, S, S) (array, memmap or tensor)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(_as_tensor(images[i:i + batch_size]).to(device), in_chans)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def predict(model: nn.Module, images: torch.Tensor, in_chans: int, device: torch.device,
            batch_size: int = 64, task: str = "multilabel", tta: bool = False) -> np.ndarray:
    """Probabilities (N, L): sigmoid per label, or softmax for a multi-class task.

    With ``tta``, the probabilities of the image and its horizontal mirror are averaged.
    """
    probs = activation(predict_logits(model, images, in_chans, device, batch_size), task)
    if tta:
        mirrored = _as_tensor(images).flip(-1)
        flipped = activation(predict_logits(model, mirrored, in_chans, device, batch_size), task)
        probs = (probs + flipped) / 2
    return probs.numpy()


def _optimizer(params: list[torch.nn.Parameter], cfg: ExperimentConfig, lr: float) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: ExperimentConfig, epochs: int) -> Any:
    t = cfg.train
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=t.plateau_factor,
                                                          patience=t.plateau_patience)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    return None


def selection_score(task: str, y: np.ndarray, probs: np.ndarray, labels: list[str]) -> tuple[str, float, dict]:
    """What picks the best checkpoint: val accuracy (multi-class) or val macro AUC."""
    aucs = per_label_auc(y, probs, labels)
    if task == "multiclass":
        return "val_accuracy", float(np.mean(y.argmax(1) == probs.argmax(1))), aucs
    return "val_macro_auc", macro(aucs), aucs


class Phase:
    """Two-phase fine-tuning (seed 003): frozen backbone + head lr, then everything at finetune lr."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig):
        self.model, self.cfg = model, cfg
        self.frozen_until = cfg.train.freeze_epochs

    def of(self, epoch: int) -> int:
        return 1 if epoch <= self.frozen_until else 2

    def setup(self, epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        t = self.cfg.train
        if self.frozen_until == 0:
            params = list(self.model.parameters())
            opt = _optimizer(params, self.cfg, t.lr)
            return opt, _scheduler(opt, self.cfg, t.epochs)
        head = {id(p) for p in head_parameters(self.model)}
        frozen = self.of(epoch) == 1
        for p in self.model.parameters():
            p.requires_grad_(not frozen or id(p) in head)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = t.head_lr if frozen else t.finetune_lr
        opt = _optimizer(params, self.cfg, lr)
        span = self.frozen_until if frozen else t.epochs - self.frozen_until
        return opt, _scheduler(opt, self.cfg, span)


def fit(model: nn.Module, train: ArraySplit, val: ArraySplit, labels: list[str],
        cfg: ExperimentConfig, run: RunFolder, resume: bool = False) -> list[dict[str, Any]]:
    """Train ``model``; write metrics and checkpoints into ``run``; return the history."""
    t = cfg.train
    device = distributed.setup() or resolve_device(t.device)
    rank, world_size = distributed.world()
    main = rank == 0
    cuda = device.type == "cuda"
    model.to(device)
    if t.channels_last == "on" or (t.channels_last == "auto" and cuda):
        model.to(memory_format=torch.channels_last)
    use_amp = t.amp == "bf16" or (t.amp == "auto" and cuda)
    phases = Phase(model, cfg)
    opt, sched = phases.setup(1)
    start, tracker, stopper = 1, BestTracker(t.early_stop), BestTracker(t.early_stop)
    if resume and (state := run.load_state()) is not None:
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
        start = state["epoch"] + 1
        tracker = BestTracker(t.early_stop, state["best_score"], state["best_epoch"])
        stopper = BestTracker(t.early_stop, state["stop_best"], state["stop_epoch"])
        run.truncate_metrics(state["epoch"])
    elif not resume:
        run.truncate_metrics(0)
    history = run.read_metrics()
    in_chans = cfg.model.in_chans
    loss_fn = make_loss(t.loss, cfg.task, train.targets.numpy(), t.focal_alpha, t.focal_gamma, t.label_smoothing)
    a = t.augment
    aug = (Augment(hflip=a.hflip, rotate_deg=a.rotate_deg, zoom=a.zoom, shift=a.shift, brightness=a.brightness,
                   contrast=a.contrast, crop_scale=a.crop_scale) if a.enabled else None)
    def wrap() -> nn.Module:
        m: nn.Module = model
        if world_size > 1:  # (re)built after freezing changes: DDP syncs the parameters that train
            from torch.nn.parallel import DistributedDataParallel

            m = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        return torch.compile(m) if t.compile else m

    step_model = wrap()
    n = len(train)
    steps = (-(-n // world_size) + t.batch_size - 1) // t.batch_size
    val_rows = np.arange(len(val))[rank::world_size]

    board = _tensorboard(run) if (t.tensorboard and main) else None
    with make_progress(disable=not main) as bar:
        for epoch in range(start, t.epochs + 1):
            if stopper.should_stop(epoch):
                break
            if epoch > 1 and phases.of(epoch) != phases.of(epoch - 1):
                opt, sched = phases.setup(epoch)  # phase 2: unfreeze, new optimiser at finetune_lr
                step_model = wrap()
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = distributed.shard(torch.randperm(n, generator=gen), t.batch_size)
            targets = train.epoch_targets(cfg.seed * 100_003 + epoch)
            step_model.train()
            task = bar.add_task(f"epoch {epoch}/{t.epochs}", total=steps, info="")
            tic, seen, loss_sum = time.perf_counter(), 0, 0.0
            opt.zero_grad(set_to_none=True)
            for s in range(steps):
                idx = order[s * t.batch_size:(s + 1) * t.batch_size]
                xb, yb = train.batch(idx, targets)
                x = to_float(xb.to(device, non_blocking=True), in_chans)
                if aug is not None:
                    x = augment(x, gen, aug)
                if device.type == "cuda" and model_is_channels_last(model):
                    x = x.contiguous(memory_format=torch.channels_last)
                y = yb.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = step_model(x)
                loss = loss_fn(logits.float(), y)
                (loss / t.accumulate).backward()
                if (s + 1) % t.accumulate == 0 or s + 1 == steps:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                seen += len(idx) * world_size
                loss_sum += loss.item() * len(idx) * world_size
                rate = seen / (time.perf_counter() - tic)
                bar.update(task, advance=1, info=f"loss {loss_sum / seen:.4f}  {rate:.0f} img/s")
            train_time = time.perf_counter() - tic

            local = predict_logits(model, val.images[val_rows], in_chans, device, batch_size=2 * t.batch_size)
            logits = torch.from_numpy(distributed.gather_rows(local.numpy(), val_rows, len(val)))
            probs = activation(logits, cfg.task).numpy()
            vt = val.targets.numpy()
            val_loss = float(loss_fn(logits, val.targets))
            metric, score, aucs = selection_score(cfg.task, vt, probs, labels)
            improved = tracker.update(epoch, score)
            if improved and main:
                run.save_weights(model, "best")
            stopper.update(epoch, -val_loss if t.early_stop_on == "loss" else score)
            lr = opt.param_groups[0]["lr"]
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(val_loss)
            elif sched is not None:
                sched.step()
            row = {"epoch": epoch, "phase": phases.of(epoch), "train_loss": loss_sum / max(seen, 1),
                   "val_loss": val_loss, "val_macro_auc": macro(aucs), "val_auc": aucs, metric: score,
                   "selection": metric, "lr": lr, "img_per_s": seen / max(train_time, 1e-9), "best": improved}
            history.append(row)
            if not main:
                continue
            row["world_size"] = world_size
            run.log_metrics(row)  # before the state: a crash in between replays this epoch
            if board is not None:
                for key in ("train_loss", "val_loss", "val_macro_auc", "lr", "img_per_s", metric):
                    board.add_scalar(key, row[key], epoch)
                for lab, v in aucs.items():
                    board.add_scalar(f"val_auc/{lab}", v, epoch)
                board.flush()
            run.save_weights(model, "last")
            run.save_state({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else None,
                            "torch_rng": torch.get_rng_state(), "best_score": tracker.best,
                            "best_epoch": tracker.best_epoch, "stop_best": stopper.best,
                            "stop_epoch": stopper.best_epoch})
            bar.update(task, info=f"loss {row['train_loss']:.4f}  {metric} {score:.4f}"
                                  f"{'  *best*' if improved else ''}")
    for p in model.parameters():
        p.requires_grad_(True)
    if board is not None:
        board.close()
    return history


def _tensorboard(run: RunFolder) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CxrlabError("train.tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(log_dir=str(run.path / "tensorboard"))


def model_is_channels_last(model: nn.Module) -> bool:
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last)
