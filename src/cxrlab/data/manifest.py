"""The Manifest: one row per image, the contract between sources and the rest.

Columns of ``Manifest.frame``: ``image`` (path relative to ``root``),
``patient``, ``view`` (PA/AP/LATERAL or empty), ``split`` (train/val/test),
and one float column per label with 1, 0, -1 (uncertain) or NaN (not
mentioned).  ``split_method`` says how the split was made.  ``boxes`` (optional) has ``image, label, x, y, w, h`` in the
pixel coordinates of the original image; ``image_sizes`` maps image -> (w, h)
where the source knows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError

BASE_COLUMNS = ("image", "patient", "view", "split")
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
