"""Images stored as NumPy arrays (MedMNIST style; the NPZ files of Witon et al.'s 5-class study).

``root`` is an ``.npz`` file, or a folder holding exactly one.  Keys:
``{split}_images`` (N, H, W) or (N, H, W, C) uint8/uint16, and
``{split}_labels``: (N,) or (N, 1) integer classes (multi-class) or (N, L)
0/1 (multi-label), for split in train/val/test (at least one present).

As in Witon, Friedrich & Lobmayr, the arrays are exported once to PNG files (lossless) in
``<npz stem>_png/{split}/{i:06d}.png`` next to the file (or the ``export_dir``
option), so the rest of cxrlab reads them like any image folder.  Each split's
export records the archive's size and modification time (``.export.json``); an
archive rewritten after its export is exported again, with a warning, so a
changed NPZ never serves its old pixels.  Float images in [0, 1] are scaled to
0..255 (said in a warning); floats outside [0, 1], NaN/inf and object arrays are
refused in one line.  Class names come from ``data.labels``, else a
``label_names`` key in the file, else ``class_0, class_1, ...``.
"""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress
from cxrlab.runio import atomic_write_json

log = logging.getLogger(__name__)

#: Bump when exported pixels change meaning (2: float images scaled; the export keyed on the archive).
EXPORT_VERSION = 2
STAMP = ".export.json"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _open_npz(path: Path) -> Any:
    try:
        data = np.load(path, allow_pickle=False)
        data.files  # noqa: B018  (a pickle or .npy file has no .files)
        return data
    except (*_READ_ERRORS, AttributeError) as e:
        raise CxrlabError(f"{path}: cannot read NPZ: truncated, corrupt or not an .npz archive "
                          f"({type(e).__name__}: {e})") from None


def _array(data: Any, key: str, path: Path) -> np.ndarray:
    """One array of the archive; object arrays and damaged members are one-line errors."""
    try:
        return np.asarray(data[key])
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CxrlabError(f"{path}: {key!r} is an object array (dtype=object), which cxrlab does not "
                              "unpickle from a file: save it as a numeric array (uint8, uint16, or float "
                              "in [0, 1])") from None
        raise CxrlabError(f"{path}: cannot read {key!r} (corrupt archive: {e})") from None
    except _READ_ERRORS as e:
        raise CxrlabError(f"{path}: cannot read {key!r}: truncated or corrupt archive "
                          f"({type(e).__name__}: {e})") from None


def _storable(images: np.ndarray, npz: Path, key: str) -> tuple[np.ndarray, bool]:
    """Images as uint8/uint16 for lossless PNG, and whether they were floats in [0, 1] scaled to 0..255.

    A float image written as PNG without scaling becomes a 0/1 image (a silent
    loss of up to 255 grey levels), so a float range other than [0, 1] is refused.
    """
    if images.dtype in (np.uint8, np.uint16):
        return images, False
    if images.size == 0:
        return images.astype(np.uint8), False
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise CxrlabError(f"{npz}: {key!r} holds NaN or infinite values; expected finite images")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise CxrlabError(f"{npz}: {key!r} holds floats in [{lo:g}, {hi:g}]; float images must lie in "
                              "[0, 1] (scaled to 0..255): rescale them, or save uint8/uint16")
        return np.round(images * 255.0).astype(np.uint8), True
    if np.issubdtype(images.dtype, np.integer):
        lo, hi = int(images.min()), int(images.max())
        if lo >= 0 and hi <= 65535:
            return images.astype(np.uint8 if hi <= 255 else np.uint16), False
        raise CxrlabError(f"{npz}: {key!r} holds integers in [{lo}, {hi}]; expected 0..255 or 0..65535")
    raise CxrlabError(f"{npz}: {key!r} has dtype {images.dtype}; expected uint8, uint16 or float in [0, 1]")


def _archive_key(npz: Path, key: str) -> dict[str, Any]:
    """What an export was made from: the archive's size and modification time (cheap, no hashing)."""
    st = npz.stat()
    return {"version": EXPORT_VERSION, "archive": npz.name, "key": key, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _reusable(out: Path, want: dict[str, Any]) -> tuple[int | None, str]:
    """(image count, "") when the export in ``out`` was made from this archive, else (None, why not)."""
    try:
        old = json.loads((out / STAMP).read_text())
    except FileNotFoundError:
        return None, ("no record of the archive it came from (an older cxrlab)" if any(out.glob("*.png")) else "")
    except (OSError, ValueError):
        return None, "its record is unreadable"
    if {k: old.get(k) for k in want} != want:
        return None, ("the archive changed since (size or modification time)" if old.get("version") == want["version"]
                      else "it was made by another cxrlab version")
    count = old.get("count")
    if not isinstance(count, int) or len(list(out.glob("*.png"))) != count:
        return None, "PNG files are missing"
    return count, ""


def _export(data: Any, out: Path, npz: Path, key: str) -> tuple[list[str], str, bool]:
    """PNG files of ``data[key]`` in ``out``: (names, why they were re-exported or "", floats scaled)."""
    want = _archive_key(npz, key)
    count, why = _reusable(out, want) if out.is_dir() else (None, "")
    if count is not None:
        return [f"{i:06d}.png" for i in range(count)], "", False
    images, scaled = _storable(_array(data, key, npz), npz, key)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).unlink(missing_ok=True)  # an export is valid only once complete
    names = [f"{i:06d}.png" for i in range(len(images))]
    for i, img in enumerate(progress(images, desc=f"export {key}")):
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY)
        if img.ndim != 2:
            raise CxrlabError(f"{npz}: {key}[{i}] has shape {img.shape}; expected (H, W) or (H, W, C)")
        tmp = out / f".{names[i]}.tmp.png"
        if not cv2.imwrite(str(tmp), img):
            raise CxrlabError(f"{out}: cannot write exported PNGs (read-only? set data.options.export_dir)")
        tmp.replace(out / names[i])
    keep = set(names)
    for old in out.glob("*.png"):  # a shorter rewritten array must not leave old images behind
        if old.name not in keep:
            old.unlink()
    atomic_write_json(out / STAMP, {**want, "count": len(names), "scaled_from_float": scaled})
    return names, why, scaled


@register_source("npz")
def npz(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    options = options or {}
    check_options("npz", options, {"export_dir"})
    path = Path(root)
    if path.is_dir():
        hits = sorted(path.glob("*.npz"))
        if len(hits) != 1:
            raise CxrlabError(f"{path}: expected exactly one .npz file, found {len(hits)}")
        path = hits[0]
    if not path.is_file():
        raise CxrlabError(f"{path}: NPZ file not found")
    data = _open_npz(path)
    keys = set(data.files)
    splits = [s for s in ("train", "val", "test") if f"{s}_images" in keys]
    if not splits:
        raise CxrlabError(f"{path}: no '<split>_images' arrays (found keys {sorted(keys)})")
    export = Path(options.get("export_dir", path.parent / f"{path.stem}_png"))
    rows, ys, rebuilt, scaled = [], [], {}, []
    for s in splits:
        if f"{s}_labels" not in keys:
            raise CxrlabError(f"{path}: '{s}_images' has no '{s}_labels'")
        y = _array(data, f"{s}_labels", path)
        names, why, was_float = _export(data, export / s, path, f"{s}_images")
        if why:
            rebuilt[s] = why
        if was_float:
            scaled.append(f"{s}_images")
        if len(names) != len(y):
            raise CxrlabError(f"{path}: {s}_images has {len(names)} items but {s}_labels has {len(y)}")
        rel = export.relative_to(path.parent) if export.is_relative_to(path.parent) else export
        rows += [(str(rel / s / n), f"{s}/{n}", "", s) for n in names]
        ys.append(y.reshape(len(y), -1))
    if scaled:
        log.warning("%s: %s hold float images in [0, 1]; exported scaled to 0..255 (uint8)", path,
                    ", ".join(scaled))
    if rebuilt:
        log.warning("%s: PNG export in %s rebuilt for %s (%s)", path, export, ", ".join(rebuilt),
                    "; ".join(dict.fromkeys(rebuilt.values())))
    if len({a.shape[1] for a in ys}) > 1:
        raise CxrlabError(f"{path}: the splits' label arrays have different widths "
                          f"({', '.join(f'{s}: {a.shape[1]}' for s, a in zip(splits, ys, strict=True))})")
    try:
        y = np.concatenate(ys).astype(np.float64)
    except (TypeError, ValueError) as e:
        raise CxrlabError(f"{path}: labels are not numeric ({e})") from None
    if not np.isfinite(y).all():
        raise CxrlabError(f"{path}: labels hold NaN or infinite values")
    multiclass = y.shape[1] == 1
    if multiclass and (y != np.round(y)).any():
        raise CxrlabError(f"{path}: class labels must be whole numbers 0..K-1 (found {y[y != np.round(y)][0]:g})")
    if multiclass:
        k = int(y.max()) + 1
        names = list(labels) if labels else (
            [str(x) for x in _array(data, "label_names", path)] if "label_names" in keys
            else [f"class_{i}" for i in range(k)])
        if len(names) < k or y.min() < 0:
            raise CxrlabError(f"{path}: labels range {int(y.min())}..{int(y.max())} but {len(names)} class names")
        onehot = np.eye(len(names), dtype=np.float32)[y[:, 0].astype(int)]
    else:
        names = list(labels) if labels else [f"label_{i}" for i in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise CxrlabError(f"{path}: labels have {y.shape[1]} columns but data.labels names {len(names)}")
        onehot = y.astype(np.float32)
    frame = pd.DataFrame(rows, columns=["image", "patient", "view", "split"])
    frame = pd.concat([frame, pd.DataFrame(onehot, columns=names)], axis=1)
    return Manifest(frame=frame, root=path.parent, labels=names,
                    task="multiclass" if multiclass else "multilabel", origin=str(path))
