"""PadChest (Bustos et al. 2020; BIMCV, Hospital San Juan de Alicante) in its published layout.

Disk layout: ``root`` holds the label table and the image folders as unzipped::

    PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)
    0/216840111366964012283393834152009033102258826_02-059-087.png   (16-bit grey PNG)
    1/ ... 53/

Columns used: ``ImageID`` (file name), ``ImageDir`` (its folder, 0..53), ``PatientID``,
``StudyID``, ``Projection`` (PA, AP, AP_horizontal, L, COSTAL, ...), ``PatientSex_DICOM``
(M/F/O/blank), ``PatientBirth`` (year) and ``StudyDate_DICOM`` (YYYYMMDD): ``age`` is the study
year minus the birth year (so within a year of the true age), ``MethodLabel`` (``Physician``:
labelled by a radiologist from the report, about 27 %; ``RNN_model``: by a network trained on
those) and ``Labels``, a Python list literal of lower-case terms (``"['pleural effusion',
'cardiomegaly']"``, ``"['normal']"``).  A label column is 1 where its term is in the list, else 0
(PadChest has no uncertain labels); rows with an empty or missing ``Labels`` get NaN (not
labelled), counted in a warning.  ``view`` is PA/AP/LATERAL (``L``), other projections as they are.
There is no official split: :func:`cxrlab.data.sources.load_source` splits by patient.

Options: ``method`` = ``all`` (default) | ``physician`` (only the manually labelled images) |
``model``; ``views`` = ``all`` | ``frontal`` | ``lateral``; ``missing`` = ``error`` (default) |
``skip`` (drop rows whose image is not on disk, with a warning: many users unzip a few folders).
``data.labels`` are PadChest terms (any term found in ``Labels``); the default is :data:`DEFAULT`.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
#: Terms read when ``data.labels`` is not set: the common findings the vocabulary maps.
DEFAULT: tuple[str, ...] = ("atelectasis", "cardiomegaly", "consolidation", "pleural effusion", "pneumothorax",
                            "nodule", "mass", "normal")
_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "PatientSex_DICOM", "PatientBirth",
            "StudyDate_DICOM", "MethodLabel", "Labels")
_METHODS = {"physician": "Physician", "model": "RNN_model"}
_VIEW = {"PA": "PA", "AP": "AP", "AP_HORIZONTAL": "AP", "L": "LATERAL"}


def parse_labels(text: object, path: object, row: int) -> list[str] | None:
    """The terms of one ``Labels`` cell (None: empty or missing); a cell that is no list is an error."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CxrlabError(f"{path}: column 'Labels' holds {text!r} (row {row}); expected a list such as "
                          "\"['pleural effusion', 'cardiomegaly']\"")
    terms = [v.strip().lower() for v in value if v.strip()]
    return terms or None


def _age(raw: pd.DataFrame, path: Path) -> pd.Series:
    birth = pd.to_numeric(raw["PatientBirth"], errors="coerce")
    date = pd.to_numeric(raw["StudyDate_DICOM"], errors="coerce")
    for col, values in (("PatientBirth", birth), ("StudyDate_DICOM", date)):
        bad = (raw[col].notna() & values.isna()).to_numpy()
        if bad.any():
            row = int(bad.argmax())
            raise CxrlabError(f"{path}: column {col!r} holds {raw[col].iloc[row]!r} (row {row + 2}); expected "
                              f"{'a year' if col == 'PatientBirth' else 'a date YYYYMMDD'}")
    years = (date // 10000 - birth).astype(str).replace("nan", "")
    return normalize_age(years, path, "StudyDate_DICOM - PatientBirth")


@register_source("padchest")
def padchest(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("padchest", options, {"method", "views", "missing"})
    method = options.get("method", "all")
    if method not in ("all", *_METHODS):
        raise CxrlabError(f"data.options.method: {method!r}; expected all, physician or model")
    views = options.get("views", "all")
    if views not in ("all", "frontal", "lateral"):
        raise CxrlabError(f"data.options.views: {views!r}; expected all, frontal or lateral")
    missing_rule = options.get("missing", "error")
    if missing_rule not in ("error", "skip"):
        raise CxrlabError(f"data.options.missing: {missing_rule!r}; expected error or skip")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    path = next((p for p in (base / TABLE, base / f"{TABLE}.gz") if p.is_file()), None)
    if path is None:
        raise CxrlabError(f"{base}: {TABLE}(.gz) not found")
    try:
        raw = pd.read_csv(path, low_memory=False, dtype={"ImageDir": str, "PatientID": str, "ImageID": str, "StudyID": str})
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    absent = [c for c in _COLUMNS if c not in raw.columns]
    if absent:
        raise CxrlabError(f"{path}: missing columns {absent}")
    terms = [parse_labels(t, path, i + 2) for i, t in enumerate(raw["Labels"])]
    known = {t for ts in terms if ts for t in ts}
    # the default terms are read even where a (partial) table lacks one: absent there means negative
    labels = [str(lab).strip().lower() for lab in labels] if labels else list(DEFAULT)
    unknown = [lab for lab in labels if lab not in known and lab not in DEFAULT]
    if unknown:
        raise CxrlabError(f"{path}: labels {unknown} appear in no 'Labels' cell (PadChest terms are lower-case, "
                          f"e.g. {', '.join(sorted(known)[:8])})")
    unlabelled = np.array([t is None for t in terms])
    values = np.array([[np.nan if t is None else float(lab in t) for lab in labels] for t in terms],
                      dtype=np.float32).reshape(len(raw), len(labels))
    if unlabelled.any():
        log.warning("%s: %d images with an empty Labels cell: their labels are NaN (not labelled)", path,
                    int(unlabelled.sum()))
    projection = raw["Projection"].fillna("").astype(str).str.strip()
    rows = np.arange(len(raw)) + 2
    frame = pd.DataFrame({
        "image": raw["ImageDir"].astype(str).str.strip() + "/" + raw["ImageID"].astype(str).str.strip(),
        "patient": raw["PatientID"].astype(str), "view": projection.str.upper().map(_VIEW).fillna(projection),
        "split": "", "source": "padchest", "age": _age(raw, path).to_numpy(),
        "sex": normalize_sex(raw["PatientSex_DICOM"], path, "PatientSex_DICOM", rows).to_numpy(),
        "site": "", "method_label": raw["MethodLabel"].fillna("").astype(str).to_numpy()})
    if "StudyID" in raw.columns:
        frame["study"] = raw["StudyID"].astype(str)
    frame = pd.concat([frame, pd.DataFrame(values, columns=labels)], axis=1)
    keep = np.ones(len(frame), bool)
    if method != "all":
        keep &= (frame["method_label"] == _METHODS[method]).to_numpy()
    if views != "all":
        keep &= frame["view"].isin(("PA", "AP") if views == "frontal" else ("LATERAL",)).to_numpy()
    frame = frame[keep].reset_index(drop=True)
    if len(frame) == 0:
        raise CxrlabError(f"{path}: no images left after method={method}, views={views}")
    exists = frame["image"].map(lambda p: (base / p).is_file() or (base / p).is_symlink()).to_numpy()
    if not exists.all():
        if missing_rule == "error":
            raise CxrlabError(f"{path}: {int((~exists).sum())} images listed but not found under {base} (first: "
                              f"{frame.loc[~exists, 'image'].iloc[0]}); -o missing=skip reads the rest")
        log.warning("%s: %d of %d listed images are not on disk and are skipped (missing=skip)", path,
                    int((~exists).sum()), len(frame))
        frame = frame[exists].reset_index(drop=True)
    dup = frame["image"].duplicated()
    if dup.any():
        raise CxrlabError(f"{path}: image {frame.loc[dup, 'image'].iloc[0]!r} listed twice")
    return Manifest(frame=frame, root=base, labels=labels, task="multilabel", origin=str(path))
