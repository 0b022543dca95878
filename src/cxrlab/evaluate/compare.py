"""Compare runs evaluated on the same test images: DeLong per label, paired bootstrap of macro AUC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.stats import delong_test, holm, paired_bootstrap_macro


def read_run_predictions(run: str | Path, split: str = "test") -> tuple[pd.DataFrame, list[str], str]:
    """A run's prediction table, labels and task."""
    run = Path(run)
    info_path = run / "model.json"
    name = "predictions.csv" if split == "test" else f"predictions_{split}.csv"
    if not info_path.is_file() or not (run / name).is_file():
        raise CxrlabError(f"{run}: not a finished cxrlab run (model.json or {name} missing)")
    info = json.loads(info_path.read_text())
    pred = pd.read_csv(run / name)
    return pred, info["labels"], info["task"]


def compare_runs(run_a: str | Path, run_b: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """DeLong test per shared label (Holm-adjusted too) and the paired macro-AUC bootstrap (a - b)."""
    pa, la, _ = read_run_predictions(run_a)
    pb, lb, _ = read_run_predictions(run_b)
    labels = [lab for lab in la if lab in lb]
    if not labels:
        raise CxrlabError(f"{run_a} and {run_b} share no labels")
    if set(pa["image"]) != set(pb["image"]):
        raise CxrlabError(f"{run_a} and {run_b} were tested on different images "
                          f"({len(set(pa['image']) ^ set(pb['image']))} differ); paired tests need the same set")
    pb = pb.set_index("image").loc[pa["image"]].reset_index()
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
