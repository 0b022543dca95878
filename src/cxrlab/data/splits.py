"""Patient-level splitting helpers.

A patient never appears in two splits.  The assignment depends only on the
seed and the patient id, so adding images of new patients does not move old
ones.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def _unit_hash(values: pd.Series, seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per value (stable across processes and versions)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values.astype(str)):
        h = hashlib.blake2b(f"{seed}:{v}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") / 2**64
    return out


def carve_by_patient(patients: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask selecting about ``fraction`` of the *patients* (all their images)."""
    uniq = pd.Series(patients.unique())
    chosen = set(uniq[_unit_hash(uniq, seed) < fraction])
    if not chosen and len(uniq) > 1:  # tiny data: still hold out one patient
        chosen = {uniq.iloc[int(np.argmin(_unit_hash(uniq, seed)))]}
    return patients.isin(chosen).to_numpy()
