"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019) in its published layout.

Disk layout under ``root``::

    train-rle.csv                      ImageId, " EncodedPixels" (the header has a leading space)
    dicom-images-train/<study>/<series>/<ImageId>.dcm

(``stage_2_train.csv``, the stage-2 copy with ``EncodedPixels`` unspaced, is read the same way.)
One row per mask: an image with several pneumothorax regions has several rows, one without any has one
row ``-1``.  Label ``Pneumothorax`` = the image has at least one mask (1) or only ``-1`` (0); no
uncertain labels.  Patient, sex, age and view come from the DICOM headers (``PatientID``,
``PatientSex``, ``PatientAge``, ``ViewPosition``); the images are NIH ChestX-ray14 images.  There is
no official split with labels: :func:`cxrlab.data.sources.load_source` splits by patient.

Masks: the competition's relative run-length code (its ``mask_functions.py``: ``rle2mask`` then
``.T``): pairs ``(offset, length)`` where each offset counts from the END of the previous run (the
first from pixel 0), over the COLUMN-major flattened image (transposed relative to numpy's row-major
order).  :func:`siim_rle_decode` / :func:`siim_rle_encode` are that code; every mask is checked
against its image's size at read time (one error naming the CSV line), and each mask row becomes one
box (``Manifest.boxes``, for ``cxrlab localize``).  :func:`siim_masks` gives the masks as a
:class:`~cxrlab.data.masks.MaskSet` (structure ``Pneumothorax``, the union of an image's rows), and
:func:`cxrlab.data.masks.read_masks` reads ``ROOT/train-rle.csv`` the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest, normalize_age, normalize_sex
from cxrlab.data.masks import MaskSet, RunCode, _collect, _Mask, _paint, _runs, parse_runs
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

LABEL = "Pneumothorax"
RLE_FILES = ("train-rle.csv", "stage_2_train.csv", "siim-pneumothorax-train-rle.csv")
NONE = "-1"


# --- the competition's run-length code -------------------------------------------------------


def siim_rle_encode(mask: np.ndarray) -> str:
    """A 2-D mask as the competition wrote it: relative ``offset length`` pairs, column-major; ``-1`` if empty.

    The competition's own ``mask2rle`` drops a run that reaches the image's last pixel; this one
    keeps it (``siim_rle_decode`` reads both).
    """
    starts, lengths = _runs(np.asarray(mask).astype(bool).ravel(order="F"))
    if not len(starts):
        return NONE
    ends = starts + lengths
    offsets = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{o} {n}" for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True))


#: The competition's code: offsets from the previous run's end; empty as ``-1``.
SIIM_RUNS = RunCode(
    name="EncodedPixels", relative=True, empty=(NONE, ""), pair="offset length", cut="", min_length=1,
    bad_run="has a negative offset or a length below 1",
    too_long="does not fit the {w}x{h} image: its runs end at pixel {end} of {n}")


def _absolute(rle: str, height: int, width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """0-based absolute starts and lengths (column-major) of a relative code; checked against the size."""
    return parse_runs(rle, height, width, where, SIIM_RUNS)


def siim_rle_decode(rle: str, height: int, width: int, *, where: str = "mask") -> np.ndarray:
    """Inverse of :func:`siim_rle_encode`: a bool ``(height, width)`` mask (``-1``: empty).

    Raises:
        CxrlabError: not pairs of integers, or runs past ``height * width`` (``where`` names the row).
    """
    starts, lengths = _absolute(rle, height, width, where)
    return _paint(starts, lengths, height * width).reshape((height, width), order="F")


def rle_box(rle: str, height: int, width: int, where: str = "mask") -> tuple[float, float, float, float]:
    """The box ``(x, y, w, h)`` (pixels of the image) around one mask, from its runs without decoding it."""
    starts, lengths = _absolute(rle, height, width, where)
    last = starts + lengths - 1
    col0, col1 = starts // height, last // height
    one_col = col0 == col1
    y0 = np.where(one_col, starts % height, 0).min()
    y1 = np.where(one_col, last % height, height - 1).max()
    x0, x1 = int(col0.min()), int(col1.max())
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)


# --- the tables -------------------------------------------------------------------------------


def find_rle_csv(root: Path) -> Path:
    for name in RLE_FILES:
        for p in (root / name, root / f"{name}.gz"):
            if p.is_file():
                return p
    raise CxrlabError(f"{root}: no mask table found (looked for {', '.join(RLE_FILES)})")


def read_rle_csv(path: Path) -> pd.DataFrame:
    """The mask table: ``image`` (ImageId), ``rle`` and ``line`` (the CSV line, for errors)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read CSV ({e})") from None
    cols = {c.strip(): c for c in raw.columns}
    missing = [c for c in ("ImageId", "EncodedPixels") if c not in cols]
    if missing:
        raise CxrlabError(f"{path}: missing columns {missing} (columns: {', '.join(map(repr, raw.columns))}); "
                          "expected ImageId and ' EncodedPixels'")
    table = pd.DataFrame({"image": raw[cols["ImageId"]].str.strip(), "rle": raw[cols["EncodedPixels"]].str.strip(),
                          "line": np.arange(2, len(raw) + 2)})
    blank = table[table["rle"] == ""]
    if len(blank):  # neither a mask nor the competition's "-1" (no pneumothorax): say which, never guess
        first = blank.iloc[0]
        raise CxrlabError(f"{path}:{first['line']} ({first['image']}): EncodedPixels is empty ({len(blank)} such "
                          f"rows); the competition writes {NONE} for an image without pneumothorax")
    return table


def dicom_index(root: Path) -> dict[str, Path]:
    """ImageId -> its DICOM file, over the whole tree (``dicom-images-train/<study>/<series>/``)."""
    return {p.stem: p for p in sorted(root.rglob("*.dcm"))}


def read_headers(paths: list[Path]) -> pd.DataFrame:
    """PatientID, PatientSex, PatientAge, ViewPosition, Rows, Columns of each DICOM (no pixels read)."""
    import pydicom

    tags = ["PatientID", "PatientSex", "PatientAge", "ViewPosition", "Rows", "Columns"]
    rows = []
    for p in paths:
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=tags)
        except Exception as e:  # pydicom raises many types for a broken header
            raise CxrlabError(f"{p}: not a readable DICOM header ({type(e).__name__}: {e})") from None
        if "Rows" not in ds or "Columns" not in ds:
            raise CxrlabError(f"{p}: DICOM header has no Rows/Columns")
        rows.append([str(ds.get(t, "") or "") for t in tags[:4]] + [int(ds.Rows), int(ds.Columns)])
    return pd.DataFrame(rows, columns=tags)


def _tables(root: Path) -> tuple[Path, pd.DataFrame, dict[str, Path]]:
    csv_path = find_rle_csv(root)
    table = read_rle_csv(csv_path)
    if table.empty:
        raise CxrlabError(f"{csv_path}: no rows")
    index = dicom_index(root)
    if not index:
        raise CxrlabError(f"{root}: no DICOM files (*.dcm) under {root} (expected dicom-images-train/...)")
    lost = ~table["image"].isin(list(index))
    if lost.any():
        r = table[lost].iloc[0]
        raise CxrlabError(f"{csv_path}:{r['line']}: image {r['image']} has no DICOM file under {root} "
                          f"({int(lost.sum())} rows like it)")
    return csv_path, table, index


def _masks_raw(csv_path: Path, table: pd.DataFrame, sizes: dict[str, tuple[int, int]],
               names: dict[str, str]) -> Iterator[tuple[str, str, Any]]:
    """One mask per image (the union of its rows), named by its DICOM path relative to the root: an
    ImageId's dots would read as a suffix when masks are matched by name."""
    for image, rows in table[table["rle"] != NONE].groupby("image", sort=True):
        h, w = sizes[image]

        def load(rows: pd.DataFrame = rows, h: int = h, w: int = w) -> _Mask:
            m = np.zeros((h, w), bool)
            for rle, line in zip(rows["rle"], rows["line"], strict=True):
                m |= siim_rle_decode(rle, h, w, where=f"{csv_path}:{line} ({rows['image'].iloc[0]})")
            return _Mask.of(m)

        yield names[image], LABEL, load


def siim_masks(spec: str | Path, image_ids: list[str] | None = None) -> MaskSet:
    """The pneumothorax masks of a SIIM tree (``root`` or its mask CSV) as a :class:`MaskSet`.

    Image sizes come from the DICOM headers beside the CSV (the code does not carry them).
    """
    spec = Path(spec)
    root = spec if spec.is_dir() else spec.parent
    csv_path, table, index = _tables(root) if spec.is_dir() else (spec, read_rle_csv(spec), dicom_index(root))
    if not spec.is_dir():
        lost = sorted(set(table["image"]) - set(index))
        if lost:
            raise CxrlabError(f"{spec}: {len(lost)} images have no DICOM file under {root} (first: {lost[0]}); "
                              "the masks need the image sizes from the DICOM headers")
    heads = read_headers([index[i] for i in sorted(set(table["image"]))])
    sizes = dict(zip(sorted(set(table["image"])), zip(heads["Rows"], heads["Columns"], strict=True), strict=True))
    names = {i: str(index[i].relative_to(root)) for i in sizes}
    return _collect(_masks_raw(csv_path, table, sizes, names), str(csv_path), image_ids)


def is_siim_csv(path: Path) -> bool:
    """Whether a CSV's header is SIIM's (``ImageId`` and ``EncodedPixels``, spaces aside)."""
    try:
        with open(path, newline="") as f:
            head = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    names = {c.strip() for c in head}
    return {"ImageId", "EncodedPixels"} <= names


@register_source("siim")
def siim(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read SIIM-ACR Pneumothorax at ``root``: one row per DICOM listed in the mask table."""
    check_options("siim", options or {}, set())
    if labels not in (None, [LABEL]):
        raise CxrlabError(f"siim: the only label is {LABEL!r}, got {labels}")
    base = Path(root)
    if not base.is_dir():
        raise CxrlabError(f"{base}: dataset folder not found")
    csv_path, table, index = _tables(base)
    images = sorted(set(table["image"]))
    heads = read_headers([index[i] for i in images])
    sizes = dict(zip(images, zip(heads["Rows"], heads["Columns"], strict=True), strict=True))
    mixed = table.groupby("image")["rle"].agg(lambda s: (s == NONE).any() and (s != NONE).any())
    if mixed.any():
        first = mixed[mixed].index[0]
        line = table.loc[(table["image"] == first) & (table["rle"] == NONE), "line"].iloc[0]
        raise CxrlabError(f"{csv_path}:{line}: image {first} has -1 (no pneumothorax) and a mask in other rows")
    boxes = []
    for image, rle, line in table[table["rle"] != NONE][["image", "rle", "line"]].itertuples(index=False):
        h, w = sizes[image]
        boxes.append((str(index[image].relative_to(base)), LABEL,
                      *rle_box(rle, h, w, where=f"{csv_path}:{line} ({image})")))
    positive = set(table.loc[table["rle"] != NONE, "image"])
    lines = np.arange(len(images)) + 2
    frame = pd.DataFrame({
        "image": [str(index[i].relative_to(base)) for i in images],
        "patient": [p or i for p, i in zip(heads["PatientID"], images, strict=True)],
        "view": heads["ViewPosition"].str.strip().str.upper().to_numpy(),
        "split": "",
        "source": "siim",
        "age": normalize_age(heads["PatientAge"], f"{base} (DICOM headers)", "PatientAge", lines).to_numpy(),
        "sex": normalize_sex(heads["PatientSex"].replace("O", ""), f"{base} (DICOM headers)", "PatientSex",
                             lines).to_numpy(),
        "site": "",
        LABEL: np.array([float(i in positive) for i in images], np.float32),
    })
    box_frame = pd.DataFrame(boxes, columns=["image", "label", "x", "y", "w", "h"])
    return Manifest(frame=frame, root=base, labels=[LABEL], task="multilabel", boxes=box_frame,
                    image_sizes={str(index[i].relative_to(base)): (w, h) for i, (h, w) in sizes.items()},
                    origin=str(csv_path))
