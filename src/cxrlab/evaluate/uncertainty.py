"""Monte-Carlo dropout summaries: dropout kept active at test time, N passes.

The passes themselves run on the one inference path
(:meth:`cxrlab.inference.Predictor.mc_dropout`).  The mean over passes is
the prediction; the standard deviation per label is the uncertainty; entries
with std above a threshold (0.1 in the project report "Chest X-Ray Image
Classification using Deep Learning approach") are flagged "uncertain", and
the AUC is reported on the confident and the uncertain entries separately.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cxrlab.evaluate.metrics import roc_auc


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
