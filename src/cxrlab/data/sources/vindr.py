"""VinDr-CXR (Nguyen et al., Scientific Data 2022) in its published layout.

Disk layout under ``root`` (PhysioNet 1.0.0)::

    annotations/image_labels_train.csv   image_id, rad_id, 28 label columns (0/1): 3 readers per image
    annotations/image_labels_test.csv    image_id, [rad_id,] 28 label columns: the 5-reader consensus
    annotations/annotations_train.csv    image_id, rad_id, class_name, x_min, y_min, x_max, y_max
    annotations/annotations_test.csv     (boxes in DICOM pixels; "No finding" rows have blank boxes)
    train/<image_id>.dicom   test/<image_id>.dicom

or the Kaggle competition's copy: ``train.csv`` (image_id, class_name, class_id, rad_id, x_min, ... y_max:
one row per box or per reader's "No finding") with ``train/<image_id>.dicom``; Kaggle publishes no test
labels, so that copy has no test split and cxrlab splits it (each image its own patient).

Labels: the table's own column names (default: every label column, in the table's order; the
vocabulary maps them).  A train image's readers are combined by ``data.options.aggregate``:
``any`` (default: positive if one reader marks it, as torchxrayvision and the Kaggle boxes read it) or
``majority`` (more than half of the image's readers).  Boxes are every reader's boxes of the labels
asked for, in DICOM pixels (checked against each boxed DICOM's Rows/Columns: a box outside is one error
naming the file and line), ``x, y, w, h``.  VinDr publishes no patient ids: each image is its own
patient.  ``sex`` and ``age`` come from the DICOM headers where present (``headers: false`` skips the
header reads); ``view`` is empty (all frontal, the dataset says PA).  Official split: train / test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.data.sources.rsna import (
    check_boxes_inside,
    header_demographics,
    numbers,
    read_csv,
    read_headers,
)
from cxrlab.errors import CxrlabError

AGGREGATES = ("any", "majority")
_BOX_COLUMNS = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")


def _rad_column(table: pd.DataFrame) -> pd.DataFrame:
    """PhysioNet spells the reader column ``rad_id`` or ``rad_ID`` across files: one name here."""
    return table.rename(columns={c: "rad_id" for c in table.columns if c.lower() == "rad_id"})


def aggregate_readers(table: pd.DataFrame, labels: list[str], how: str, path: Path) -> pd.DataFrame:
    """One row per image from per-reader 0/1 rows: ``any`` reader, or a ``majority`` of them."""
    values = numbers(table, labels, path)
    bad = values.notna() & ~values.isin([0.0, 1.0]) | values.isna()
    if bad.any().any():
        col = bad.any().idxmax()
        i = int(bad[col].to_numpy().argmax())
        raise CxrlabError(f"{path}: column {col!r} holds {table[col].iloc[i]!r} (line {i + 2}); expected 0 or 1")
    values = values.astype(np.float32)
    values.insert(0, "image_id", table["image_id"].to_numpy())
    if "rad_id" not in table.columns:
        dup = table["image_id"].duplicated()
        if dup.any():
            i = int(dup.to_numpy().argmax())
            raise CxrlabError(f"{path}: image {table['image_id'].iloc[i]} listed twice (line {i + 2}) and no rad_id "
                              "column says by which readers")
        return values.reset_index(drop=True)
    twice = table.duplicated(["image_id", "rad_id"])
    if twice.any():
        i = int(twice.to_numpy().argmax())
        raise CxrlabError(f"{path}: reader {table['rad_id'].iloc[i]} labels image {table['image_id'].iloc[i]} twice "
                          f"(line {i + 2})")
    grouped = values.groupby("image_id", sort=False)[labels]
    out = grouped.max() if how == "any" else (grouped.mean() > 0.5).astype(np.float32)
    return out.astype(np.float32).reset_index()


def kaggle_labels(table: pd.DataFrame, labels: list[str], path: Path) -> pd.DataFrame:
    """Kaggle's train.csv (one row per box or reader's "No finding") as per-reader 0/1 label rows."""
    unknown = sorted(set(labels) - set(table["class_name"]))
    if unknown:
        raise CxrlabError(f"{path}: no rows of class {unknown} (classes here: {sorted(set(table['class_name']))})")
    wide = pd.crosstab([table["image_id"], table["rad_id"]], table["class_name"]).clip(upper=1)
    wide = wide.reindex(columns=labels, fill_value=0).reset_index()
    return wide.astype({lab: str for lab in labels})


def read_boxes(path: Path, labels: list[str]) -> pd.DataFrame:
    """Boxes of ``labels`` as ``image_id, label, x, y, w, h, line``; a blank or inverted box is an error."""
    table = _rad_column(read_csv(path, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")))
    table["image_id"], table["class_name"] = table["image_id"].str.strip(), table["class_name"].str.strip()
    xy = numbers(table, ("x_min", "y_min", "x_max", "y_max"), path)
    keep = table["class_name"].isin(labels).to_numpy() & (table["class_name"] != "No finding").to_numpy()
    blank = keep & xy.isna().any(axis=1).to_numpy()
    if blank.any():
        i = int(blank.argmax())
        raise CxrlabError(f"{path}: line {i + 2} ({table['image_id'].iloc[i]}, {table['class_name'].iloc[i]}) has no box")
    out = pd.DataFrame({"image_id": table["image_id"], "label": table["class_name"], "x": xy["x_min"],
                        "y": xy["y_min"], "w": xy["x_max"] - xy["x_min"], "h": xy["y_max"] - xy["y_min"],
                        "line": np.arange(len(table)) + 2})
    return out[keep].reset_index(drop=True)


def _label_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("image_id", "rad_id")]


@register_source("vindr")
def vindr(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read VinDr-CXR at ``root`` (PhysioNet or Kaggle layout) with the official train/test split."""
    options = options or {}
    check_options("vindr", options, {"aggregate", "headers"})
    how = str(options.get("aggregate", "any"))
    if how not in AGGREGATES:
        raise CxrlabError(f"data.options.aggregate: {how!r}; expected any or majority")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    ann = base / "annotations"
    parts = []  # (split, folder, label table path, labels frame, box table path)
    if (ann / "image_labels_train.csv").is_file() or not (base / "train.csv").is_file():
        for split in ("train", "test"):
            lpath = ann / f"image_labels_{split}.csv"
            table = _rad_column(read_csv(lpath, ("image_id",)))
            table["image_id"] = table["image_id"].str.strip()
            labels = list(labels) if labels else [c for c in _label_columns(table)]
            missing = [lab for lab in labels if lab not in table.columns]
            if missing:
                raise CxrlabError(f"{lpath}: missing label columns {missing} (has {', '.join(_label_columns(table))})")
            parts.append((split, lpath, aggregate_readers(table, labels, how, lpath), ann / f"annotations_{split}.csv"))
    else:  # the Kaggle competition's copy: no test labels
        kpath = base / "train.csv"
        table = read_csv(kpath, _BOX_COLUMNS)
        table["image_id"], table["class_name"] = table["image_id"].str.strip(), table["class_name"].str.strip()
        labels = list(labels) if labels else sorted(set(table["class_name"]))
        parts.append(("", kpath, aggregate_readers(kaggle_labels(table, labels, kpath), labels, how, kpath), kpath))
    frames, all_boxes = [], []
    for split, lpath, values, bpath in parts:
        folder = "train" if split in ("train", "") else "test"
        rel = folder + "/" + values["image_id"] + ".dicom"
        exists = rel.map(lambda p: (base / p).is_file())
        if not exists.all():
            raise CxrlabError(f"{lpath}: {int((~exists).sum())} images not found under {base / folder}/ "
                              f"(first: {rel[~exists].iloc[0]})")
        frames.append(pd.DataFrame({"image": rel, "patient": values["image_id"], "view": "", "split": split,
                                    "source": "vindr", "age": np.nan, "sex": "", "site": ""}).join(values[labels]))
        if bpath.is_file():
            boxes = read_boxes(bpath, labels)
            known = boxes["image_id"].isin(set(values["image_id"]))
            if not known.all():
                i = int((~known).to_numpy().argmax())
                raise CxrlabError(f"{bpath}: line {int(boxes['line'].iloc[i])}: image {boxes['image_id'].iloc[i]} is not "
                                  f"in {lpath.name}")
            boxes["image"] = folder + "/" + boxes.pop("image_id") + ".dicom"
            all_boxes.append((bpath, boxes))
    frame = pd.concat(frames, ignore_index=True)
    sizes: dict[str, tuple[int, int]] = {}
    boxed = sorted({i for _, b in all_boxes for i in b["image"]})
    if options.get("headers", True):
        head = read_headers([base / p for p in frame["image"]])
        frame["sex"], frame["age"] = header_demographics(head, [base / p for p in frame["image"]])
        sizes = {p: (int(w), int(h)) for p, w, h in zip(frame["image"], head["width"], head["height"], strict=True)}
    elif boxed:  # the boxes are checked against their images' sizes in any case
        head = read_headers([base / p for p in boxed])
        sizes = {p: (int(w), int(h)) for p, w, h in zip(boxed, head["width"], head["height"], strict=True)}
    for bpath, boxes in all_boxes:
        check_boxes_inside(boxes, sizes, bpath)
    boxes = (pd.concat([b for _, b in all_boxes], ignore_index=True).drop(columns="line")[
        ["image", "label", "x", "y", "w", "h"]] if all_boxes else None)
    return Manifest(frame=frame, root=base, labels=labels, task="multilabel", boxes=boxes, image_sizes=sizes,
                    origin=str(parts[0][1]))
