"""TBX11K-layout phantom: healthy, sick-but-not-TB and TB images with COCO boxes.

Layout (what the ``tbx11k`` source reads; ``data.root`` = ``OUT``)::

    OUT/imgs/health/h0001.png ...   imgs/sick/s0001.png ...   imgs/tb/tb0001.png ...   (RGB PNGs, as TBX11K's)
    OUT/lists/TBX11K_train.txt  TBX11K_val.txt  TBX11K_trainval.txt   (+ all_*.txt copies; lines ``tb/tb0001.png``)
    OUT/annotations/json/TBX11K_train.json  TBX11K_val.json          (COCO: images, annotations, categories)
    OUT/phantom.json

Each image is its own patient (TBX11K has no patient ids).  A ``tb`` image carries the
``tuberculosis`` pattern (upper-zone nodules, a cavity, fibrotic streaks) and its true box as one COCO
annotation whose category is drawn (active 70 %, obsolete/latent 25 %, type uncertain 5 %); a ``sick``
image carries one standard phantom lesion (no TB); a ``health`` image none.  The split is drawn per
image (``val_fraction`` to val), with every class in both splits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrlab.data.phantom import LABELS, draw_frontal
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
    write_meta,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.patterns import extra_patterns
from cxrlab.data.sources.tbx11k import CATEGORIES
from cxrlab.runio import atomic_write_text

PREFIX = {"health": "h", "sick": "s", "tb": "tb"}
CATEGORY_SHARE = (0.70, 0.25, 0.05)


def _render(args: tuple) -> tuple[float, float, float, float] | None:
    """Draw and save one image; return its TB box (x, y, w, h in pixels) or None."""
    index, size, seed, folder, path = args
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    findings: dict[str, float] = {}
    if folder == "sick":
        findings = {LABELS[int(rng.integers(len(LABELS)))]: 1.0}
    s = float(rng.uniform(0.6, 1.0)) if folder == "tb" else 0.0
    hook = extra_patterns({"Tuberculosis": ("tuberculosis", s)})
    pixels, boxes = draw_frontal(size, Anatomy.draw(draw(seed, 1, index)), pose, rng, findings, extra=hook)
    save_image(path, np.dstack([pixels] * 3))
    tb = [b for name, b in boxes if name == "Tuberculosis"]
    if not tb:
        return None
    x, y, w, h = tb[0]
    x0, y0 = min(max(x, 0.0), size - 1.0), min(max(y, 0.0), size - 1.0)
    return x0, y0, max(min(x + w, float(size)) - x0, 1.0), max(min(y + h, float(size)) - y0, 1.0)


def _coco(entries: list[tuple[int, str, tuple | None, int]], size: int) -> dict:
    cats = [{"id": k + 1, "name": c, "supercategory": "Tuberculosis"} for k, c in enumerate(CATEGORIES)]
    images, annotations = [], []
    for image_id, name, box, cat in entries:
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        if box is not None:
            x, y, w, h = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat + 1,
                                "iscrowd": 0, "area": round(w * h), "bbox": [x, y, w, h]})
    return {"categories": cats, "images": images, "annotations": annotations}


def write_phantom_tbx11k(
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    tb_fraction: float = 0.2,
    sick_fraction: float = 0.4,
    val_fraction: float = 0.2,
    workers: int | None = None,
) -> Path:
    """Write ``n`` phantom images in the TBX11K layout; return ``out`` (``data.root``).

    Args:
        out: target folder; created if missing.
        n: number of images (one per patient).
        size: image side in pixels (TBX11K's are 512).
        seed: dataset seed.
        tb_fraction: share of ``tb`` images (about 10 % in the real train+val).
        sick_fraction: share of ``sick`` images (about 45 %); the rest are ``health``.
        val_fraction: share of images in the official ``val`` list.
        workers: processes to render with (default: all cores).
    """
    check_args(n, size, 12)
    out = Path(out)
    clear_previous(out, ("imgs", "lists", "annotations"))
    g = draw(seed, 20)
    u = g.random(n)
    folder = np.where(u < tb_fraction, "tb", np.where(u < tb_fraction + sick_fraction, "sick", "health"))
    split = np.where(draw(seed, 21).random(n) < val_fraction, "val", "train")
    for f in PREFIX:  # every class in both splits, so the official split is usable
        idx = np.flatnonzero(folder == f)
        if len(idx) < 2:
            folder[draw(seed, 22).choice(np.flatnonzero(folder != "tb" if f == "tb" else folder != f), 2 - len(idx),
                                         replace=False)] = f
            idx = np.flatnonzero(folder == f)
        for s in ("train", "val"):
            if not (split[idx] == s).any():
                split[idx[0 if s == "val" else -1]] = s
    cats = draw(seed, 23).choice(len(CATEGORIES), size=n, p=CATEGORY_SHARE)
    numbers = {f: 0 for f in PREFIX}
    names, jobs = [], []
    for i in range(n):
        numbers[folder[i]] += 1
        name = f"{folder[i]}/{PREFIX[folder[i]]}{numbers[folder[i]]:04d}.png"
        names.append(name)
        jobs.append((i, size, seed, str(folder[i]), str(out / "imgs" / name)))
    boxes = run_jobs(_render, jobs, workers, "phantom tbx11k")
    lists = {s: [k for k in range(n) if split[k] == s] for s in ("train", "val")}
    for s, idx in lists.items():
        text = "".join(f"{names[k]}\n" for k in idx)
        for prefix in ("TBX11K", "all"):
            atomic_write_text(out / "lists" / f"{prefix}_{s}.txt", text)
        coco = _coco([(k + 1, names[k], boxes[k] if folder[k] == "tb" else None, int(cats[k])) for k in idx], size)
        atomic_write_text(out / "annotations" / "json" / f"TBX11K_{s}.json", json.dumps(coco) + "\n")
    trainval = "".join(f"{names[k]}\n" for k in lists["train"] + lists["val"])
    for prefix in ("TBX11K", "all"):
        atomic_write_text(out / "lists" / f"{prefix}_trainval.txt", trainval)
    counts = {f"{s}/{f}": int(((split == s) & (folder == f)).sum()) for s in ("train", "val") for f in PREFIX}
    write_meta(out, "tbx11k", n, size, seed, tb_fraction=tb_fraction, sick_fraction=sick_fraction,
               val_fraction=val_fraction, counts=counts)
    return out
