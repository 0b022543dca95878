"""Across sites: each model scored on each site (a matrix of AUCs) and own-site vs other-site tests.

A cross-site study trains one model per site (and, with three or more, one per site left out)
and scores every model on every site's test split.  Read down a column: the same images, scored
by the model trained there (its *own* site) and by models trained elsewhere; the drop is what a
hospital would see if it took a model from another (Zech et al. 2018; Cohen et al. 2020).  Since
the images are the same, the own-vs-other difference is tested paired: DeLong per label
(Holm-adjusted) and a paired patient bootstrap of the macro AUC
(:func:`~cxrlab.evaluate.compare.compare_tables`).

Leaves only: prediction tables in, dicts out (the record is
:class:`~cxrlab.evaluate.records.TransferResult`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxrlab.evaluate.calibration import has_both
from cxrlab.evaluate.compare import compare_tables
from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.shift import auc_with_ci, macro_with_ci


def evaluable_labels(table: pd.DataFrame, labels: list[str]) -> list[str]:
    """The labels a site can score: its targets hold both classes (a label the site lacks is NaN throughout)."""
    return [lab for lab in labels if lab in table.columns and has_both(table[lab].to_numpy(dtype=float))]


def site_scores(table: pd.DataFrame, labels: list[str], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One model on one site's scored images: per-label AUC and the macro AUC over the site's evaluable labels,
    each with a patient-bootstrap 95% CI."""
    scored = evaluable_labels(table, labels)
    y, p, groups = split_prediction_table(table, scored)
    per = {lab: auc_with_ci(y[:, j], p[:, j], groups, n_boot, seed + j) for j, lab in enumerate(scored)}
    return {"n_images": int(len(table)),
            "n_patients": int(len(np.unique(groups))) if groups is not None else int(len(table)),
            "labels": scored, "per_label": per, "macro": macro_with_ci(y, p, groups, n_boot, seed)}


def own_vs_other(own: pd.DataFrame, other: pd.DataFrame, labels: list[str], own_name: str, other_name: str,
                 n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The own-site model minus a model trained elsewhere, on the images both scored (paired).

    Returns the :func:`compare_tables` dict (``run_a`` = own, ``run_b`` = other; DeLong per label with
    ``p_holm``, ``macro_auc_difference`` with its paired-bootstrap CI) over the labels the site can score,
    with ``n`` the paired images and ``unpaired`` the images only one of them scored (copies of a
    model's training images left out of its scoring).
    """
    shared = sorted(set(own["image"]) & set(other["image"]))
    unpaired = len(set(own["image"]) ^ set(other["image"]))
    a = own[own["image"].isin(shared)].reset_index(drop=True)
    b = other[other["image"].isin(shared)].reset_index(drop=True)
    scored = evaluable_labels(a, labels)
    out = compare_tables(a, b, scored, scored, own_name, other_name, n_boot=n_boot, seed=seed)
    return {**out, "unpaired": unpaired, "n_boot": n_boot}
