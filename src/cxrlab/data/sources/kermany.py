"""Kermany et al. (Cell 2018) pediatric pneumonia X-rays ("chest_xray" on Kaggle).

Disk layout: ``root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.
Task: binary, one label ``Pneumonia`` (1 for PNEUMONIA, 0 for NORMAL).

Patients come from the file names: ``person1234_bacteria_5678.jpeg`` ->
``person1234``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``.  The official ``val``
folder holds only 16 images, so by default it joins the training pool and a
validation split is carved from it by patient (option ``merge_val: false``
keeps it).

The official train and test folders share patients.  Option ``resplit: patient``
ignores the folders' split and lets :func:`cxrlab.data.sources.load_source` make
one by patient (``data.fractions``, iterative stratification), so no patient is
in two splits; ``resplit: official`` (the default) keeps the published split.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.data.sources.folder import list_images
from cxrlab.errors import CxrlabError

CLASSES = ("NORMAL", "PNEUMONIA")
_PATIENT = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)")


def patient_from_name(name: str) -> str:
    m = _PATIENT.match(name)
    return m.group(1) if m else Path(name).stem


@register_source("kermany")
def kermany(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("kermany", options, {"merge_val", "resplit"})
    resplit = options.get("resplit", "official")
    if resplit not in ("official", "patient"):
        raise CxrlabError(f"data.options.resplit: {resplit!r} for source 'kermany'; use official or patient")
    if labels not in (None, ["Pneumonia"]):
        raise CxrlabError(f"kermany: the only label is 'Pneumonia', got {labels}")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    rows = []
    for split in ("train", "val", "test"):
        for cls in CLASSES:
            folder = base / split / cls
            if not folder.is_dir():
                if split == "val":
                    continue
                raise CxrlabError(f"{folder}: folder not found (expected {{train,val,test}}/{{NORMAL,PNEUMONIA}})")
            files = list_images(folder)
            if not files:
                raise CxrlabError(f"{folder}: empty folder (no images)")
            for f in files:
                rows.append((str(f.relative_to(base)), patient_from_name(f.name), split, float(cls == "PNEUMONIA")))
    frame = pd.DataFrame(rows, columns=["image", "patient", "split", "Pneumonia"])
    frame.insert(2, "view", "")
    if options.get("merge_val", True):
        frame.loc[frame["split"] == "val", "split"] = "train"
    if resplit == "patient":  # no split given: load_source splits by patient
        frame["split"] = ""
    return Manifest(frame=frame, root=base, labels=["Pneumonia"], task="binary", origin=str(base))
