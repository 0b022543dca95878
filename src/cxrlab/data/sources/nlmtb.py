"""NLM tuberculosis sets (Jaeger et al., Quant Imaging Med Surg 2014): Shenzhen and Montgomery.

Disk layout: ``root`` is one set's folder (``ChinaSet_AllFiles/`` or ``MontgomerySet/``) or a folder
holding both::

    CXR_png/CHNCXR_<id>_<0|1>.png   ClinicalReadings/CHNCXR_<id>_<0|1>.txt        (Shenzhen)
    CXR_png/MCUCXR_<id>_<0|1>.png   ClinicalReadings/MCUCXR_<id>_<0|1>.txt        (Montgomery)
                                    ManualMask/leftMask/*.png, ManualMask/rightMask/*.png

Label ``Tuberculosis`` = the file name's last digit (1 TB, 0 normal), as torchxrayvision's
``NLMTB_Dataset`` reads it.  One image per patient (``<prefix>_<id>``); all views are PA (the paper);
``site`` is ``Shenzhen`` or ``Montgomery``.  Sex and age come from the clinical readings: Shenzhen's
first line (``male 35yrs``, ``female 8month``), Montgomery's ``Patient's Sex: M`` / ``Patient's Age:
044Y``; a reading that says neither leaves them unknown, counted in one warning.  No official split:
:func:`cxrlab.data.sources.load_source` splits by patient.

Montgomery's lung masks (:func:`montgomery_masks`): the folder names do not say whose side they mean,
so each mask is named by where it lies: on a PA view the patient's left lung is on the image's right.
The reader counts how the folder names agree (one log line) and keeps cxrlab's convention (the
patient's side, :mod:`cxrlab.data.masks`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.masks import MaskSet, _collect, _read_png
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

LABEL = "Tuberculosis"
SITES = {"CHNCXR": "Shenzhen", "MCUCXR": "Montgomery"}
_NAME = re.compile(r"^(CHNCXR|MCUCXR)_(\d+)_([01])$")
_SHENZHEN = re.compile(r"^\s*(male|female|m|f)\b[\s,:]*(\d+(?:\.\d+)?)\s*(yrs?|years?|y|months?|mon|m|days?|d)?\b",
                       re.IGNORECASE)
_SEX = re.compile(r"Patient'?s\s+Sex\s*:\s*([MF])", re.IGNORECASE)
_AGE = re.compile(r"Patient'?s\s+Age\s*:\s*(\d+)\s*([YMD])?", re.IGNORECASE)
_UNIT = {"y": 1.0, "m": 12.0, "d": 365.25}


def parse_reading(text: str) -> tuple[str, float]:
    """(sex ``M``/``F``/empty, age in years or NaN) of one clinical-reading file's text."""
    sex, age = "", float("nan")
    m = _SEX.search(text)
    if m:
        sex = m.group(1).upper()
    a = _AGE.search(text)
    if a:
        age = float(a.group(1)) / _UNIT[(a.group(2) or "Y").lower()]
    if not m and not a:
        s = _SHENZHEN.match(text)
        if s:
            sex = s.group(1)[0].upper()
            unit = (s.group(3) or "y").lower()
            age = float(s.group(2)) / _UNIT["y" if unit.startswith("y") else ("d" if unit.startswith("d") else "m")]
    return sex, age


def set_folders(root: Path) -> list[Path]:
    """The set folders under ``root``: itself if it holds ``CXR_png/``, else its subfolders that do."""
    if (root / "CXR_png").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "CXR_png").is_dir()) if root.is_dir() else []
    if not found:
        raise CxrlabError(f"{root}: no CXR_png/ folder here or one level down (expected ChinaSet_AllFiles/ "
                          "or MontgomerySet/ with CXR_png/ and ClinicalReadings/)")
    return found


def read_set(folder: Path, base: Path) -> pd.DataFrame:
    """One set's images as manifest rows (``image`` relative to ``base``)."""
    files = sorted(p for p in (folder / "CXR_png").iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise CxrlabError(f"{folder / 'CXR_png'}: no PNG images")
    rows, unread, no_file = [], [], []
    for f in files:
        m = _NAME.match(f.stem)
        if m is None:
            raise CxrlabError(f"{f}: file name is not <CHNCXR|MCUCXR>_<id>_<0|1>.png (the label is its last digit)")
        prefix, pid, label = m.groups()
        reading = folder / "ClinicalReadings" / f"{f.stem}.txt"
        sex, age = "", float("nan")
        if reading.is_file():
            sex, age = parse_reading(reading.read_text(errors="replace"))
            if not sex and np.isnan(age):
                unread.append(reading)
        else:
            no_file.append(reading)
        rows.append((str(f.relative_to(base)), f"{prefix}_{pid}", "PA", "", "nlmtb", age, sex, SITES[prefix],
                     float(label)))
    if unread:
        log.warning("%s: %d clinical readings say no sex or age (first: %s); left unknown", folder, len(unread),
                    unread[0].name)
    if no_file:
        log.warning("%s: %d images have no ClinicalReadings/*.txt (first: %s); sex and age left unknown", folder,
                    len(no_file), no_file[0].name)
    return pd.DataFrame(rows, columns=["image", "patient", "view", "split", "source", "age", "sex", "site", LABEL])


@register_source("nlmtb")
def nlmtb(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read the Shenzhen and/or Montgomery set at ``root``."""
    check_options("nlmtb", options or {}, set())
    if labels not in (None, [LABEL]):
        raise CxrlabError(f"nlmtb: the only label is {LABEL!r}, got {labels}")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    frame = pd.concat([read_set(f, base) for f in set_folders(base)], ignore_index=True)
    frame[LABEL] = frame[LABEL].astype(np.float32)
    return Manifest(frame=frame, root=base, labels=[LABEL], task="binary", origin=str(base))


def _mask_files(folder: Path) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    for sub in ("leftMask", "rightMask"):
        d = folder / "ManualMask" / sub
        if not d.is_dir():
            raise CxrlabError(f"{d}: folder not found (Montgomery's masks are ManualMask/leftMask and rightMask)")
        for p in sorted(d.glob("*.png")):
            out.setdefault(p.stem, {})[sub] = p
    return out


def _by_side(files: dict[str, dict[str, Path]], agree: list[int]) -> Iterator[tuple[str, str, Any]]:
    for stem, pair in sorted(files.items()):
        masks = {sub: _read_png(p) for sub, p in pair.items()}
        decoded = {sub: m.decode() for sub, m in masks.items()}
        centre = {sub: float(np.nonzero(d)[1].mean()) if d.any() else np.nan for sub, d in decoded.items()}
        if len(masks) == 2 and not np.isnan(list(centre.values())).any():
            # PA view: the patient's left lung lies on the image's right (larger x)
            left_is = max(centre, key=centre.get)
            agree[0 if left_is == "leftMask" else 1] += 1
            names = {left_is: "left_lung", ({"leftMask", "rightMask"} - {left_is}).pop(): "right_lung"}
        else:
            names = {"leftMask": "left_lung", "rightMask": "right_lung"}
        for sub, m in masks.items():
            yield stem, names[sub], (lambda m=m: m)


def montgomery_masks(root: str | Path, image_ids: list[str] | None = None) -> MaskSet:
    """Montgomery's left and right lung masks as a :class:`MaskSet` (structures by the patient's side).

    ``root`` is the set folder or one holding it.  Logs how the folder names relate to the sides.
    """
    folders = [f for f in set_folders(Path(root)) if (f / "ManualMask").is_dir()]
    if not folders:
        raise CxrlabError(f"{root}: no ManualMask/ folder (only the Montgomery set has lung masks)")
    agree = [0, 0]
    raw = (item for f in folders for item in _by_side(_mask_files(f), agree))
    masks = _collect(raw, str(folders[0] / "ManualMask"), image_ids)
    if sum(agree):
        side = "the patient's" if agree[0] >= agree[1] else "the image's"
        log.info("%s: leftMask/ holds the lung on the image's right (the patient's left) in %d of %d images: "
                 "the folder names are %s side", folders[0] / "ManualMask", agree[0], sum(agree), side)
    return masks
