"""The Manifest: one row per image, the contract between sources and the rest.

Columns of ``Manifest.frame``: ``image`` (path relative to ``root``),
``patient``, ``view`` (PA/AP/LATERAL or empty), ``split`` (train/val/test),
and one float column per label with 1, 0, -1 (uncertain) or NaN (not
mentioned).  ``split_method`` says how the split was made.  ``boxes`` (optional) has ``image, label, x, y, w, h`` in the
pixel coordinates of the original image; ``image_sizes`` maps image -> (w, h)
where the source knows it.

Every manifest also carries the demographic columns :data:`DEMOGRAPHICS` (filled by
:func:`cxrlab.data.sources.load_source` where a source does not): ``source`` (the source name),
``age`` (float years, NaN unknown), ``sex`` (``M``, ``F`` or empty) and ``site`` (hospital or
institution where the source knows one, else empty), so later analyses (subgroups, external
validation) read them from the prediction tables instead of re-reading each dataset's CSV.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

BASE_COLUMNS = ("image", "patient", "view", "split")
DEMOGRAPHICS = ("source", "age", "sex", "site")
"""Columns every loaded manifest keeps beside the base ones (and prediction tables carry)."""
SPLITS = ("train", "val", "test")


@dataclass
class Manifest:
    """One dataset as rows of images: what every source returns and all later code reads.

    The contract that lets a new source plug in (``docs/extending.md``): the columns of the
    module docstring, checked here (missing columns and duplicate image ids are errors).
    ``task`` is ``multilabel``, ``binary`` or ``multiclass`` (:mod:`cxrlab.models.task`);
    ``labels`` orders the label columns and so the model's outputs.
    """

    frame: pd.DataFrame
    root: Path
    labels: list[str]
    task: str = "multilabel"
    boxes: pd.DataFrame | None = None
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    split_method: str = ""
    """How the splits were made, in words (set by :func:`cxrlab.data.sources.complete_splits`)."""
    origin: str = ""
    """The file (or folder) the rows were read from, named in errors about them (default: ``root``)."""
    absent: dict[str, list[str]] = field(default_factory=dict)
    """Label -> the ``source`` values whose images lack it (several sources in one run): their NaN
    means "not in this dataset", kept NaN by the label policy (no loss, not counted), never 0."""

    def __post_init__(self) -> None:
        missing = [c for c in (*BASE_COLUMNS, *self.labels) if c not in self.frame.columns]
        if missing:
            raise CxrlabError(f"manifest is missing columns {missing}")
        dup = self.frame["image"].duplicated()
        if dup.any():
            shown = list(dict.fromkeys(self.frame.loc[dup, "image"]))
            more = f", ... ({len(shown) - 3} more)" if len(shown) > 3 else ""
            raise CxrlabError(f"{self.origin or self.root}: {int(dup.sum())} duplicate image ids, one image "
                              f"listed more than once ({', '.join(map(str, shown[:3]))}{more})")

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """Label matrix (N, L) as float32 with the manifest's label encoding."""
        return frame[self.labels].to_numpy(dtype=np.float32)

    def absent_mask(self, frame: pd.DataFrame) -> np.ndarray | None:
        """(N, L) True where the image's source lacks the label (:attr:`absent`); None when none does."""
        if not self.absent:
            return None
        source = frame["source"].to_numpy() if "source" in frame.columns else np.full(len(frame), "")
        return np.stack([np.isin(source, self.absent.get(lab, [])) for lab in self.labels], axis=1)

    def paths(self, frame: pd.DataFrame) -> list[Path]:
        return [self.root / p for p in frame["image"]]


def numeric_labels(raw: pd.DataFrame, labels: list[str], origin: object) -> pd.DataFrame:
    """Label columns as float32 in {1, 0, -1, NaN}; any other value is an error naming it."""
    values = raw[labels].apply(pd.to_numeric, errors="coerce")
    bad = (values.notna() & ~values.isin([1.0, 0.0, -1.0])) | (raw[labels].notna() & values.isna())
    if bad.any().any():
        col = bad.any().idxmax()
        row = int(bad[col].to_numpy().argmax())
        v = raw[col].iloc[row]
        shown = repr(v) if isinstance(v, str) else f"{float(v):g}"
        raise CxrlabError(f"{origin}: column {col!r} holds {shown} (row {row + 2}); expected 1, 0, -1 or blank")
    return values.astype(np.float32)


_SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "": "", "u": "", "unknown": "", "o": "", "other": "",
        "nan": "", "none": ""}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YyMmWwDd]?)\s*$")  # 58, 58.5, DICOM's 058Y / 006M
_AGE_UNIT = {"": 1.0, "y": 1.0, "m": 12.0, "w": 52.0, "d": 365.0}
MAX_AGE = 120.0
"""Older ages are treated as unknown (NIH's Data_Entry holds a few, e.g. 414), with a warning."""


def normalize_sex(values: pd.Series, origin: object, column: str, rows: np.ndarray | None = None) -> pd.Series:
    """Sex as ``M``, ``F`` or empty (unknown); any other value is one error naming file, column and row.

    ``rows`` are the CSV line numbers of the values (default: position + 2, under one header line).
    """
    raw = values.fillna("").astype(str).str.strip()
    out = raw.str.lower().map(_SEX)
    bad = out.isna().to_numpy()
    if bad.any():
        i = int(bad.argmax())
        line = int(rows[i]) if rows is not None else i + 2
        raise CxrlabError(f"{origin}: column {column!r} holds {raw.iloc[i]!r} (line {line}); expected M, F, "
                          "Male, Female or blank")
    return out.astype(str)


def normalize_age(values: pd.Series, origin: object, column: str, rows: np.ndarray | None = None) -> pd.Series:
    """Age in years as float (NaN unknown); a value that is no age is one error naming file, column and row.

    Accepts numbers and DICOM age strings (``058Y``, ``006M``); ages above :data:`MAX_AGE` (data-entry
    errors) become NaN with one warning counting them.
    """
    raw = values.fillna("").astype(str).str.strip()
    parts = raw.str.extract(_AGE)
    bad = (raw != "").to_numpy() & parts[0].isna().to_numpy()
    if bad.any():
        i = int(bad.argmax())
        line = int(rows[i]) if rows is not None else i + 2
        raise CxrlabError(f"{origin}: column {column!r} holds {raw.iloc[i]!r} (line {line}); expected an age in "
                          "years (a number, or 058Y) or blank")
    years = parts[0].astype(float) / parts[1].fillna("").str.lower().map(_AGE_UNIT).astype(float)
    old = (years > MAX_AGE).to_numpy()
    if old.any():
        log.warning("%s: %d ages above %g years in column %r treated as unknown (first: %s)", origin,
                    int(old.sum()), MAX_AGE, column, raw[old].iloc[0])
        years[old] = np.nan
    return years.astype(np.float64).set_axis(values.index)


def with_demographics(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` with every :data:`DEMOGRAPHICS` column present (``source`` filled where empty)."""
    frame = frame.copy()
    if "source" not in frame.columns:
        frame["source"] = source
    else:
        frame["source"] = frame["source"].fillna("").astype(str).replace("", source)
    if "age" not in frame.columns:
        frame["age"] = np.nan
    frame["age"] = frame["age"].astype(np.float64)
    for col in ("sex", "site"):
        frame[col] = frame[col].fillna("").astype(str) if col in frame.columns else ""
    return frame
