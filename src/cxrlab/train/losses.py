"""Losses.  Targets may hold NaN for "ignore" (masked out of the loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the entries whose target is not NaN."""
    mask = ~torch.isnan(targets)
    if not mask.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], targets[mask])


def onehot_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for one-hot (or soft) targets (multi-class task)."""
    return torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()


def task_loss(task: str):
    """The default loss of a task: masked BCE (multi-label, binary) or cross-entropy (multi-class)."""
    return onehot_cross_entropy if task == "multiclass" else masked_bce


def activation(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Logits -> probabilities: softmax for multi-class, sigmoid otherwise."""
    return torch.softmax(logits, dim=1) if task == "multiclass" else torch.sigmoid(logits)
