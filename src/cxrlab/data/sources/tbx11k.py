"""TBX11K (Liu et al., "Rethinking Computer-aided Tuberculosis Diagnosis", CVPR 2020) in its published layout.

Disk layout under ``root`` (after unpacking ``TBX11K.zip``)::

    imgs/{health,sick,tb}/*.png          512 x 512 PNGs (h0001.png, s0001.png, tb0001.png)
    imgs/test/, imgs/extra/              not read: the test labels are not public; extra holds other datasets
    lists/TBX11K_train.txt, TBX11K_val.txt   the official split, one ``tb/tb0005.png`` per line (relative to imgs/)
    annotations/json/TBX11K_{train,val}.json COCO-style: images (file_name relative to imgs/, width, height)
                                         and annotations (bbox = x, y, w, h in pixels, category_id)
    annotations/xml/*.xml                Pascal VOC copies of the same boxes (not read)

Task: multiclass, three classes from the folder, :data:`CLASSES`: ``Healthy`` (health/), ``Sick but not
TB`` (sick/) and ``Tuberculosis`` (tb/).  ``data.labels: [Tuberculosis]`` reads the usual binary
protocol instead (TB against healthy and sick).  The official split comes from ``lists/`` where it is
there, else from the names in ``annotations/json/TBX11K_{train,val}.json`` (the shipped sample has only
a JSON file), else cxrlab splits by patient.  TBX11K's test labels are not public, so the official
``val`` list is cxrlab's ``test`` split and validation is carved from train by patient, as papers that
report on TBX11K's val set do.  An image under imgs/{health,sick,tb} in neither list is an
error, as is a listed image that is not on disk.  TBX11K has no patient ids, ages, sexes or views: each
image is its own patient (its file stem) and ``view`` stays empty.

Boxes: every COCO annotation becomes a ``Tuberculosis`` box (what ``cxrlab localize`` scores against
the model's ``Tuberculosis`` output) with its COCO category kept in the ``category`` column
(:data:`CATEGORIES`: ActiveTuberculosis, ObsoletePulmonaryTuberculosis = latent, PulmonaryTuberculosis
= type uncertain).  A box outside its image, of an unknown category or on an image that is not in tb/ is
one error naming the JSON file and the annotation id.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import check_options, register_source
from cxrlab.errors import CxrlabError

CLASSES: tuple[str, ...] = ("Healthy", "Sick but not TB", "Tuberculosis")
FOLDERS: dict[str, str] = {"health": "Healthy", "sick": "Sick but not TB", "tb": "Tuberculosis"}
CATEGORIES: tuple[str, ...] = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis")
SPLIT_FILES = {"train": "TBX11K_train", "test": "TBX11K_val"}
"""cxrlab split -> official list: the official val set is the test set (its test labels are not public)."""
BOX_LABEL = "Tuberculosis"


def _rel(name: str) -> str:
    """A list or JSON entry as a path relative to ``imgs/`` (``tb/tb0005.png``)."""
    name = name.strip().replace("\\", "/")
    return name[len("imgs/"):] if name.startswith("imgs/") else name


def read_list(path: Path) -> list[str]:
    """The image names of one split list, relative to ``imgs/``."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CxrlabError(f"{path}: cannot read the split list ({e})") from None
    return [_rel(line) for line in lines if line.strip()]


def read_coco(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A TBX11K COCO file as (images: image, width, height; boxes: image, label, x, y, w, h, category).

    ``image`` is relative to ``imgs/``.  Checks what a wrong file would get wrong silently: the keys,
    the category names, and every box inside its image.
    """
    try:
        tree = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CxrlabError(f"{path}: cannot read the COCO JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(tree, dict) or k not in tree]
    if missing:
        raise CxrlabError(f"{path}: not a COCO annotation file (missing {missing})")
    cats: dict[int, str] = {}
    for c in tree["categories"]:
        if c.get("name") not in CATEGORIES:
            raise CxrlabError(f"{path}: category {c.get('name')!r} (id {c.get('id')}) is not a TBX11K category; "
                              f"expected {', '.join(CATEGORIES)}")
        cats[c["id"]] = c["name"]
    images: dict[int, tuple[str, int, int]] = {}
    for im in tree["images"]:
        try:
            images[im["id"]] = (_rel(str(im["file_name"])), int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError):
            raise CxrlabError(f"{path}: image entry {im.get('id', '?')} lacks file_name, width or height") from None
    rows = []
    for a in tree["annotations"]:
        aid = a.get("id", "?")
        if a.get("image_id") not in images:
            raise CxrlabError(f"{path}: annotation {aid} names image_id {a.get('image_id')!r}, which is not in 'images'")
        if a.get("category_id") not in cats:
            raise CxrlabError(f"{path}: annotation {aid} has category_id {a.get('category_id')!r}; "
                              f"known: {sorted(cats)}")
        name, w, h = images[a["image_id"]]
        try:
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise CxrlabError(f"{path}: annotation {aid} has no bbox [x, y, w, h]") from None
        if bw <= 0 or bh <= 0 or x < 0 or y < 0 or x + bw > w + 0.5 or y + bh > h + 0.5:
            raise CxrlabError(f"{path}: annotation {aid} box [{x:g}, {y:g}, {bw:g}, {bh:g}] is outside its "
                              f"{w} x {h} image {name}")
        if not name.startswith("tb/"):
            raise CxrlabError(f"{path}: annotation {aid} puts a TB box on {name}, which is not in imgs/tb/")
        rows.append((name, BOX_LABEL, x, y, bw, bh, cats[a["category_id"]]))
    img_frame = pd.DataFrame(list(images.values()), columns=["image", "width", "height"])
    boxes = pd.DataFrame(rows, columns=["image", "label", "x", "y", "w", "h", "category"])
    return img_frame, boxes


def _official_split(base: Path, names: pd.Series, jsons: dict[str, Path]) -> tuple[np.ndarray, str]:
    """Split of each image (``""`` where the dataset gives none) and the file it came from."""
    lists = {s: base / "lists" / f"{stem}.txt" for s, stem in SPLIT_FILES.items()}
    if all(p.is_file() for p in lists.values()):
        members = {s: read_list(p) for s, p in lists.items()}
        origin = lists["train"]
    elif jsons:
        members = {s: list(read_coco(p)[0]["image"]) for s, p in jsons.items()}
        origin = next(iter(jsons.values()))
    else:
        return np.full(len(names), ""), str(base)
    on_disk = set(names)
    split = pd.Series("", index=names.index, dtype=object)
    for s, listed in members.items():
        missing = [n for n in listed if n not in on_disk and n.split("/", 1)[0] in FOLDERS]
        if missing:
            where = lists[s] if lists[s].is_file() else jsons[s]
            raise CxrlabError(f"{where}: {len(missing)} listed images are not under {base / 'imgs'} "
                              f"(first: {missing[0]})")
        hit = names.isin(set(listed))
        both = hit & (split != "")
        if both.any():
            raise CxrlabError(f"{origin}: {int(both.sum())} images are in two splits (first: {names[both].iloc[0]})")
        split[hit] = s
    none = split == ""
    if none.any():
        raise CxrlabError(f"{origin}: {int(none.sum())} images under {base / 'imgs'} are in no official split "
                          f"(first: {names[none].iloc[0]})")
    return split.to_numpy(dtype=str), str(origin)


@register_source("tbx11k")
def tbx11k(root: str, labels: list[str] | None = None, options: dict | None = None) -> Manifest:
    """Read TBX11K at ``root``: three classes (or binary TB), the official train/val split, TB boxes."""
    options = options or {}
    check_options("tbx11k", options, set())
    if labels not in (None, list(CLASSES), ["Tuberculosis"]):
        raise CxrlabError(f"tbx11k: data.labels must be {list(CLASSES)} (three classes) or ['Tuberculosis'] "
                          f"(binary), got {labels}")
    base = Path(root)
    imgs = base / "imgs"
    if not imgs.is_dir():
        raise CxrlabError(f"{base}: no imgs/ folder (expected imgs/{{health,sick,tb}}/*.png)")
    rows = []
    for folder, cls in FOLDERS.items():
        for f in sorted((imgs / folder).glob("*.png")) if (imgs / folder).is_dir() else []:
            rows.append((f"imgs/{folder}/{f.name}", f.stem, cls))
    if not rows:
        raise CxrlabError(f"{imgs}: no PNG images under health/, sick/ or tb/")
    frame = pd.DataFrame(rows, columns=["image", "patient", "cls"])
    jsons = {s: base / "annotations" / "json" / f"{stem}.json" for s, stem in SPLIT_FILES.items()}
    jsons = {s: p for s, p in jsons.items() if p.is_file()}
    names = frame["image"].str.slice(len("imgs/"))
    split, origin = _official_split(base, names, jsons)
    frame.insert(2, "view", "")
    frame.insert(3, "split", split)

    boxes, sizes = [], {}
    for path in jsons.values():
        img_frame, b = read_coco(path)
        unknown = sorted(set(b["image"]) - set(names))
        if unknown:
            raise CxrlabError(f"{path}: {len(unknown)} boxed images are not under {imgs} (first: {unknown[0]})")
        boxes.append(b.assign(image="imgs/" + b["image"]))
        sizes.update({f"imgs/{n}": (int(w), int(h)) for n, w, h in img_frame.itertuples(index=False)})
    box_frame = pd.concat(boxes, ignore_index=True) if boxes else None

    cls = frame.pop("cls")
    if labels == ["Tuberculosis"]:
        frame["Tuberculosis"] = (cls == "Tuberculosis").astype(np.float32)
        return Manifest(frame=frame, root=base, labels=["Tuberculosis"], task="binary", boxes=box_frame,
                        image_sizes=sizes, origin=origin)
    for c in CLASSES:
        frame[c] = (cls == c).astype(np.float32)
    return Manifest(frame=frame, root=base, labels=list(CLASSES), task="multiclass", boxes=box_frame,
                    image_sizes=sizes, origin=origin)
