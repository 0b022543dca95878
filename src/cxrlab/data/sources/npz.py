"""Images stored as NumPy arrays (MedMNIST style; the 5-class seed's NPZ files).

``root`` is an ``.npz`` file, or a folder holding exactly one.  Keys:
``{split}_images`` (N, H, W) or (N, H, W, C) uint8/uint16, and
``{split}_labels``: (N,) or (N, 1) integer classes (multi-class) or (N, L)
0/1 (multi-label), for split in train/val/test (at least one present).

As in Witon, Friedrich & Lobmayr, the arrays are exported once to PNG files (lossless) in
``<npz stem>_png/{split}/{i:06d}.png`` next to the file (or the ``export_dir``
option), so the rest of cxrlab reads them like any image folder; an export
whose file count matches is reused.  Class names come from ``data.labels``,
else a ``label_names`` key in the file, else ``class_0, class_1, ...``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress


def _export(images: np.ndarray, out: Path, npz: Path, key: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.png" for i in range(len(images))]
    if len(list(out.glob("*.png"))) == len(images):
        return names
    for i, img in enumerate(progress(images, desc=f"export {key}")):
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY)
        if img.ndim != 2:
            raise CxrlabError(f"{npz}: {key}[{i}] has shape {img.shape}; expected (H, W) or (H, W, C)")
        tmp = out / f".{names[i]}.tmp.png"
        if not cv2.imwrite(str(tmp), img):
            raise CxrlabError(f"{out}: cannot write exported PNGs (read-only? set data.options.export_dir)")
        tmp.replace(out / names[i])
    return names


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
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except (OSError, ValueError) as e:
        raise CxrlabError(f"{path}: cannot read NPZ ({e})") from None
    splits = [s for s in ("train", "val", "test") if f"{s}_images" in keys]
    if not splits:
        raise CxrlabError(f"{path}: no '<split>_images' arrays (found keys {sorted(keys)})")
    export = Path(options.get("export_dir", path.parent / f"{path.stem}_png"))
    rows, ys = [], []
    for s in splits:
        if f"{s}_labels" not in keys:
            raise CxrlabError(f"{path}: '{s}_images' has no '{s}_labels'")
        imgs, y = data[f"{s}_images"], np.asarray(data[f"{s}_labels"])
        if len(imgs) != len(y):
            raise CxrlabError(f"{path}: {s}_images has {len(imgs)} items but {s}_labels has {len(y)}")
        names = _export(imgs, export / s, path, f"{s}_images")
        rel = export.relative_to(path.parent) if export.is_relative_to(path.parent) else export
        rows += [(str(rel / s / n), f"{s}/{n}", "", s) for n in names]
        ys.append(y.reshape(len(y), -1))
    y = np.concatenate(ys)
    multiclass = y.shape[1] == 1
    if multiclass:
        k = int(y.max()) + 1
        names = list(labels) if labels else (
            [str(x) for x in data["label_names"]] if "label_names" in keys else [f"class_{i}" for i in range(k)])
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
                    task="multiclass" if multiclass else "multilabel")
