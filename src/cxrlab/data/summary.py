"""Class distribution per split (Wollek et al. 2023, Table 1), prevalence, and patient overlap."""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrlab.data.manifest import SPLITS, Manifest


def summarize(m: Manifest, examples: int = 5) -> dict[str, Any]:
    """Counts per label and split: positives, uncertain, prevalence; images, patients, overlaps.

    Args:
        m: the manifest (its ``split`` column says which rows belong where).
        examples: shared patient ids listed per pair of splits (``overlap_examples``).

    Returns:
        ``splits[split]`` with ``images``, ``patients``, ``positive``, ``uncertain``,
        ``prevalence`` (positives / images) per label and ``no_finding``; ``patient_overlap``
        (patients in both of a pair of splits) with ``overlap_examples``; ``split_method``.
    """
    f = m.frame
    out: dict[str, Any] = {"root": str(m.root), "task": m.task, "labels": m.labels, "splits": {}}
    for s in SPLITS:
        part = f[f["split"] == s]
        y = part[m.labels].to_numpy(dtype=np.float32)
        out["splits"][s] = {
            "images": int(len(part)),
            "patients": int(part["patient"].nunique()),
            "positive": {lab: int(np.sum(y[:, i] == 1)) for i, lab in enumerate(m.labels)},
            "uncertain": {lab: int(np.sum(y[:, i] == -1)) for i, lab in enumerate(m.labels)},
            "prevalence": {lab: float(np.mean(y[:, i] == 1)) if len(y) else float("nan")
                           for i, lab in enumerate(m.labels)},
            "no_finding": int(np.sum(~(y == 1).any(axis=1))) if m.task == "multilabel" else None,
        }
    pats = {s: set(f.loc[f["split"] == s, "patient"]) for s in SPLITS}
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]]
    out["patient_overlap"] = {f"{a}-{b}": len(pats[a] & pats[b]) for a, b in pairs}
    out["overlap_examples"] = {f"{a}-{b}": sorted(map(str, pats[a] & pats[b]))[:examples] for a, b in pairs}
    out["split_method"] = m.split_method
    out["images"] = int(len(f))
    out["patients"] = int(f["patient"].nunique())
    return out
