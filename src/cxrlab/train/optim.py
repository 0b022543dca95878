"""Optimiser, learning-rate schedule and two-phase fine-tuning (frozen backbone, then everything)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cxrlab.config import ExperimentConfig
from cxrlab.models import head_parameters


def make_optimizer(params: list[nn.Parameter], cfg: ExperimentConfig, lr: float) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: ExperimentConfig, epochs: int) -> Any:
    t = cfg.train
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=t.plateau_factor,
                                                          patience=t.plateau_patience)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    return None


def step_scheduler(sched: Any, val_loss: float) -> None:
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(val_loss)
    elif sched is not None:
        sched.step()


class Phase:
    """Two-phase fine-tuning: frozen backbone + head at ``head_lr``, then everything at ``finetune_lr``."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig):
        self.model, self.cfg = model, cfg
        self.frozen_until = cfg.train.freeze_epochs

    def of(self, epoch: int) -> int:
        return 1 if epoch <= self.frozen_until else 2

    def changes_at(self, epoch: int) -> bool:
        return epoch > 1 and self.of(epoch) != self.of(epoch - 1)

    def setup(self, epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        """Freeze/unfreeze for ``epoch`` and return a fresh optimiser and scheduler."""
        t = self.cfg.train
        if self.frozen_until == 0:
            opt = make_optimizer(list(self.model.parameters()), self.cfg, t.lr)
            return opt, make_scheduler(opt, self.cfg, t.epochs)
        head = {id(p) for p in head_parameters(self.model)}
        frozen = self.of(epoch) == 1
        for p in self.model.parameters():
            p.requires_grad_(not frozen or id(p) in head)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = make_optimizer(params, self.cfg, t.head_lr if frozen else t.finetune_lr)
        span = self.frozen_until if frozen else t.epochs - self.frozen_until
        return opt, make_scheduler(opt, self.cfg, span)

    def release(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(True)
