"""A generic CSV: one row per image, a path column and label column(s).

``root`` is the CSV file, or a folder holding ``labels.csv``.  Image paths are
relative to the CSV's folder (or absolute).  Columns:

* ``path`` (or ``image``): the image file (required);
* ``patient``, ``split`` (train/val/test), ``view``: optional;
* ``age`` (years, or DICOM ``058Y``), ``sex`` (M/F/Male/Female/blank), ``site`` and ``source``
  (a name for where the row comes from; default ``csv``): optional, kept in the manifest and the
  prediction tables;
* labels, either one column per label listed in ``data.labels`` with values
  1/0/-1/blank (multi-label), or one ``label`` column of class names
  (multi-class; classes sorted unless ``data.labels`` orders them).

Options rename the columns: ``path_column``, ``patient_column``,
``split_column``, ``label_column``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex, numeric_labels
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError


@register_source("csv")
def csvfile(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("csv", options, {"path_column", "patient_column", "split_column", "label_column"})
    path = Path(root)
    if path.is_dir():
        path = path / "labels.csv"
    if not path.is_file():
        raise CxrlabError(f"{path}: CSV file not found")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    pcol = options.get("path_column") or next((c for c in ("path", "image") if c in raw.columns), None)
    if pcol is None or pcol not in raw.columns:
        raise CxrlabError(f"{path}: missing the image path column ('path' or 'image'; or set "
                          "data.options.path_column)")
    lcol = options.get("label_column", "label")
    patient_col = options.get("patient_column", "patient")
    split_col = options.get("split_column", "split")
    frame = pd.DataFrame({"image": raw[pcol].astype(str)})
    frame["patient"] = raw[patient_col].astype(str) if patient_col in raw.columns else frame["image"]
    frame["view"] = raw["view"].fillna("").astype(str) if "view" in raw.columns else ""
    frame["source"] = raw["source"].fillna("").astype(str) if "source" in raw.columns else ""
    frame["age"] = normalize_age(raw["age"], path, "age") if "age" in raw.columns else np.nan
    frame["sex"] = normalize_sex(raw["sex"], path, "sex") if "sex" in raw.columns else ""
    frame["site"] = raw["site"].fillna("").astype(str) if "site" in raw.columns else ""
    if split_col in raw.columns:
        split = raw[split_col].fillna("").astype(str).str.lower()
        bad = ~split.isin(["train", "val", "test", ""])
        if bad.any():
            raise CxrlabError(f"{path}: column {split_col!r} holds {split[bad].iloc[0]!r}; expected train, val or test")
        frame["split"] = split
    else:
        frame["split"] = ""
    if lcol in raw.columns and not (labels and all(lab in raw.columns for lab in labels)):
        blank = raw[lcol].isna() | raw[lcol].astype(str).str.strip().eq("")
        if blank.any():
            lines = ", ".join(str(i + 2) for i in np.flatnonzero(blank)[:5])
            raise CxrlabError(f"{path}: {int(blank.sum())} rows have a blank {lcol!r} cell (CSV line "
                              f"{lines}{', ...' if blank.sum() > 5 else ''}); every image needs its class")
        names = raw[lcol].astype(str)
        classes = list(labels) if labels else sorted(names.unique())
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise CxrlabError(f"{path}: column {lcol!r} holds labels {unknown} not in data.labels {classes}")
        idx = names.map({c: i for i, c in enumerate(classes)}).to_numpy()
        onehot = pd.DataFrame(np.eye(len(classes), dtype=np.float32)[idx], columns=classes)
        task, lab_names = "multiclass", classes
    else:
        if not labels:
            raise CxrlabError(f"{path}: no {lcol!r} column; list the label columns in data.labels")
        missing = [c for c in labels if c not in raw.columns]
        if missing:
            raise CxrlabError(f"{path}: missing label columns {missing}")
        onehot = numeric_labels(raw, labels, path)
        task, lab_names = "multilabel", list(labels)
    frame = pd.concat([frame, onehot], axis=1)
    _refuse_duplicates(frame["image"], path)
    base = path.parent
    # a symlink counts as listed even when it leads nowhere: decoding names the loop or broken link
    exists = frame["image"].map(lambda p: (base / p).is_file() or (base / p).is_symlink())
    if not exists.all():
        miss = frame.loc[~exists, "image"]
        raise CxrlabError(f"{path}: {len(miss)} image paths do not exist (first: {', '.join(miss.head(3))})")
    return Manifest(frame=frame, root=base, labels=lab_names, task=task, origin=str(path))


def _refuse_duplicates(images: pd.Series, path: Path) -> None:
    """One line naming the CSV, a few repeated paths and their lines (one row per image)."""
    dup = images.duplicated(keep=False)
    if not dup.any():
        return
    repeated = images[dup]
    shown = [f"{img} on lines {', '.join(str(i + 2) for i in rows)}"
             for img, rows in list(repeated.groupby(repeated, sort=False).groups.items())[:3]]
    n = int(images.duplicated().sum())
    more = "; ..." if repeated.nunique() > 3 else ""
    raise CxrlabError(f"{path}: {n} duplicate image ids ({'; '.join(shown)}{more}); list each image once")
