"""The training loop: epochs over in-memory uint8 batches, validation, checkpoints.

Selection and stopping follow seed 001: the best checkpoint is the one with
the highest validation macro AUC; the learning rate drops by ``plateau_factor``
when the validation loss has not improved for ``plateau_patience`` epochs;
training stops after ``early_stop`` epochs without a better AUC.

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
from cxrlab.evaluate.metrics import macro, per_label_auc
from cxrlab.progress import make_progress
from cxrlab.run import RunFolder
from cxrlab.train.losses import activation, task_loss


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


def _optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: ExperimentConfig) -> Any:
    t = cfg.train
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=t.plateau_factor,
                                                          patience=t.plateau_patience)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    return None


def fit(model: nn.Module, train: ArraySplit, val: ArraySplit, labels: list[str],
        cfg: ExperimentConfig, run: RunFolder, resume: bool = False) -> list[dict[str, Any]]:
    """Train ``model``; write metrics and checkpoints into ``run``; return the history."""
    t = cfg.train
    device = resolve_device(t.device)
    model.to(device)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg)
    start, best_auc, best_epoch = 1, -np.inf, 0
    if resume and (state := run.load_state()) is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start, best_auc, best_epoch = state["epoch"] + 1, state["best_auc"], state["best_epoch"]
        run.truncate_metrics(state["epoch"])
    elif not resume:
        run.truncate_metrics(0)
    history = run.read_metrics()
    in_chans = cfg.model.in_chans
    loss_fn = task_loss(cfg.task)
    a = t.augment
    aug = (Augment(hflip=a.hflip, rotate_deg=a.rotate_deg, zoom=a.zoom, shift=a.shift, brightness=a.brightness,
                   contrast=a.contrast, crop_scale=a.crop_scale) if a.enabled else None)
    n = len(train)
    steps = (n + t.batch_size - 1) // t.batch_size

    with make_progress() as bar:
        for epoch in range(start, t.epochs + 1):
            if epoch - best_epoch > t.early_stop and best_epoch > 0:
                break
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen)
            targets = train.epoch_targets(cfg.seed * 100_003 + epoch)
            model.train()
            task = bar.add_task(f"epoch {epoch}/{t.epochs}", total=steps, info="")
            tic, seen, loss_sum = time.perf_counter(), 0, 0.0
            for s in range(steps):
                idx = order[s * t.batch_size:(s + 1) * t.batch_size]
                xb, yb = train.batch(idx, targets)
                x = to_float(xb.to(device, non_blocking=True), in_chans)
                if aug is not None:
                    x = augment(x, gen, aug)
                y = yb.to(device)
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
                rate = seen / (time.perf_counter() - tic)
                bar.update(task, advance=1, info=f"loss {loss_sum / seen:.4f}  {rate:.0f} img/s")
            train_time = time.perf_counter() - tic

            logits = predict_logits(model, val.images, in_chans, device, batch_size=2 * t.batch_size)
            probs = activation(logits, cfg.task).numpy()
            vt = val.targets.numpy()
            val_loss = float(loss_fn(logits, val.targets))
            aucs = per_label_auc(vt, probs, labels)
            val_auc = macro(aucs)
            improved = val_auc > best_auc
            if improved:
                best_auc, best_epoch = val_auc, epoch
                run.save_weights(model, "best")
            lr = opt.param_groups[0]["lr"]
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(val_loss)
            elif sched is not None:
                sched.step()
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss,
                   "val_macro_auc": val_auc, "val_auc": aucs, "lr": lr,
                   "img_per_s": seen / max(train_time, 1e-9), "best": improved}
            run.log_metrics(row)  # before the state: a crash in between replays this epoch
            run.save_weights(model, "last")
            run.save_state({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else None,
                            "torch_rng": torch.get_rng_state(), "best_auc": best_auc,
                            "best_epoch": best_epoch})
            history.append(row)
            bar.update(task, info=f"loss {row['train_loss']:.4f}  val AUC {val_auc:.4f}"
                                  f"{'  *best*' if improved else ''}")
    return history
