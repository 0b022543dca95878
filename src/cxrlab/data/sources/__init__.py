"""Dataset sources: each reads one published layout into a :class:`Manifest`.

A source is a function ``(root, labels, options) -> Manifest`` registered by
name; configs and the CLI refer to it by that name (``data.source``).  Sources
fill ``split`` where the dataset has an official split and leave ``""``
elsewhere; :func:`load_source` then completes the split by patient (see
``cxrlab.data.splits``), so every source gets the same treatment.

=============  ==============================================================
name           layout
=============  ==============================================================
``nih14``      NIH ChestX-ray14: Data_Entry_2017*.csv, official lists, images*/
``chexpert``   CheXpert: train.csv / valid.csv with Path, views, 14 observations
``mimic``      MIMIC-CXR-JPG: files/pXX/p<subject>/s<study>/*.jpg, metadata/label/split tables
``padchest``   PadChest: the 160K labels CSV (list-valued Labels), 16-bit PNGs in 0..53/
``kermany``    Kermany pneumonia: {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
``tbx11k``     TBX11K tuberculosis: imgs/{health,sick,tb}, lists/, COCO JSON boxes
``siim``       SIIM-ACR Pneumothorax: train-rle.csv (relative RLE masks), dicom-images-train/
``nlmtb``      NLM TB (Shenzhen, Montgomery): CXR_png/, ClinicalReadings/, ManualMask/
``vindr``      VinDr-CXR: annotations/image_labels_*.csv (3 readers), boxes, {train,test}/*.dicom
``rsna``       RSNA Pneumonia: stage_2_train_labels.csv (boxes), stage_2_train_images/*.dcm
``folder``     one folder per class, optionally under {train,val,test}/
``csv``        a CSV with an image path column and label column(s)
``npz``        MedMNIST-style arrays {split}_images / {split}_labels
=============  ==============================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cxrlab.data.manifest import Manifest, with_demographics
from cxrlab.data.splits import (
    apply_split_file,
    carve_by_patient,
    save_split,
    stratified_patient_split,
)
from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)


class SourceFn(Protocol):
    """What a source is: ``(root, labels, options) -> Manifest``.

    ``root`` is ``data.root``; ``labels`` is ``data.labels`` (None: the source's own label set, in
    its order); ``options`` is ``data.options`` (check it with :func:`check_options`, so a typo is
    one error line rather than an ignored setting).
    """

    def __call__(self, root: str, labels: list[str] | None, options: dict[str, Any]) -> Manifest: ...


_SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    """Register a source as ``data.source: <name>`` (a decorator on the source function).

    The extension point for a new dataset layout (``docs/extending.md``): one module in this
    package per layout, its docstring saying the disk layout and label encoding, imported at the
    bottom of this file.  The source fills ``split`` only where the dataset has an official split;
    :func:`load_source` completes the rest by patient, so every source gets the same splits.

    Raises:
        KeyError: ``name`` is taken (two layouts under one name would silently shadow each other).
    """

    def add(fn: SourceFn) -> SourceFn:
        if name in _SOURCES:
            raise KeyError(f"duplicate source {name!r}")
        _SOURCES[name] = fn
        return fn

    return add


def list_sources() -> list[str]:
    """The registered source names, sorted (``cxrlab data sources``)."""
    return sorted(_SOURCES)


def complete_splits(m: Manifest, val_fraction: float = 0.1, fractions: dict[str, float] | None = None,
                    seed: int = 0, split_file: str | Path | None = None) -> Manifest:
    """Fill missing splits by patient; reuse or write ``split_file``."""
    frame = m.frame
    if split_file is not None and Path(split_file).is_file():
        m.frame = apply_split_file(split_file, frame)
        m.split_method = f"reused from the split file {split_file}"
        return m
    y = m.targets(frame)
    split = frame["split"].to_numpy().astype(str)
    empty = split == ""
    if empty.all():
        fr = fractions or {"train": 0.7, "val": 0.1, "test": 0.2}
        split = stratified_patient_split(frame["patient"], y, fr, seed)
        shares = "/".join(f"{round(100 * fr.get(s, 0))}" for s in ("train", "val", "test"))
        m.split_method = (f"made by cxrlab: {shares} % of patients (train/val/test), iterative "
                          f"stratification on the labels, seed {seed}")
    else:
        if empty.any():
            raise CxrlabError(f"{m.root}: {int(empty.sum())} images have no split while others do "
                              f"(first: {frame.loc[empty, 'image'].iloc[0]})")
        if not (split == "val").any():
            train = split == "train"
            pick = carve_by_patient(frame.loc[train, "patient"].reset_index(drop=True), val_fraction,
                                    seed, y=y[train])
            split[np.flatnonzero(train)[pick]] = "val"
            m.split_method = (f"the dataset's own train/test split; validation carved from train by patient "
                              f"({round(100 * val_fraction)} % of its patients, stratified, seed {seed})")
        else:
            m.split_method = "the dataset's own train/val/test split"
    frame = frame.assign(split=split)
    by_split = frame.groupby("split")["patient"].apply(set)
    names = list(by_split.index)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = by_split[a] & by_split[b]
            if shared:
                log.warning("%s: %d patients appear in both %s and %s (the dataset's own split)",
                            m.root, len(shared), a, b)
    m.frame = frame
    if split_file is not None:
        save_split(split_file, frame)
    return m


def load_source(name: str, root: str, labels: list[str] | None = None, options: dict[str, Any] | None = None,
                val_fraction: float = 0.1, fractions: dict[str, float] | None = None, seed: int = 0,
                split_file: str | Path | None = None, task: str | None = None) -> Manifest:
    """Build the manifest of dataset ``name`` stored at ``root``, with complete splits.

    Every manifest it returns has the demographic columns (``source`` = ``name`` where the
    source says nothing else, ``age``, ``sex``, ``site``; see :mod:`cxrlab.data.manifest`).

    ``task`` is the config's task; ``binary`` is honoured for any single-label
    source (see :func:`as_task`), other values leave the source's own task.
    """
    if name not in _SOURCES:
        raise CxrlabError(f"unknown data source {name!r}; known: {', '.join(list_sources())}")
    m = _SOURCES[name](root=root, labels=labels, options=dict(options or {}))
    if len(m.frame) == 0:
        raise CxrlabError(f"{root}: no images found for source {name!r}")
    m.frame = with_demographics(m.frame, name)
    if task is not None:
        m = as_task(m, task, name)
    return complete_splits(m, val_fraction, fractions, seed, split_file)


def as_task(m: Manifest, task: str, source: str = "") -> Manifest:
    """Honour ``task=binary`` for a single-label source, or refuse it in one line.

    A source with one label column (``csv`` with ``data.labels=[X]``) becomes
    binary as it is; one with two classes (``folder``, ``csv`` with a ``label``
    column, ``npz``) becomes binary with the second class as the positive label
    (sorted names unless ``data.labels`` orders them), which is said in a
    warning.  Anything else would silently train another task than asked for,
    so it is an error.  Tasks other than ``binary`` are left to the source.
    """
    if task != "binary" or m.task == "binary":
        return m
    where = m.origin or str(m.root)
    if m.task == "multilabel" and len(m.labels) == 1:
        m.task = "binary"
        return m
    if m.task == "multiclass" and len(m.labels) == 2:
        negative, positive = m.labels
        m.frame = m.frame.drop(columns=[negative])
        m.labels, m.task = [positive], "binary"
        log.warning("%s: task=binary with the two classes %s and %s: %r is the positive label (the second; "
                    "order them with data.labels=[negative, positive])", where, negative, positive, positive)
        return m
    what = (f"{len(m.labels)} classes ({', '.join(m.labels[:6])}{', ...' if len(m.labels) > 6 else ''})"
            if m.task == "multiclass" else f"{len(m.labels)} label columns")
    fix = "task=multiclass" if m.task == "multiclass" else "task=multilabel, or one label in data.labels"
    raise CxrlabError(f"{where}: task=binary needs a single-label source (one label column or two classes), "
                      f"but source {source or 'data'!r} has {what}; use {fix}")


def check_options(source: str, options: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise CxrlabError(f"data.options: unknown options {unknown} for source {source!r}; "
                          f"known: {', '.join(sorted(known)) or 'none'}")


# register the built-in sources
from cxrlab.data.sources import (  # noqa: E402,F401
    chexpert,
    csvfile,
    folder,
    kermany,
    mimic,
    nih,
    nlmtb,
    npz,
    padchest,
    rsna,
    siim,
    tbx11k,
    vindr,
)
