"""Write a phantom dataset to disk in the NIH ChestX-ray14 layout.

Layout (the same files the ``nih14`` source reads)::

    OUT/
      images/00000001_000.png ...       8-bit grey PNGs, SIZE x SIZE
      Data_Entry_2017.csv               NIH columns (incl. the split header quirk)
      BBox_List_2017.csv                one box per row: x, y, w, h in image pixels
      train_val_list.txt  test_list.txt official-style split, by patient
      phantom.json                      how it was made (seed, size, n, labels; shortcut rule if planted)
      masks/<structure>/<image>.png     lung and heart masks, only with ``masks=True``

Image names follow NIH: ``{patient:08d}_{follow_up:03d}.png``.

:func:`write_phantom_dataset` writes any phantom mode (``nih14``, ``chexpert``,
``kermany``, ``cxr5``) by name and says which source and root read it back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from cxrlab.data.phantom import LABELS, PhantomImage, render
from cxrlab.data.phantom_layouts.shortcut import Shortcut
from cxrlab.data.phantom_layouts.site import site_of
from cxrlab.data.phantom_layouts.subgroup import SubgroupGap
from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress
from cxrlab.runio import atomic_write_text

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def image_name(patient: int, follow_up: int) -> str:
    return f"{patient:08d}_{follow_up:03d}.png"


def _is_test_patient(patient: int, seed: int, test_fraction: float) -> bool:
    return bool(np.random.default_rng([seed, 3, patient]).random() < test_fraction)


def _render_and_save(args: tuple) -> PhantomImage:
    index, size, seed, image_dir, subtle, *rest = args
    opts = rest[0] if rest else {}  # only the options that are set: site, masks_dir, shortcut
    masks_dir = opts.get("masks_dir")
    item = render(index, size=size, seed=seed, subtle=subtle, site=opts.get("site"),
                  masks=masks_dir is not None, shortcut=opts.get("shortcut"), fade=opts.get("fade", 1.0))
    path = os.path.join(image_dir, image_name(item.patient, item.follow_up))
    if not cv2.imwrite(path, item.pixels):
        raise CxrlabError(f"{path}: could not write image")
    for structure, mask in item.masks.items():  # masks/<structure>/<image stem>.png, 0 / 255
        mpath = os.path.join(masks_dir, structure, image_name(item.patient, item.follow_up))
        if not cv2.imwrite(mpath, mask.astype(np.uint8) * 255):
            raise CxrlabError(f"{mpath}: could not write mask")
    item.masks = {}
    item.pixels = np.empty(0, np.uint8)  # do not ship pixels back between processes
    return item


def write_phantom(
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.2,
    workers: int | None = None,
    subtle: bool = False,
    site: str | None = None,
    masks: bool = False,
    shortcut: Shortcut | str | None = None,
    subgroup_gap: SubgroupGap | str | None = None,
) -> Path:
    """Generate ``n`` phantom images into ``out`` (NIH layout) and return ``out``.

    Args:
        out: target folder; created if missing. Existing phantom files are overwritten.
        n: number of images.
        size: image side in pixels.
        seed: dataset seed (same seed, same files).
        test_fraction: fraction of *patients* listed in ``test_list.txt``.
        workers: processes to render with (default: all cores).
        subtle: small nodules (radius 0.4-0.6% of the width) beside nodule mimics
            that low resolutions cannot tell apart; off by default (the default
            output is unchanged).
        site: the phantom hospital (``"B"``: other acquisition, field of view, burned-in text and
            prevalence; :mod:`cxrlab.data.phantom_layouts.site`); None or ``"A"``: the default.
        masks: also write the exact lung and heart masks, ``masks/<structure>/<image>.png``
            (``right_lung``, ``left_lung``, ``heart``; 0/255, original pixels), read by
            :func:`cxrlab.data.masks.read_masks`; the images do not change.
        shortcut: plant a shortcut (:class:`~cxrlab.data.phantom_layouts.shortcut.Shortcut` or
            ``"LABEL:0.9:0.1"``): burned-in text outside the lungs in that share of the label's
            positives and negatives; recorded in ``phantom.json``.
        subgroup_gap: plant a subgroup effect (:class:`~cxrlab.data.phantom_layouts.subgroup.SubgroupGap`
            or ``"sex=F:0.5"``): every lesion of that group's images drawn at that intensity, labels
            unchanged; recorded in ``phantom.json``.
    """
    if n < 1:
        raise CxrlabError(f"phantom: --n must be >= 1, got {n}")
    out = Path(out)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    site_of(site)  # an unknown site is one line before anything is drawn
    if isinstance(shortcut, str):
        shortcut = Shortcut.parse(shortcut, LABELS)
    if masks:
        shutil.rmtree(out / "masks", ignore_errors=True)  # no stale mask of an earlier phantom
        for structure in ("right_lung", "left_lung", "heart"):
            (out / "masks" / structure).mkdir(parents=True, exist_ok=True)
    opts = {k: v for k, v in {"site": site, "masks_dir": str(out / "masks") if masks else None,
                              "shortcut": shortcut}.items() if v}
    age_rng = np.random.default_rng([seed, 4])  # drawn before the images: a planted gap needs them
    ages = age_rng.integers(18, 90, size=n)
    sexes = age_rng.choice(["M", "F"], size=n)
    if isinstance(subgroup_gap, str):
        subgroup_gap = SubgroupGap.parse(subgroup_gap)
    fades = subgroup_gap.factors(ages, sexes) if subgroup_gap is not None else np.ones(n)
    jobs = [(i, size, seed, str(image_dir), subtle, *([opts] if opts else []))
            if fades[i] == 1 else (i, size, seed, str(image_dir), subtle, {**opts, "fade": float(fades[i])})
            for i in range(n)]
    items: list[PhantomImage] = []
    if workers > 1 and n >= 64:
        with worker_pool(workers) as pool:
            it = pool.map(_render_and_save, jobs, chunksize=32)
            items = list(progress(it, total=n, desc="phantom"))
    else:
        items = [_render_and_save(j) for j in progress(jobs, desc="phantom")]

    rows, boxes, train_val, test = [], [], [], []
    for item, age, sex in zip(items, ages, sexes, strict=True):
        name = image_name(item.patient, item.follow_up)
        found = [k for k in LABELS if item.labels[k]]
        finding = "|".join(found) if found else "No Finding"
        rows.append(f"{name},{finding},{item.follow_up},{item.patient},{age},{sex},PA,{size},{size},0.143,0.143")
        for label, (x, y, w, h) in item.boxes:
            boxes.append(f"{name},{label},{x:.1f},{y:.1f},{w:.1f},{h:.1f}")
        (test if _is_test_patient(item.patient, seed, test_fraction) else train_val).append(name)

    atomic_write_text(out / "Data_Entry_2017.csv", "\n".join([DATA_ENTRY_HEADER, *rows]) + "\n")
    atomic_write_text(out / "BBox_List_2017.csv", "\n".join([BBOX_HEADER, *boxes]) + "\n")
    atomic_write_text(out / "train_val_list.txt", "\n".join(train_val) + "\n")
    atomic_write_text(out / "test_list.txt", "\n".join(test) + "\n")
    meta = {"generator": "cxrlab.phantom", "n": n, "size": size, "seed": seed,
            "test_fraction": test_fraction, "labels": list(LABELS)}
    if subtle:  # only when set, so that the default phantom.json stays as it was
        meta["subtle"] = True
    if site_of(site) is not None:  # likewise
        meta["site"] = site_of(site).to_dict()
    if masks:
        meta["masks"] = {"layout": "masks/<structure>/<image>.png", "structures": ["right_lung", "left_lung", "heart"],
                         "pixels": "original", "values": "0 outside, 255 inside"}
    if shortcut is not None:
        pos = [it for it in items if it.labels[shortcut.label]]
        neg = [it for it in items if not it.labels[shortcut.label]]
        meta["shortcut"] = {**shortcut.to_dict(size),
                            "marked_positives": [sum(it.shortcut for it in pos), len(pos)],
                            "marked_negatives": [sum(it.shortcut for it in neg), len(neg)]}
    if subgroup_gap is not None:
        meta["subgroup_gap"] = {**subgroup_gap.to_dict(), "images": int(np.sum(fades != 1))}
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return out


class PhantomSource(NamedTuple):
    """What a config needs to read a written phantom: ``data.source``, ``data.root``, ``data.labels``."""

    source: str
    root: Path
    labels: list[str]
    task: str


KINDS = ("nih14", "chexpert", "kermany", "cxr5", "tbx11k", "mimic", "padchest", "vindr", "rsna", "siim", "nlmtb")


def write_phantom_dataset(kind: str, out: str | Path, n: int = 1000, size: int = 256, seed: int = 0,
                          **opts) -> PhantomSource:
    """Write a phantom of ``kind`` (one of :data:`KINDS`) into ``out``; return how to read it.

    ``opts`` go to the mode's writer: :func:`write_phantom` (nih14),
    ``write_phantom_chexpert``, ``write_phantom_kermany`` or ``write_phantom_cxr5``
    (:mod:`cxrlab.data.phantom_layouts`).
    """
    if kind == "nih14":
        return PhantomSource("nih14", write_phantom(out, n, size, seed, **opts), list(LABELS), "multilabel")
    if kind == "chexpert":
        from cxrlab.data.phantom_layouts.chexpert import COMPETITION, write_phantom_chexpert

        return PhantomSource("chexpert", write_phantom_chexpert(out, n, size, seed, **opts),
                             list(COMPETITION), "multilabel")
    if kind == "kermany":
        from cxrlab.data.phantom_layouts.kermany import write_phantom_kermany

        return PhantomSource("kermany", write_phantom_kermany(out, n, size, seed, **opts), ["Pneumonia"], "binary")
    if kind == "cxr5":
        from cxrlab.data.phantom_layouts.cxr5 import CLASSES, write_phantom_cxr5

        root = write_phantom_cxr5(out, n, size, seed, **opts)
        return PhantomSource("npz" if root.suffix == ".npz" else "folder", root, list(CLASSES), "multiclass")
    if kind == "tbx11k":
        from cxrlab.data.phantom_layouts.tbx11k import write_phantom_tbx11k
        from cxrlab.data.sources.tbx11k import CLASSES as TBX11K_CLASSES

        return PhantomSource("tbx11k", write_phantom_tbx11k(out, n, size, seed, **opts), list(TBX11K_CLASSES),
                             "multiclass")
    if kind == "mimic":
        from cxrlab.data.phantom_layouts.mimic import write_phantom_mimic
        from cxrlab.data.sources.chexpert import COMPETITION

        return PhantomSource("mimic", write_phantom_mimic(out, n, size, seed, **opts), list(COMPETITION), "multilabel")
    if kind == "padchest":
        from cxrlab.data.phantom_layouts.padchest import write_phantom_padchest
        from cxrlab.data.sources.padchest import DEFAULT

        return PhantomSource("padchest", write_phantom_padchest(out, n, size, seed, **opts), list(DEFAULT),
                             "multilabel")
    if kind == "vindr":
        from cxrlab.data.phantom_layouts.vindr import PHANTOM_CLASSES, write_phantom_vindr

        return PhantomSource("vindr", write_phantom_vindr(out, n, size, seed, **opts), list(PHANTOM_CLASSES),
                             "multilabel")
    if kind == "rsna":
        from cxrlab.data.phantom_layouts.rsna import write_phantom_rsna

        return PhantomSource("rsna", write_phantom_rsna(out, n, size, seed, **opts), ["Lung Opacity"], "multilabel")
    if kind == "siim":
        from cxrlab.data.phantom_layouts.siim import write_phantom_siim

        return PhantomSource("siim", write_phantom_siim(out, n, size, seed, **opts), ["Pneumothorax"], "binary")
    if kind == "nlmtb":
        from cxrlab.data.phantom_layouts.nlmtb import write_phantom_nlmtb

        return PhantomSource("nlmtb", write_phantom_nlmtb(out, n, size, seed, **opts), ["Tuberculosis"], "binary")
    raise CxrlabError(f"phantom: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
