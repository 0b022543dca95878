"""Ensembles of runs and study-level fusion (frontal + lateral views, Sinha & Agarwal 2025)."""

from __future__ import annotations

import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.tables import prob_columns


def ensemble_tables(tables: list[pd.DataFrame], labels: list[str], how: str = "mean") -> pd.DataFrame:
    """Combine prediction tables of several runs on the same images (mean or max per label)."""
    if how not in ("mean", "max"):
        raise CxrlabError(f"ensemble: unknown combination {how!r}; use mean or max")
    base = tables[0].set_index("image")
    for i, t in enumerate(tables[1:], start=2):
        if set(t["image"]) != set(base.index):
            raise CxrlabError(f"ensemble: run {i} was tested on different images than run 1")
    stacked = pd.concat([t.set_index("image").loc[base.index, prob_columns(labels)] for t in tables],
                        keys=range(len(tables)))
    combined = stacked.groupby(level=1, sort=False).agg(how).loc[base.index]
    out = base.drop(columns=prob_columns(labels)).join(combined)
    return out.reset_index()[tables[0].columns]


def fuse_by(table: pd.DataFrame, labels: list[str], key: str = "study", how: str = "max") -> pd.DataFrame:
    """One row per ``key`` (e.g. a CheXpert study: frontal + lateral images), probabilities combined.

    True labels must agree within a group (they are study-level in CheXpert).
    """
    if key not in table.columns:
        raise CxrlabError(f"fusion needs a {key!r} column in the predictions (e.g. source chexpert)")
    g = table.groupby(key, sort=True)
    truth = g[labels].agg(lambda s: s.dropna().iloc[0] if s.notna().any() else float("nan"))
    probs = g[prob_columns(labels)].agg(how)
    out = pd.concat([g["patient"].first(), truth, probs], axis=1).reset_index()
    return out.rename(columns={key: "image"}).assign(**{key: lambda d: d["image"]})
