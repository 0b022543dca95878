"""One folder per class (multi-class), optionally inside split folders.

Disk layout: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*`` with
PNG, JPEG, BMP, TIFF or DICOM files.  Classes are the sub-folder names in
sorted order unless ``data.labels`` gives the order.  Each image is its own
patient unless ``patient_regex`` (option) extracts one from the file name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
_SPLITS = ("train", "val", "test")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    A symlink with an image suffix is listed even when it loops or dangles, so
    that ``data check`` and ``train`` name it instead of silently dropping it.
    """
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))


@register_source("folder")
def folder(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("folder", options, {"patient_regex"})
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    split_dirs = [s for s in _SPLITS if (base / s).is_dir()]
    parents = [(base / s, s) for s in split_dirs] if split_dirs else [(base, "")]
    classes = sorted({d.name for p, _ in parents for d in p.iterdir() if d.is_dir()})
    if not classes:
        raise CxrlabError(f"{base}: no class folders found")
    if labels:
        unknown = sorted(set(classes) - set(labels))
        if unknown:
            raise CxrlabError(f"{base}: class folders {unknown} are not in data.labels {labels}")
        classes = list(labels)
    regex = re.compile(options["patient_regex"]) if "patient_regex" in options else None
    rows = []
    for parent, split in parents:
        for k, cls in enumerate(classes):
            d = parent / cls
            if not d.is_dir():
                continue
            files = list_images(d)
            if not files:
                raise CxrlabError(f"{d}: empty class folder (no images)")
            for f in files:
                m = regex.search(f.name) if regex else None
                patient = m.group(1 if m and m.groups() else 0) if m else str(f.relative_to(base))
                rows.append((str(f.relative_to(base)), patient, split, k))
    frame = pd.DataFrame(rows, columns=["image", "patient", "split", "cls"])
    onehot = np.eye(len(classes), dtype=np.float32)[frame.pop("cls").to_numpy()]
    frame.insert(2, "view", "")
    frame = pd.concat([frame, pd.DataFrame(onehot, columns=classes)], axis=1)
    return Manifest(frame=frame, root=base, labels=classes, task="multiclass", origin=str(base))
