"""Compare two models' predictions on the same test images: DeLong per label, paired bootstrap of macro AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.stats import delong_test, holm, mcnemar, paired_bootstrap_macro


def compare_tables(pa: pd.DataFrame, pb: pd.DataFrame, la: list[str], lb: list[str], run_a: str = "A",
                   run_b: str = "B", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """DeLong test per shared label (Holm-adjusted too) and the paired macro-AUC bootstrap (a - b).

    Args:
        pa, pb: prediction tables (the predictions schema) of two models on the same images.
        la, lb: their labels; run_a, run_b: names used in messages and the result.
    """
    labels = [lab for lab in la if lab in lb]
    if not labels:
        raise CxrlabError(f"{run_a} and {run_b} share no labels")
    pb = _paired(pa, pb, run_a, run_b)
    ya, sa, groups = split_prediction_table(pa, labels)
    yb, sb, _ = split_prediction_table(pb, labels)
    if not np.array_equal(np.nan_to_num(ya, nan=-9), np.nan_to_num(yb, nan=-9)):
        raise CxrlabError(f"{run_a} and {run_b} disagree on the true labels of the same images")
    per = {lab: delong_test(ya[:, j], sa[:, j], sb[:, j]) for j, lab in enumerate(labels)}
    adjusted = holm([per[lab]["p"] for lab in labels])
    for lab, adj in zip(labels, adjusted, strict=True):
        per[lab]["p_holm"] = adj
    return {
        "run_a": str(run_a), "run_b": str(run_b), "labels": labels, "n": int(len(pa)),
        "per_label": per,
        "macro_auc_difference": paired_bootstrap_macro(ya, sa, sb, n_boot=n_boot, seed=seed, groups=groups),
        "note": ("DeLong p-values are per label; with several labels use p_holm (Holm-Bonferroni) "
                 "to control the family-wise error rate."),
    }


def _paired(pa: pd.DataFrame, pb: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """``pb``'s rows in ``pa``'s image order; both must hold the same images."""
    if set(pa["image"]) != set(pb["image"]):
        raise CxrlabError(f"{run_a} and {run_b} were tested on different images "
                          f"({len(set(pa['image']) ^ set(pb['image']))} differ); paired tests need the same set")
    return pb.set_index("image").loc[pa["image"]].reset_index()


def compare_decisions(pa: pd.DataFrame, pb: pd.DataFrame, labels: list[str], task: str,
                      threshold_a: float | None = None, threshold_b: float | None = None,
                      run_a: str = "A", run_b: str = "B") -> dict[str, Any]:
    """McNemar's test of two models' accuracy on the same images (binary or multi-class tasks).

    Multi-class decisions are the arg-max class; binary decisions are ``p >= threshold``
    with each model's own threshold (chosen on its validation split).
    """
    if task not in ("binary", "multiclass"):
        raise CxrlabError(f"accuracy comparison needs a binary or multi-class task, not {task}")
    pb = _paired(pa, pb, run_a, run_b)
    ya, sa, _ = split_prediction_table(pa, labels)
    _, sb, _ = split_prediction_table(pb, labels)
    if task == "multiclass":
        truth = ya.argmax(1)
        right_a, right_b = sa.argmax(1) == truth, sb.argmax(1) == truth
    else:
        if threshold_a is None or threshold_b is None:
            raise CxrlabError("paired accuracy test of binary models needs both models' thresholds")
        keep = ~np.isnan(ya[:, 0])
        truth = ya[keep, 0] == 1
        right_a, right_b = (sa[keep, 0] >= threshold_a) == truth, (sb[keep, 0] >= threshold_b) == truth
    return {**mcnemar(right_a, right_b), "test": "McNemar (exact)",
            **({"threshold_a": threshold_a, "threshold_b": threshold_b} if task == "binary" else {})}
