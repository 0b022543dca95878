"""CheXpert (Irvin et al., AAAI 2019) in its published layout.

Disk layout: ``root`` is the unpacked folder (e.g. ``CheXpert-v1.0-small/``)
holding ``train.csv`` and ``valid.csv``; ``Path`` values start with that
folder's name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``),
which is resolved against ``root`` or its parent, whichever holds the files.

Columns used: ``Path``, ``Frontal/Lateral``, ``AP/PA`` and the 14 observations
with values 1 (positive), 0 (negative), -1 (uncertain) or blank (not
mentioned), kept as 1/0/-1/NaN; the uncertainty policy is applied later
(``data.uncertain``).  Patient and study come from the path; ``Age`` and ``Sex`` (Male/Female/Unknown), where the
CSV has them, become the manifest's ``age`` and ``sex`` (M/F/empty); ``site`` comes from an optional ``Site``
column (empty without one: the dataset is one hospital's, and ``source`` already says which).
``train.csv`` is the training pool (validation is carved from it by patient);
``valid.csv`` (234 radiologist-labelled images) is the test split.

Options: ``views`` = ``all`` (default) | ``frontal`` | ``lateral``.
The default labels are the 5 competition labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex, numeric_labels
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)
COMPETITION: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_REQUIRED = ("Path", "Frontal/Lateral", "AP/PA")


def read_chexpert_csv(path: Path, labels: list[str]) -> pd.DataFrame:
    """One CheXpert table as a manifest frame (``image`` = the CSV's Path)."""
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    missing = [c for c in (*_REQUIRED, *labels) if c not in raw.columns]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing}")
    values = numeric_labels(raw, labels, path)
    parts = raw["Path"].str.extract(r"(patient\d+)/(study\d+)/")
    if parts[0].isna().any():
        first = raw.loc[parts[0].isna(), "Path"].iloc[0]
        raise CxrlabError(f"{path}: cannot find patient/study in Path {first!r}")
    lateral = raw["Frontal/Lateral"].str.lower().eq("lateral")
    view = np.where(lateral, "LATERAL", raw["AP/PA"].fillna("").astype(str).str.upper())
    frame = pd.DataFrame({"image": raw["Path"], "patient": parts[0], "study": parts[0] + "/" + parts[1],
                          "view": view, "split": "", "source": "chexpert",
                          "age": normalize_age(raw["Age"], path, "Age") if "Age" in raw.columns else np.nan,
                          "sex": normalize_sex(raw["Sex"], path, "Sex") if "Sex" in raw.columns else "",
                          "site": raw["Site"].fillna("").astype(str) if "Site" in raw.columns else ""})
    return pd.concat([frame, values], axis=1)


def _resolve_prefix(root: Path, sample: str) -> Path:
    """The folder that CSV paths are relative to: ``root`` or its parent."""
    for base in (root, root.parent):
        if (base / sample).is_file():
            return base
    raise CxrlabError(f"{root}: image {sample!r} from the CSV not found under {root} or {root.parent}")


def observation_setup(source: str, root: str, labels: list[str] | None,
                      options: dict) -> tuple[str, Path, list[str]]:
    """The checks every CheXpert-labeller source shares (CheXpert, MIMIC-CXR): the ``views`` option, the
    folder, and labels among the 14 observations (default: the 5 competition labels)."""
    views = options.get("views", "all")
    if views not in ("all", "frontal", "lateral"):
        raise CxrlabError(f"data.options.views: {views!r}; expected all, frontal or lateral")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    labels = list(labels) if labels else list(COMPETITION)
    unknown = [lab for lab in labels if lab not in OBSERVATIONS]
    if unknown:
        raise CxrlabError(f"{source}: unknown labels {unknown}; known: {', '.join(OBSERVATIONS)}")
    return views, base, labels


@register_source("chexpert")
def chexpert(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("chexpert", options, {"views"})
    views, base, labels = observation_setup("chexpert", root, labels, options)
    frames = []
    for name, split in (("train.csv", ""), ("valid.csv", "test")):
        p = base / name
        if not p.is_file():
            # a root one level too high (the folder that holds CheXpert-v1.0-small/): name the subfolder
            inner = sorted(d for d in base.iterdir() if (d / name).is_file())
            hint = f"; {inner[0]} has it: use that folder as the root" if inner else ""
            raise CxrlabError(f"{base}: {name} not found{hint}")
        f = read_chexpert_csv(p, labels)
        f["split"] = "train" if split == "" else split
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    if views != "all":
        keep = (frame["view"] == "LATERAL") if views == "lateral" else (frame["view"] != "LATERAL")
        frame = frame[keep].reset_index(drop=True)
    if len(frame) == 0:
        raise CxrlabError(f"{base}: no images left after the views={views} filter")
    prefix = _resolve_prefix(base, frame["image"].iloc[0])
    # a symlink counts as present even when it loops or dangles: decoding names it as such
    exists = frame["image"].map(lambda p: (prefix / p).is_file() or (prefix / p).is_symlink())
    if not exists.all():
        miss = frame.loc[~exists, "image"]
        raise CxrlabError(f"{base}: {len(miss)} images in the CSVs not found (first: {miss.iloc[0]})")
    return Manifest(frame=frame, root=prefix, labels=labels, task="multilabel", origin=str(base))
