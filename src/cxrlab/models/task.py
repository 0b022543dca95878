"""What a model's outputs mean: the activation that turns logits into probabilities, by task."""

from __future__ import annotations

import torch

TASKS = ("multilabel", "binary", "multiclass")


def activation(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Logits -> probabilities: softmax over classes for multi-class, a sigmoid per label otherwise."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return torch.softmax(logits, dim=1) if task == "multiclass" else torch.sigmoid(logits)
