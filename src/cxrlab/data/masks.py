"""Masks as annotations: binary masks per image and structure, in original image pixels.

Boxes say roughly where a finding is; masks say exactly which pixels are lung,
heart or lesion, which is what "the share of the map inside the lungs" needs.
A :class:`MaskSet` holds them per image id and structure, compressed as runs
(a 1024 px lung mask is a few hundred numbers, so the masks of a whole test set
fit in memory), and decodes one on :meth:`MaskSet.get`.  Masks stay in the
pixels of the original image; :meth:`cxrlab.data.preprocess.Geometry.mask_to_model`
maps one into model pixels exactly as boxes are mapped (letterbox included).

Structures: :data:`STRUCTURES` (anatomy, names normalised: ``Left Lung`` ->
``left_lung``; ``lungs`` is the union of both lungs when only they are given)
plus finding names (``Nodule``, CheXlocalize's ``Airspace Opacity``), kept as written.
Left and right are the patient's: on a PA view the right lung is on the image's left.

:func:`read_masks` reads three formats (``docs/data.md``):

* a folder of binary PNG masks, ``<structure>/<image>.png`` (subfolders mirroring the
  image paths allowed) or flat ``<image stem>_<structure>.png`` for the anatomy names;
* a CheXmask-style CSV (Gaggion et al. 2024): an image id column, ``Left Lung``,
  ``Right Lung``, ``Heart`` as run-length strings (:func:`rle_encode`), ``Height``, ``Width``;
* SIIM-ACR's ``train-rle.csv`` (:mod:`cxrlab.data.sources.siim`; sizes from the DICOMs beside it) and
  Montgomery's ``ManualMask/`` folder (:func:`cxrlab.data.sources.nlmtb.montgomery_masks`);
* a COCO RLE JSON: CheXlocalize's ``{image id: {finding: {"size": [h, w], "counts": ...}}}``
  or a COCO dataset (``images``, ``annotations`` with RLE ``segmentation``, ``categories``);
  compressed (string) and uncompressed (list) counts, decoded here (no pycocotools).

Image ids are matched by name: a mask named ``00000001_000`` fits the image
``images/00000001_000.png``; a longer path fits by its trailing folders
(``patient1/study1/view1_frontal`` or CheXlocalize's ``patient1_study1_view1_frontal``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)

#: Anatomical structures (plus finding names for lesion masks).
STRUCTURES: tuple[str, ...] = ("left_lung", "right_lung", "lungs", "heart")

#: CheXmask's column of each structure.
CHEXMASK_COLUMNS: dict[str, str] = {"Left Lung": "left_lung", "Right Lung": "right_lung", "Heart": "heart"}

#: Image id columns of the CheXmask CSVs (they differ per dataset) and of cxrlab's own tables.
ID_COLUMNS: tuple[str, ...] = ("Image Index", "Path", "dicom_id", "ImageID", "Image ID", "image_id", "image")

_MASK_SUFFIXES = (".png",)


def structure_name(name: str) -> str:
    """``Left Lung`` / ``left-lung`` / ``LeftLung`` -> ``left_lung``; other names (findings) unchanged."""
    key = re.sub(r"[^a-z]", "", name.lower())
    for s in STRUCTURES:
        if key == s.replace("_", ""):
            return s
    return name


# --- run-length codes -------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> str:
    """CheXmask's run-length string of a 2-D mask: ``"start length start length ..."``.

    Starts are 1-based positions in the row-major (C-order) flattened mask, each
    followed by the length of its run of foreground pixels; an empty mask is ``""``.
    This is the code of CheXmask's ``get_RLE_from_mask`` (``DataPostprocessing/utils.py``).
    """
    starts, lengths = _runs(np.asarray(mask).astype(bool).ravel(order="C"))
    return " ".join(f"{s + 1} {n}" for s, n in zip(starts.tolist(), lengths.tolist(), strict=True))


def rle_decode(rle: str, height: int, width: int, *, where: str = "mask") -> np.ndarray:
    """Inverse of :func:`rle_encode`: a bool ``(height, width)`` mask.

    Raises:
        CxrlabError: not pairs of integers, a start before 1, or a run past ``height * width``.
    """
    starts, lengths = _parse_rle(rle, height, width, where)
    return _paint(starts, lengths, height * width).reshape(height, width)


@dataclass(frozen=True)
class RunCode:
    """One convention of "position length" run-length pairs, and how its mistakes are worded.

    CheXmask and SIIM write masks as the same kind of pairs but count the position
    differently and name the code differently in their files; one parser with the
    convention as data keeps their checks from drifting apart while each reader's
    error lines stay its own (users grep for them).

    Attributes:
        name: what the code is called in messages (``run-length code``, ``EncodedPixels``).
        relative: positions count from the end of the previous run (SIIM); else they are
            absolute 1-based starts (CheXmask).
        empty: lower-case spellings of an empty mask.
        pair: the pair's words in the odd-count message (``start length``).
        cut: what follows the quoted text in the not-integers message.
        min_length: the shortest run allowed.
        bad_run: the message when a position or length is out of range.
        too_long: the message when the runs pass the image (``{w} {h} {end} {n}`` filled in).
    """

    name: str
    relative: bool
    empty: tuple[str, ...]
    pair: str
    cut: str
    min_length: int
    bad_run: str
    too_long: str


#: CheXmask's code: absolute 1-based starts, row-major; empty as ``""`` or a pandas ``nan``.
CHEXMASK_RUNS = RunCode(
    name="run-length code", relative=False, empty=("", "nan"), pair="start length", cut="...", min_length=0,
    bad_run="has a start below 1 or a negative length",
    too_long="runs past the {w}x{h} image it is given for (a run ends at pixel {end} of {n}): wrong Height/Width?")


def parse_runs(rle: str, height: int, width: int, where: str, code: RunCode) -> tuple[np.ndarray, np.ndarray]:
    """0-based absolute starts and lengths of a run-length string in ``code``'s convention.

    The order of the flattening (row- or column-major) is the caller's; this only reads
    the pairs and checks them against ``height * width``.

    Raises:
        CxrlabError: not pairs of integers, a position or length out of range, or runs past the image.
    """
    text = str(rle).strip()
    if text.lower() in code.empty:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        runs = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise CxrlabError(f"{where}: {code.name} is not a list of integers ({text[:40]!r}{code.cut})") from None
    if len(runs) % 2:
        raise CxrlabError(f"{where}: {code.name} has an odd number of values ({len(runs)}); expected "
                          f"'{code.pair}' pairs")
    positions, lengths = runs[0::2], runs[1::2]
    starts = positions if code.relative else positions - 1
    if (starts < 0).any() or (lengths < code.min_length).any():
        raise CxrlabError(f"{where}: {code.name} {code.bad_run}")
    if code.relative:
        starts = np.cumsum(positions + lengths) - lengths
    end = int((starts + lengths).max()) if len(starts) else 0
    if end > height * width:
        raise CxrlabError(f"{where}: {code.name} " + code.too_long.format(w=width, h=height, end=end, n=height * width))
    return starts, lengths


def _parse_rle(rle: str, height: int, width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    return parse_runs("" if rle is None else rle, height, width, where, CHEXMASK_RUNS)


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based starts and lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flat, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[0::2].astype(np.int64), (edges[1::2] - edges[0::2]).astype(np.int64)


def _paint(starts: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    d = np.zeros(n + 1, np.int32)
    np.add.at(d, starts, 1)
    np.add.at(d, starts + lengths, -1)
    return np.cumsum(d[:n]) > 0


def coco_rle_decode(rle: dict[str, Any], *, where: str = "mask") -> np.ndarray:
    """A COCO RLE (``{"size": [h, w], "counts": str | list}``) -> bool ``(h, w)`` mask.

    COCO counts alternate background and foreground run lengths, starting with
    background, over the column-major (Fortran-order) flattened mask; a string is
    pycocotools' compressed form (``maskApi.c`` ``rleFrString``: 5 bits a character,
    offset 48, each count after the second stored as the difference to the count two back).
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise CxrlabError(f"{where}: not a COCO RLE (expected {{'size': [h, w], 'counts': ...}})") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    cnts = _coco_counts_from_string(counts, where) if isinstance(counts, str) else np.asarray(counts, np.int64)
    if (cnts < 0).any():
        raise CxrlabError(f"{where}: COCO RLE has a negative count")
    if int(cnts.sum()) != h * w:
        raise CxrlabError(f"{where}: COCO RLE counts add up to {int(cnts.sum())} pixels, its size "
                          f"{w}x{h} has {h * w}: wrong size or a broken code")
    ends = np.cumsum(cnts)
    starts = np.concatenate([[0], ends[:-1]])
    fg = slice(1, None, 2)
    flat = _paint(starts[fg], cnts[fg], h * w)
    return flat.reshape((h, w), order="F")


def coco_rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """A bool mask -> compressed COCO RLE ``{"size": [h, w], "counts": str}`` (as pycocotools writes)."""
    m = np.asarray(mask).astype(bool)
    flat = m.ravel(order="F")
    starts, lengths = _runs(flat)
    cnts: list[int] = []
    pos = 0
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        cnts += [s - pos, n]
        pos = s + n
    if pos < flat.size or not cnts:
        cnts.append(flat.size - pos)
    out = []
    for i, c in enumerate(cnts):
        x = c - cnts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": "".join(out)}


def _coco_counts_from_string(s: str, where: str) -> np.ndarray:
    cnts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise CxrlabError(f"{where}: COCO RLE string ends inside a count")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise CxrlabError(f"{where}: COCO RLE string has a character out of range ({s[p]!r})")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return np.asarray(cnts, np.int64)


# --- the set ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mask:
    """One mask as runs over the row-major flattened (height, width) grid."""

    height: int
    width: int
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Mask:
        starts, lengths = _runs(np.asarray(mask, bool).ravel(order="C"))
        return cls(int(mask.shape[0]), int(mask.shape[1]), starts, lengths)

    def empty(self) -> bool:
        return int(self.lengths.sum()) == 0

    def decode(self) -> np.ndarray:
        return _paint(self.starts, self.lengths, self.height * self.width).reshape(self.height, self.width)


@dataclass
class MaskSet:
    """Binary masks per image id and structure, in ORIGINAL image pixels.

    ``left_out`` counts what the reader did not keep, by reason (masks of images not
    in the set, empty masks, ...): users often have masks for part of a set or for
    more images than they evaluate, and a count beats a silent drop.
    """

    masks: dict[str, dict[str, _Mask]] = field(default_factory=dict)
    source: str = ""
    left_out: dict[str, int] = field(default_factory=dict)
    _index: _Names | None = field(default=None, repr=False)

    def ids(self) -> list[str]:
        """Image ids with at least one mask (the set's ids when ``image_ids`` were given)."""
        return sorted(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def _key(self, image_id: str) -> str | None:
        if image_id in self.masks:
            return image_id
        if self._index is None:
            self._index = _Names(self.masks)
        return self._index.find(image_id)

    def structures(self, image_id: str) -> list[str]:
        """The structures with a mask for this image (``lungs`` when both lungs are there)."""
        key = self._key(image_id)
        have = set(self.masks.get(key, {})) if key is not None else set()
        if {"left_lung", "right_lung"} <= have:
            have.add("lungs")
        return sorted(have, key=lambda s: (STRUCTURES.index(s) if s in STRUCTURES else len(STRUCTURES), s))

    def size(self, image_id: str) -> tuple[int, int] | None:
        """(height, width) of this image's masks, None if it has none."""
        key = self._key(image_id)
        if key is None or not self.masks.get(key):
            return None
        m = next(iter(self.masks[key].values()))
        return m.height, m.width

    def get(self, image_id: str, structure: str) -> np.ndarray | None:
        """Bool (H, W) mask in original pixels; None if this image has no such mask."""
        key = self._key(image_id)
        if key is None:
            return None
        structure = structure_name(structure)
        have = self.masks[key]
        if structure in have:
            return have[structure].decode()
        if structure == "lungs" and "left_lung" in have and "right_lung" in have:
            left, right = have["left_lung"].decode(), have["right_lung"].decode()
            if left.shape != right.shape:
                raise CxrlabError(f"{self.source}: {image_id}: left lung mask is {left.shape[1]}x{left.shape[0]}, "
                                  f"right lung {right.shape[1]}x{right.shape[0]}: one image, one size")
            return left | right
        return None

    def in_model(self, image_id: str, structure: str, geometry: Any) -> np.ndarray | None:
        """:meth:`get` mapped into model pixels by ``geometry`` (a :class:`~cxrlab.data.preprocess.Geometry`)."""
        m = self.get(image_id, structure)
        return None if m is None else geometry.mask_to_model(m, where=f"{self.source}: {image_id} {structure}")


class _Names:
    """Match image ids by name: exact, then by trailing path parts joined with ``/`` or ``_``."""

    def __init__(self, names: Iterable[str]) -> None:
        self.index: dict[str, str | None] = {}
        for name in names:
            for form in _forms(name):
                if form in self.index and self.index[form] != name:
                    self.index[form] = None  # ambiguous (CheXpert's view1_frontal in every study)
                else:
                    self.index[form] = name

    def find(self, query: str) -> str | None:
        for form in _forms(query):
            if form in self.index:
                return self.index[form]  # the longest form that is known decides; None if ambiguous
        return None


def _forms(name: str) -> Iterator[str]:
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return
    stem = parts[-1]
    if "." in stem and not stem.startswith("."):
        stem = stem[: stem.rfind(".")]
    parts[-1] = stem
    seen = set()
    for k in range(len(parts)):
        for form in ("/".join(parts[k:]), "_".join(parts[k:])):
            if form not in seen:
                seen.add(form)
                yield form


# --- readers ----------------------------------------------------------------------------------


def read_masks(spec: str | Path, image_ids: list[str] | None = None, scored: str | None = None) -> MaskSet:
    """Read masks from a PNG folder, a CheXmask-style CSV or a COCO RLE JSON (see the module doc).

    Args:
        spec: the folder or file.
        image_ids: the images masks are wanted for (a split's ``image`` column); masks of
            other images are left out and counted (one warning line), and the set's ids are
            these ids.  None keeps every mask under its own name.
        scored: what ``image_ids`` are, for the warning (e.g. ``"the test split"``): masks of other
            images are then "not among the N images scored (the test split)", not "not an image of
            the set" (they are images of the dataset, only not scored).

    Raises:
        CxrlabError: one line: a missing or unknown spec, a broken code, a mask file that is
            not an image, masks of one image with different sizes, or masks of which none
            names an image of ``image_ids``.
    """
    path = Path(spec)
    if not path.exists():
        raise CxrlabError(f"{path}: masks not found (expected a folder of PNG masks, a CheXmask CSV or a COCO JSON)")
    if path.is_dir() and (path / "leftMask").is_dir() and (path / "rightMask").is_dir():
        # Montgomery's ManualMask/: the sides are checked from where each mask lies
        from cxrlab.data.sources.nlmtb import montgomery_masks

        return montgomery_masks(path.parent, image_ids)
    if path.suffix.lower() == ".csv":
        # SIIM's relative, transposed run-length code
        from cxrlab.data.sources.siim import is_siim_csv, siim_masks

        if is_siim_csv(path):
            return siim_masks(path, image_ids)
    if path.is_dir():
        raw = _read_png_folder(path)
    elif path.suffix.lower() in (".csv", ".gz") or path.name.lower().endswith(".csv.gz"):
        raw = _read_chexmask_csv(path)
    elif path.suffix.lower() == ".json":
        raw = _read_coco_json(path)
    else:
        raise CxrlabError(f"{path}: unknown mask format (expected a folder of PNG masks, a .csv or a .json)")
    return _collect(raw, str(path), image_ids, scored)


Raw = Iterator[tuple[str, str, Any]]  # (mask's image name, structure, callable -> _Mask | None)


def _collect(raw: Raw, source: str, image_ids: list[str] | None, scored: str | None = None) -> MaskSet:
    out = MaskSet(source=source)
    names = _Names(image_ids) if image_ids is not None else None
    left: dict[str, int] = {}
    example: dict[str, str] = {}
    other_images: set[str] = set()  # the warning counts images; ``left_out`` counts mask files
    total = 0

    def leave(reason: str, what: str) -> None:
        left[reason] = left.get(reason, 0) + 1
        example.setdefault(reason, what)

    for name, structure, load in raw:
        total += 1
        key = name if names is None else names.find(name)
        if key is None:
            leave("not an image of the set", name)
            other_images.add(name)
            continue
        m = load()
        if m.empty():
            leave("empty", f"{name} {structure}")
            continue
        have = out.masks.setdefault(key, {})
        other = next(iter(have.values()), None)
        if other is not None and (other.height, other.width) != (m.height, m.width):
            raise CxrlabError(f"{source}: {name}: the {structure} mask is {m.width}x{m.height} px, the other masks "
                              f"of this image {other.width}x{other.height}: one image, one mask size")
        have[structure] = m
    if total and not out.masks and image_ids is not None:
        raise CxrlabError(f"{source}: none of its {total} masks names an image of the set (e.g. "
                          f"{example.get('not an image of the set', '?')!r} vs {image_ids[0] if image_ids else '-'!r}); "
                          "masks are matched by image name without suffix")
    if not total:
        raise CxrlabError(f"{source}: no masks found")
    for reason, n in left.items():
        if reason == "not an image of the set":  # one line per image, whatever its number of structures
            why = (f"not among the {len(image_ids or [])} images scored ({scored})" if scored is not None
                   else reason)
            log.warning("%s: masks of %d image(s) left out: %s (e.g. %s)", source, len(other_images), why,
                        example[reason])
            continue
        log.warning("%s: %d mask(s) left out: %s (e.g. %s)", source, n, reason, example[reason])
    out.left_out = left
    return out


def _read_png(path: Path) -> _Mask:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise CxrlabError(f"{path}: not a readable image (a mask must be a PNG, 0 = outside)")
    hi = float(img.max())
    return _Mask.of(img > hi / 2 if hi > 0 else np.zeros(img.shape, bool))


def _flat_structure(stem: str) -> tuple[str, str] | None:
    """``00000001_000_left_lung`` -> (``00000001_000``, ``left_lung``), for the anatomy names only."""
    low = stem.lower()
    for s in sorted(STRUCTURES, key=len, reverse=True):
        for sep in ("_", "-"):
            tail = sep + s.replace("_", sep)
            if low.endswith(tail) and len(stem) > len(tail):
                return stem[: -len(tail)], s
    return None


def _read_png_folder(root: Path) -> Raw:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _MASK_SUFFIXES)
    if not files:
        raise CxrlabError(f"{root}: no PNG masks in this folder (expected <structure>/<image>.png or "
                          "<image>_<structure>.png)")
    for f in files:
        rel = f.relative_to(root)
        if len(rel.parts) > 1:  # <structure>/<image path>.png
            structure = structure_name(rel.parts[0])
            name = "/".join(rel.with_suffix("").parts[1:])
        else:
            split = _flat_structure(f.stem)
            if split is None:
                raise CxrlabError(f"{f}: cannot tell the structure: put it in a <structure>/ folder or name it "
                                  f"<image>_<structure>.png with one of {', '.join(STRUCTURES)}")
            name, structure = split
        yield name, structure, (lambda f=f: _read_png(f))


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _read_chexmask_csv(path: Path) -> Raw:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # one RLE of a 3000 px lung is ~10 kB
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        id_col = next((c for c in ID_COLUMNS if c in cols), None)
        structs = {c: s for c, s in CHEXMASK_COLUMNS.items() if c in cols}
        if id_col is None:
            raise CxrlabError(f"{path}: no image id column (one of {', '.join(ID_COLUMNS)}); columns: {', '.join(cols)}")
        if not structs:
            raise CxrlabError(f"{path}: no mask column ({', '.join(CHEXMASK_COLUMNS)}); columns: {', '.join(cols)}")
        if "Height" not in cols or "Width" not in cols:
            raise CxrlabError(f"{path}: no Height/Width columns: the run-length codes need the image size "
                              "(CheXmask's OriginalResolution CSVs have them)")
        for line, row in enumerate(reader, start=2):
            name = row[id_col]
            where = f"{path}:{line} ({name})"
            try:
                h, w = int(float(row["Height"])), int(float(row["Width"]))
            except (TypeError, ValueError):
                raise CxrlabError(f"{where}: Height/Width are not numbers ({row['Height']!r}, {row['Width']!r})") from None
            for col, s in structs.items():
                rle = row[col]
                yield name, s, (lambda rle=rle, h=h, w=w, where=f"{where} {col}":
                                _Mask(h, w, *_parse_rle(rle, h, w, where)))


def _read_coco_json(path: Path) -> Raw:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CxrlabError(f"{path}: not a readable JSON file ({e})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        yield from _coco_dataset(path, data)
        return
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CxrlabError(f"{path}: expected CheXlocalize's {{image id: {{finding: RLE}}}} or a COCO dataset "
                          "with images and annotations")
    for name, per in data.items():
        for finding, rle in per.items():
            if finding == "img_size":  # CheXlocalize's saliency files carry the size beside the maps
                continue
            yield name, structure_name(finding), (lambda rle=rle, w=f"{path}: {name} {finding}":
                                                  _Mask.of(coco_rle_decode(rle, where=w)))


def _coco_dataset(path: Path, data: dict[str, Any]) -> Raw:
    images = {im["id"]: im for im in data["images"]}
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        im = images.get(a.get("image_id"))
        if im is None:
            raise CxrlabError(f"{path}: annotation {a.get('id')} names image_id {a.get('image_id')} not in images")
        seg = a.get("segmentation")
        if not isinstance(seg, dict):
            raise CxrlabError(f"{path}: annotation {a.get('id')} is a polygon, not an RLE mask; convert polygons "
                              "to RLE (or PNG masks) first")
        merged.setdefault((im["file_name"], structure_name(cats.get(a.get("category_id"), str(a.get("category_id"))))),
                          []).append(seg)
    for (name, structure), segs in merged.items():
        def load(segs=segs, w=f"{path}: {name} {structure}") -> _Mask:
            m = coco_rle_decode(segs[0], where=w)
            for s in segs[1:]:  # several instances of one category: their union
                m = m | coco_rle_decode(s, where=w)
            return _Mask.of(m)
        yield name, structure, load
