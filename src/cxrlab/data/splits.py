"""Patient-level splits: official where the dataset has one, else iterative stratification.

A split cxrlab makes never puts a patient in two splits; an official split can
(Kermany's train and test folders share patients: :func:`shared_patients` reads
the overlap a run recorded, and the ``kermany`` source's ``resplit: patient``
option replaces its split by one made here).  Multi-label stratification uses the
``iterative-stratification`` package (Sechidis et al. 2011; the project
report "Chest X-Ray Image Classification using Deep Learning approach" uses it
for a 70/10/20 split by patient): each patient is one sample whose label
vector is the union of its images' positive labels.

Splits can be saved to and reused from a JSON file, which carries a hash of
its content and the hash of the image ids it was made for; a file that no
longer matches the data is an error, never silently re-made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.runio import atomic_write_json

SPLITS = ("train", "val", "test")


def _unit_hash(values: pd.Series, seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per value (stable across processes and versions)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values.astype(str)):
        h = hashlib.blake2b(f"{seed}:{v}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") / 2**64
    return out


def _patient_matrix(patients: pd.Series, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique patients and their label union (positives only), shape (P, L)."""
    pos = pd.DataFrame(np.nan_to_num(y, nan=0.0) == 1, index=patients.to_numpy())
    agg = pos.groupby(level=0, sort=True).max()
    return agg.index.to_numpy(), agg.to_numpy(dtype=np.int64)


def _stratified_pick(py: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over patients: about ``fraction`` of them, label-stratified."""
    n = len(py)
    if n < 2 or fraction <= 0:
        return np.zeros(n, bool)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    if py.shape[1] == 0 or py.sum() == 0:
        order = np.random.default_rng(seed).permutation(n)
        mask = np.zeros(n, bool)
        mask[order[:k]] = True
        return mask
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if py.shape[1] == 1:  # one label (binary): stratify on positive vs negative
        py = np.hstack([py, 1 - py])

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=k, random_state=seed)
    _, picked = next(splitter.split(np.zeros((n, 1)), py))
    mask = np.zeros(n, bool)
    mask[picked] = True
    return mask


def stratified_patient_split(patients: pd.Series, y: np.ndarray, fractions: dict[str, float],
                             seed: int = 0, only: np.ndarray | None = None) -> np.ndarray:
    """Assign each image to train/val/test by patient, stratified on the labels.

    Args:
        patients: patient id per image.
        y: labels (N, L); positives are 1 (uncertain/blank count as not positive).
        fractions: share of *patients* per split, e.g. ``{"train": .7, "val": .1, "test": .2}``;
            splits absent from the dict get nothing.
        seed: random state.
        only: optional boolean mask of the images to split; others get ``""``.

    Returns:
        Array of split names per image.
    """
    total = sum(fractions.values())
    if total <= 0:
        raise CxrlabError("split fractions must sum to more than 0")
    fr = {k: v / total for k, v in fractions.items() if v > 0}
    sel = np.ones(len(patients), bool) if only is None else np.asarray(only, bool)
    out = np.full(len(patients), "", dtype=object)
    uniq, py = _patient_matrix(patients[sel].reset_index(drop=True), y[sel])
    remaining = np.ones(len(uniq), bool)
    assigned = np.full(len(uniq), "", dtype=object)
    left = 1.0
    for name in ("test", "val"):
        if name not in fr:
            continue
        idx = np.flatnonzero(remaining)
        share = fr[name] / left
        pick = _stratified_pick(py[idx], share, seed + (1 if name == "val" else 0))
        assigned[idx[pick]] = name
        remaining[idx[pick]] = False
        left -= fr[name]
    rest = "train" if "train" in fr else ""
    assigned[remaining] = rest
    lookup = dict(zip(uniq.tolist(), assigned.tolist(), strict=True))
    out[sel] = patients[sel].map(lookup).to_numpy()
    return out.astype(str)


def carve_by_patient(patients: pd.Series, fraction: float, seed: int,
                     y: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask selecting about ``fraction`` of the *patients* (all their images).

    Stratified on ``y`` when given, else a seeded hash of the patient id
    (stable when new patients are added).
    """
    if y is not None:
        uniq, py = _patient_matrix(patients.reset_index(drop=True), y)
        chosen = set(uniq[_stratified_pick(py, fraction, seed)].tolist())
        return patients.isin(chosen).to_numpy()
    uniq = pd.Series(patients.unique())
    chosen = set(uniq[_unit_hash(uniq, seed) < fraction])
    if not chosen and len(uniq) > 1:  # tiny data: still hold out one patient
        chosen = {uniq.iloc[int(np.argmin(_unit_hash(uniq, seed)))]}
    return patients.isin(chosen).to_numpy()


def ids_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def split_lists(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {s: frame.loc[frame["split"] == s, "image"].tolist() for s in SPLITS}


def lists_hash(lists: dict[str, list[str]]) -> str:
    """Content hash of split lists (the ``hash`` of split.json and of split files)."""
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()[:16]


def save_split(path: str | Path, frame: pd.DataFrame) -> str:
    lists = split_lists(frame)
    content = lists_hash(lists)
    atomic_write_json(path, {"hash": content, "data_hash": ids_hash(frame["image"].tolist()), **lists})
    return content


def apply_split_file(path: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Set ``frame['split']`` from a saved split file; error if it does not match the data."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CxrlabError(f"{path}: cannot read split file ({e})") from None
    lookup = {img: s for s in SPLITS for img in saved.get(s, [])}
    ids = frame["image"].tolist()
    missing = [i for i in ids if i not in lookup]
    extra = len(set(lookup) - set(ids))
    if missing or extra or saved.get("data_hash") not in (None, ids_hash(ids)):
        raise CxrlabError(f"{path}: split file no longer matches the data ({len(missing)} images not in "
                          f"the file, {extra} in the file not in the data); delete it to make a new split")
    out = frame.copy()
    out["split"] = [lookup[i] for i in ids]
    return out


def shared_patients(data: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The pairs of splits that share patients, from a split summary (``summary.json["data"]``).

    One reading of the overlap for every page that shows it (run report, model card, served
    card), so they never disagree.

    Args:
        data: the block of :func:`cxrlab.data.summary.summarize` (``patient_overlap`` and
            ``overlap_examples``).

    Returns:
        ``{"train-test": {"patients": 3, "examples": ["person1", ...]}, ...}`` for the pairs
        with at least one shared patient (``{}`` when none is shared), or ``None`` when the
        run did not record its patients.
    """
    overlap = data.get("patient_overlap")
    if overlap is None:
        return None
    examples = data.get("overlap_examples") or {}
    return {pair: {"patients": int(n), "examples": list(examples.get(pair, []))}
            for pair, n in overlap.items() if n}
