"""Class distribution per split (seed 001's Table 1) and patient overlap."""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrlab.data.manifest import SPLITS, Manifest


def summarize(m: Manifest) -> dict[str, Any]:
    """Counts per label and split: positives, uncertain; images, patients, overlaps."""
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
            "no_finding": int(np.sum(~(y == 1).any(axis=1))) if m.task == "multilabel" else None,
        }
    pats = {s: set(f.loc[f["split"] == s, "patient"]) for s in SPLITS}
    out["patient_overlap"] = {f"{a}-{b}": len(pats[a] & pats[b])
                              for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
    out["images"] = int(len(f))
    out["patients"] = int(f["patient"].nunique())
    return out
