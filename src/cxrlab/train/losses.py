"""Losses.  Targets may hold NaN for "ignore" (masked out of the loss).

=================  ===============================================================
name               what
=================  ===============================================================
``bce``            binary cross-entropy per label, NaN targets masked
``weighted_bce``   BCE with ``pos_weight = negatives / positives`` per label from the
                   training split (rare labels weigh more)
``focal``          focal loss (Lin et al. 2017), alpha 0.25, gamma 2 as in the fusion report
``ce``             cross-entropy for one-hot targets (multi-class), label smoothing optional
=================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.errors import CxrlabError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over the entries whose target is not NaN."""
    mask = ~torch.isnan(targets)
    if not mask.any():
        return logits.sum() * 0.0
    if pos_weight is None:
        return F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    pw = pos_weight.to(logits).expand_as(logits)[mask]
    return F.binary_cross_entropy_with_logits(logits[mask], targets[mask], pos_weight=pw)


def masked_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                 gamma: float = 2.0) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over non-NaN entries."""
    mask = ~torch.isnan(targets)
    if not mask.any():
        return logits.sum() * 0.0
    z, y = logits[mask], targets[mask]
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p = torch.sigmoid(z)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


def onehot_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for one-hot (or soft) targets, optionally label-smoothed."""
    if smoothing:
        targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
    return torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()


def pos_weight_from(targets: np.ndarray) -> torch.Tensor:
    """negatives / positives per label (NaN ignored; labels without positives get 1)."""
    pos = np.nansum(targets == 1, axis=0).astype(np.float64)
    neg = np.nansum(targets == 0, axis=0).astype(np.float64)
    return torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)


def make_loss(name: str, task: str, train_targets: np.ndarray | None = None, focal_alpha: float = 0.25,
              focal_gamma: float = 2.0, label_smoothing: float = 0.0) -> Loss:
    """The loss function by config name; ``ce`` is required (and default) for multi-class."""
    if task == "multiclass":
        if name not in ("ce", "bce"):  # bce is the config default: read it as "the task's default"
            raise CxrlabError(f"train.loss={name} does not fit a multi-class task; use ce")
        return lambda z, y: onehot_cross_entropy(z, y, label_smoothing)
    if name == "bce":
        return masked_bce
    if name == "weighted_bce":
        if train_targets is None:
            raise CxrlabError("weighted_bce needs the training targets")
        pw = pos_weight_from(train_targets)
        return lambda z, y: masked_bce(z, y, pw)
    if name == "focal":
        return lambda z, y: masked_focal(z, y, focal_alpha, focal_gamma)
    raise CxrlabError(f"train.loss={name} does not fit a {task} task; use bce, weighted_bce or focal")


def task_loss(task: str) -> Loss:
    """The default loss of a task: masked BCE (multi-label, binary) or cross-entropy (multi-class)."""
    return onehot_cross_entropy if task == "multiclass" else masked_bce
