"""MIMIC-CXR-JPG (Johnson et al. 2019; PhysioNet, versions 2.0.0 and 2.1.0) in its published layout.

Disk layout: ``root`` is the unpacked folder (``physionet.org/files/mimic-cxr-jpg/2.0.0/``)::

    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
    mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, 14 observations (CheXpert labeller)
    mimic-cxr-2.0.0-negbio.csv(.gz)     the same columns from the NegBio labeller
    mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.1.0-test-set-labeled.csv  (2.1.0 only) radiologists' labels of the test studies

An image is ``files/p<first two digits of subject>/p<subject>/s<study>/<dicom_id>.jpg`` (as
torchxrayvision's ``MIMIC_Dataset`` builds it).  Labels are per *study*: every image of a study gets
its study's row, 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned), kept as
1/0/-1/NaN for the uncertainty policy (``data.uncertain``).  A study without a label row (the
labellers skipped a few hundred) has NaN labels, counted in a warning.  ``patient`` is the subject,
``view`` the metadata's ``ViewPosition`` (PA, AP, LATERAL, LL, ...; blank where missing), ``split``
the official split (``validate`` -> ``val``).  MIMIC-CXR-JPG holds no age or sex (they are in
MIMIC-IV's ``patients`` table): ``age``/``sex`` stay unknown unless ``patients`` names that file.

Options: ``labeller`` = ``chexpert`` (default) | ``negbio``; ``test_labels`` = ``labeller``
(default) | ``radiologist`` (2.1.0: the test studies take the radiologists' labels from
``mimic-cxr-2.1.0-test-set-labeled.csv``; studies it lacks keep NaN); ``views`` = ``all`` |
``frontal`` | ``lateral``; ``patients`` = MIMIC-IV ``patients.csv(.gz)`` (``subject_id``,
``gender``, ``anchor_age``; the age is the anchor age, not the age at the study).
The default labels are the 5 CheXpert competition labels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex, numeric_labels
from cxrlab.data.sources import check_options, register_source
from cxrlab.data.sources.chexpert import observation_setup
from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0"
TABLES = {"metadata": f"{PREFIX}-metadata.csv", "chexpert": f"{PREFIX}-chexpert.csv",
          "negbio": f"{PREFIX}-negbio.csv", "split": f"{PREFIX}-split.csv"}
RADIOLOGIST = "mimic-cxr-2.1.0-test-set-labeled.csv"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
_FRONTAL = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
_OPTIONS = {"labeller", "test_labels", "views", "patients"}


def find_table(base: Path, name: str, required: bool = True) -> Path | None:
    """``name`` or ``name.gz`` under ``base`` (PhysioNet ships the tables gzipped)."""
    for p in (base / name, base / f"{name}.gz"):
        if p.is_file():
            return p
    if required:
        raise CxrlabError(f"{base}: {name}(.gz) not found")
    return None


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """One MIMIC table; a missing column or an unreadable file is one line naming it."""
    try:
        raw = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing}")
    for c in ("subject_id", "study_id"):
        if c in columns:
            ids = pd.to_numeric(raw[c], errors="coerce")
            if ids.isna().any():
                row = int(ids.isna().to_numpy().argmax())
                raise CxrlabError(f"{path}: column {c!r} holds {raw[c].iloc[row]!r} (row {row + 2}); "
                                  "expected an integer id")
            raw[c] = ids.astype(np.int64)
    return raw


def _study_labels(path: Path, labels: list[str], ids: tuple[str, ...] = ("subject_id", "study_id")) -> pd.DataFrame:
    """Per-study label values (index ``study_id``); a study listed twice is an error naming it."""
    raw = read_table(path, (*ids, *labels))
    dup = raw["study_id"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise CxrlabError(f"{path}: study {raw['study_id'].iloc[row]} listed twice (row {row + 2})")
    values = numeric_labels(raw, labels, path)
    values.index = raw["study_id"].to_numpy()
    return values


def _labelled(frame: pd.DataFrame, table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    joined = table.reindex(frame["study_id"].to_numpy())
    joined.index = frame.index
    return joined[labels]


def _patients(path_text: str, subjects: pd.Series) -> tuple[pd.Series, pd.Series]:
    path = Path(path_text)
    if not path.is_file():
        raise CxrlabError(f"data.options.patients: {path} not found")
    raw = read_table(path, ("subject_id", "gender", "anchor_age")).drop_duplicates("subject_id")
    raw = raw.set_index("subject_id")
    rows = np.arange(len(raw)) + 2
    sex = normalize_sex(raw["gender"], path, "gender", rows)
    age = normalize_age(raw["anchor_age"], path, "anchor_age", rows)
    return subjects.map(age).astype(np.float64), subjects.map(sex).fillna("").astype(str)


def image_path(subject: int, study: int, dicom_id: str) -> str:
    """Where MIMIC-CXR-JPG stores an image, relative to ``root``."""
    s = str(subject)
    return f"files/p{s[:2]}/p{s}/s{study}/{dicom_id}.jpg"


@register_source("mimic")
def mimic(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("mimic", options, _OPTIONS)
    labeller = options.get("labeller", "chexpert")
    if labeller not in ("chexpert", "negbio"):
        raise CxrlabError(f"data.options.labeller: {labeller!r}; expected chexpert or negbio")
    test_labels = options.get("test_labels", "labeller")
    if test_labels not in ("labeller", "radiologist"):
        raise CxrlabError(f"data.options.test_labels: {test_labels!r}; expected labeller or radiologist")
    views, base, labels = observation_setup("mimic", root, labels, options)

    meta_path = find_table(base, TABLES["metadata"])
    meta = read_table(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    dup = meta["dicom_id"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise CxrlabError(f"{meta_path}: dicom_id {meta['dicom_id'].iloc[row]!r} listed twice (row {row + 2})")
    split_path = find_table(base, TABLES["split"])
    split = read_table(split_path, ("dicom_id", "split")).set_index("dicom_id")["split"]
    bad = ~split.isin(list(SPLITS))
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise CxrlabError(f"{split_path}: split {split.iloc[row]!r} (row {row + 2}); expected train, validate or test")
    missing = ~meta["dicom_id"].isin(split.index)
    if missing.any():
        row = int(missing.to_numpy().argmax())
        raise CxrlabError(f"{meta_path}: dicom_id {meta['dicom_id'].iloc[row]!r} (row {row + 2}) is not in "
                          f"{split_path.name}")

    frame = pd.DataFrame({
        "image": [image_path(a, b, c) for a, b, c in zip(meta["subject_id"], meta["study_id"], meta["dicom_id"], strict=True)],
        "patient": "p" + meta["subject_id"].astype(str), "study": "s" + meta["study_id"].astype(str),
        "view": meta["ViewPosition"].fillna("").astype(str).str.upper(),
        "split": meta["dicom_id"].map(split).map(SPLITS).to_numpy(), "source": "mimic",
        "age": np.nan, "sex": "", "site": "", "study_id": meta["study_id"]})
    table = _study_labels(find_table(base, TABLES[labeller]), labels)
    values = _labelled(frame, table, labels)
    if test_labels == "radiologist":
        rad_path = find_table(base, RADIOLOGIST)
        rad = _labelled(frame, _study_labels(rad_path, labels, ids=("study_id",)), labels)
        test = (frame["split"] == "test").to_numpy()
        values.loc[test] = rad.loc[test].to_numpy()
        log.info("%s: %d test images take the radiologists' labels", rad_path, int(test.sum()))
    unlabelled = ~frame["study_id"].isin(table.index)
    if unlabelled.any():
        log.warning("%s: %d images (%d studies) have no row in the %s labels: their labels are NaN (not "
                    "mentioned)", base, int(unlabelled.sum()), frame.loc[unlabelled, "study_id"].nunique(), labeller)
    if options.get("patients"):
        frame["age"], frame["sex"] = _patients(str(options["patients"]), meta["subject_id"])
    frame = pd.concat([frame.drop(columns=["study_id"]), values.astype(np.float32)], axis=1)
    if views != "all":
        frontal = frame["view"].isin(_FRONTAL)
        keep = frontal if views == "frontal" else frame["view"].isin(("LATERAL", "LL", "RL"))
        frame = frame[keep.to_numpy()].reset_index(drop=True)
    if len(frame) == 0:
        raise CxrlabError(f"{meta_path}: no images left after the views={views} filter")
    exists = frame["image"].map(lambda p: (base / p).is_file() or (base / p).is_symlink())
    if not exists.all():
        miss = frame.loc[~exists, "image"]
        raise CxrlabError(f"{meta_path}: {len(miss)} images listed but not found under {base} "
                          f"(first: {miss.iloc[0]})")
    return Manifest(frame=frame, root=base, labels=labels, task="multilabel", origin=str(meta_path))
