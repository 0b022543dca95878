"""Monte-Carlo dropout (seed 003): dropout kept active at test time, N passes.

The mean over passes is the prediction; the standard deviation per label is
the uncertainty; entries with std above a threshold (seed 003: 0.1) are
flagged "uncertain", and the AUC is reported on the confident and the
uncertain entries separately.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlab.data.transforms import to_float
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.metrics import roc_auc
from cxrlab.train.losses import activation


def enable_dropout(model: nn.Module) -> int:
    """Eval mode everywhere except dropout layers (BatchNorm keeps its running stats).

    Returns the number of dropout layers with a non-zero rate.
    """
    model.eval()
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout1d | nn.AlphaDropout):
            m.train()
            n += m.p > 0
    return n


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, images: torch.Tensor, passes: int = 25, in_chans: int = 1,
                       task: str = "multilabel", batch_size: int = 64, seed: int = 0,
                       device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (N, L) of the probabilities over ``passes`` stochastic forward passes."""
    was_training = model.training
    if enable_dropout(model) == 0:
        model.train(was_training)
        raise CxrlabError("the model has no dropout layer: train it with model.dropout > 0 for MC dropout")
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        model.to(device)
        sums, sq = None, None
        for i in range(0, len(images), batch_size):
            x = to_float(images[i:i + batch_size].to(device), in_chans)
            runs = torch.stack([activation(model(x).float(), task).cpu() for _ in range(passes)])
            m, s = runs.mean(0), runs.std(0, unbiased=passes > 1)
            sums = m if sums is None else torch.cat([sums, m])
            sq = s if sq is None else torch.cat([sq, s])
    finally:
        torch.set_rng_state(gen_state)
        model.train(was_training)
    return sums.numpy(), sq.numpy()


def uncertainty_summary(y: np.ndarray, mean: np.ndarray, std: np.ndarray, labels: list[str],
                        threshold: float = 0.1) -> dict[str, Any]:
    """Per label: share flagged uncertain and AUC on confident vs uncertain entries."""
    out: dict[str, Any] = {"threshold": threshold, "per_label": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, lab in enumerate(labels):
            flag = std[:, j] > threshold
            out["per_label"][lab] = {
                "uncertain_fraction": float(flag.mean()),
                "mean_std": float(std[:, j].mean()),
                "auc_all": roc_auc(y[:, j], mean[:, j]),
                "auc_confident": roc_auc(y[~flag, j], mean[~flag, j]) if (~flag).sum() > 1 else float("nan"),
                "auc_uncertain": roc_auc(y[flag, j], mean[flag, j]) if flag.sum() > 1 else float("nan"),
            }
    out["uncertain_fraction"] = float((std > threshold).mean())
    return out
