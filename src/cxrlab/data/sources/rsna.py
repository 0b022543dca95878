"""RSNA Pneumonia Detection Challenge (Kaggle 2018, stage 2) in its published layout.

Disk layout under ``root``::

    stage_2_train_labels.csv            patientId, x, y, width, height, Target: one row per box
                                        (several per image); a Target 0 row has a blank box
    stage_2_detailed_class_info.csv     patientId, class: Lung Opacity | No Lung Opacity / Not Normal
                                        | Normal (optional; needed for the labels other than Lung Opacity)
    stage_2_train_images/<patientId>.dcm

Labels (:data:`RSNA_LABELS`): ``Lung Opacity`` (= Target, the default), ``Pneumonia`` (the same column
under the challenge's name, as torchxrayvision reads it), and the other two classes of the class table,
``Normal`` and ``No Lung Opacity / Not Normal``, each 1/0.  Every ``Target`` 1 row is a box
(``x, y, width, height`` in the DICOM's pixels, checked against its Rows/Columns); a Target 0 row with a box,
a Target 1 row without one, an image whose rows disagree, or a class that contradicts Target is one error
naming the file and line.  One image per patient: ``patient`` = ``patientId``.  ``sex``, ``age`` and
``view`` come from the DICOM headers (PatientSex, PatientAge, ViewPosition), read without the pixels.
RSNA publishes no test labels (stage 2 test images are unlabelled and not read): the split is left to
cxrlab, by patient.  The images are NIH ChestX-ray14 images (re-labelled by radiologists), so a model
trained on NIH and scored here is not external: ``cxrlab evaluate --on rsna`` reports the copies.

The cxrlab phantom writes this layout (``cxrlab phantom --kind rsna``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

RSNA_LABELS: tuple[str, ...] = ("Lung Opacity", "Pneumonia", "Normal", "No Lung Opacity / Not Normal")
CLASSES: tuple[str, ...] = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
_LABELS_CSV = "stage_2_train_labels.csv"
_CLASS_CSV = "stage_2_detailed_class_info.csv"
_IMAGES = "stage_2_train_images"


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV with ``columns`` required (strings, blanks kept blank); one line if unreadable or short."""
    if not path.is_file():
        raise CxrlabError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing} (has {list(table.columns)})")
    return table


def numbers(table: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    """``columns`` as floats (blank: NaN); a value that is no number is one error naming its line."""
    out = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    bad = out.isna() & table[list(columns)].ne("")
    if bad.any().any():
        col = bad.any().idxmax()
        i = int(bad[col].to_numpy().argmax())
        raise CxrlabError(f"{path}: column {col!r} holds {table[col].iloc[i]!r} (line {i + 2}); expected a number")
    return out


def read_headers(paths: Sequence[Path]) -> pd.DataFrame:
    """PatientSex, PatientAge, ViewPosition, Rows, Columns of each DICOM, read without the pixels.

    A missing tag is blank (0 for Rows/Columns); an unreadable header is one error naming the file.
    """
    import pydicom

    rows = []
    for p in paths:
        try:
            with warnings.catch_warnings():  # RSNA writes PatientAge as "51", not DICOM's "051Y"
                warnings.simplefilter("ignore", UserWarning)
                ds = pydicom.dcmread(str(p), stop_before_pixels=True)
                rows.append((str(ds.get("PatientSex", "") or ""), str(ds.get("PatientAge", "") or ""),
                             str(ds.get("ViewPosition", "") or "").upper(), int(ds.get("Rows", 0) or 0),
                             int(ds.get("Columns", 0) or 0)))
        except Exception as e:  # pydicom raises many types for a broken header
            raise CxrlabError(f"{p}: cannot read the DICOM header ({type(e).__name__}: {e})") from None
    return pd.DataFrame(rows, columns=["sex", "age", "view", "height", "width"])


def header_demographics(head: pd.DataFrame, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(sex, age) from :func:`read_headers`' columns; a value that is neither is one error naming the DICOM."""
    out = []
    for column, tag, fn in (("sex", "PatientSex", normalize_sex), ("age", "PatientAge", normalize_age)):
        try:
            out.append(fn(head[column], "DICOM headers", tag).to_numpy())
        except CxrlabError:
            ok = [_parses(fn, v, tag) for v in head[column]]
            i = ok.index(False)
            raise CxrlabError(f"{paths[i]}: {tag} {head[column].iloc[i]!r} is no "
                              f"{'sex (M, F or blank)' if column == 'sex' else 'age'}") from None
    return out[0], out[1]


def _parses(fn, value: str, tag: str) -> bool:
    try:
        fn(pd.Series([value]), "", tag)
    except CxrlabError:
        return False
    return True


def check_boxes_inside(boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], path: Path) -> None:
    """Every box (``image, x, y, w, h, line``) within its image's ``(width, height)``; else one line naming the row."""
    wh = np.array([sizes.get(i, (0, 0)) for i in boxes["image"]], dtype=float).reshape(-1, 2)
    x, y, w, h = (boxes[c].to_numpy(float) for c in ("x", "y", "w", "h"))
    known = wh[:, 0] > 0
    bad = known & ((x < 0) | (y < 0) | (w <= 0) | (h <= 0) | (x + w > wh[:, 0] + 0.5) | (y + h > wh[:, 1] + 0.5))
    if bad.any():
        i = int(bad.argmax())
        raise CxrlabError(f"{path}: the box on line {int(boxes['line'].iloc[i])} ({boxes['image'].iloc[i]}: x {x[i]:g}, "
                          f"y {y[i]:g}, w {w[i]:g}, h {h[i]:g}) lies outside its {int(wh[i, 0])} x {int(wh[i, 1])} "
                          "image; boxes must be in the DICOM's pixels")


def rsna_tables(base: Path, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per image: ``patientId``, ``Target``, ``class``; one row per box), checked row by row."""
    lpath = base / _LABELS_CSV
    table = read_csv(lpath, ("patientId", "x", "y", "width", "height", "Target"))
    table["patientId"] = table["patientId"].str.strip()
    coords = numbers(table, ("x", "y", "width", "height", "Target"), lpath)
    target = coords["Target"]
    bad = ~target.isin([0.0, 1.0])
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise CxrlabError(f"{lpath}: column 'Target' holds {table['Target'].iloc[i]!r} (line {i + 2}); expected 0 or 1")
    has_box = coords[["x", "y", "width", "height"]].notna().all(axis=1)
    part_box = coords[["x", "y", "width", "height"]].notna().any(axis=1) & ~has_box
    wrong = part_box | (has_box != (target == 1))
    if wrong.any():
        i = int(wrong.to_numpy().argmax())
        why = ("a partial box" if part_box.iloc[i] else "Target 1 without a box" if target.iloc[i] == 1
               else "Target 0 with a box")
        raise CxrlabError(f"{lpath}: line {i + 2} ({table['patientId'].iloc[i]}) has {why}")
    mixed = target.groupby(table["patientId"]).nunique() > 1
    if mixed.any():
        pid = mixed.index[mixed.to_numpy()][0]
        line = int(np.flatnonzero(table["patientId"].to_numpy() == pid)[-1]) + 2
        raise CxrlabError(f"{lpath}: patient {pid} has rows with Target 0 and 1 (line {line})")
    images = pd.DataFrame({"patientId": table["patientId"], "Target": target}).drop_duplicates("patientId")
    cpath = base / _CLASS_CSV
    if cpath.is_file() or any(lab in ("Normal", "No Lung Opacity / Not Normal") for lab in labels):
        info = read_csv(cpath, ("patientId", "class"))
        info["patientId"], info["class"] = info["patientId"].str.strip(), info["class"].str.strip()
        odd = ~info["class"].isin(CLASSES)
        if odd.any():
            i = int(odd.to_numpy().argmax())
            raise CxrlabError(f"{cpath}: line {i + 2} has class {info['class'].iloc[i]!r}; expected one of "
                              f"{', '.join(CLASSES)}")
        per = info.drop_duplicates(["patientId", "class"])
        dup = per["patientId"].duplicated()
        if dup.any():
            raise CxrlabError(f"{cpath}: patient {per['patientId'][dup].iloc[0]} has two classes")
        images = images.merge(per, on="patientId", how="left")
        unknown = images["class"].isna()
        if unknown.any():
            raise CxrlabError(f"{cpath}: patient {images['patientId'][unknown].iloc[0]} of {_LABELS_CSV} has no class "
                              f"({int(unknown.sum())} patients)")
        clash = (images["class"] == "Lung Opacity") != (images["Target"] == 1)
        if clash.any():
            r = images[clash].iloc[0]
            raise CxrlabError(f"{cpath}: patient {r['patientId']} has class {r['class']!r} but Target "
                              f"{int(r['Target'])} in {_LABELS_CSV}")
    else:
        images["class"] = np.where(images["Target"] == 1, "Lung Opacity", "")
    boxes = pd.DataFrame({"image": table["patientId"], "label": "Lung Opacity", "x": coords["x"], "y": coords["y"],
                          "w": coords["width"], "h": coords["height"], "line": np.arange(len(table)) + 2})[has_box]
    return images.reset_index(drop=True), boxes.reset_index(drop=True)


@register_source("rsna")
def rsna(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read the RSNA Pneumonia Detection training set at ``root`` (no official split)."""
    options = options or {}
    check_options("rsna", options, {"headers"})
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    labels = list(labels) if labels else ["Lung Opacity"]
    unknown = [lab for lab in labels if lab not in RSNA_LABELS]
    if unknown:
        raise CxrlabError(f"rsna: unknown labels {unknown}; known: {', '.join(RSNA_LABELS)}")
    images, boxes = rsna_tables(base, labels)
    rel = _IMAGES + "/" + images["patientId"] + ".dcm"
    exists = rel.map(lambda p: (base / p).is_file())
    if not exists.all():
        raise CxrlabError(f"{base / _LABELS_CSV}: {int((~exists).sum())} images not found under {base / _IMAGES}/ "
                          f"(first: {rel[~exists].iloc[0]})")
    frame = pd.DataFrame({"image": rel, "patient": images["patientId"], "view": "", "split": "", "source": "rsna",
                          "age": np.nan, "sex": "", "site": ""})
    sizes: dict[str, tuple[int, int]] = {}
    if options.get("headers", True):
        head = read_headers([base / p for p in rel])
        frame["sex"], frame["age"] = header_demographics(head, [base / p for p in rel])
        frame["view"] = head["view"].to_numpy()
        sizes = {p: (int(w), int(h)) for p, w, h in zip(rel, head["width"], head["height"], strict=True)}
    target = images["Target"].to_numpy(np.float32)
    for lab in labels:
        frame[lab] = target if lab in ("Lung Opacity", "Pneumonia") else \
            (images["class"] == lab).to_numpy(np.float32)
    boxes["image"] = _IMAGES + "/" + boxes["image"] + ".dcm"
    check_boxes_inside(boxes, {p: sizes[p] for p in boxes["image"] if p in sizes}, base / _LABELS_CSV)
    boxes = boxes.drop(columns="line")
    if "Pneumonia" in labels:  # the same boxes under the challenge's name
        boxes = pd.concat([boxes, boxes.assign(label="Pneumonia")], ignore_index=True)
    boxes = boxes[boxes["label"].isin(labels)].reset_index(drop=True)
    return Manifest(frame=frame, root=base, labels=labels, task="multilabel", boxes=boxes, image_sizes=sizes,
                    origin=str(base / _LABELS_CSV))
