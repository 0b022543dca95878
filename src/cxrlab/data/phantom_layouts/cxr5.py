"""Five-class phantom (Witon, Friedrich & Lobmayr's classes): Pneumonia / TB / Lung Opacity / COVID / Normal.

``fmt="npz"`` writes ``OUT/cxr5.npz`` as the ``npz`` source reads it
(``{train,val,test}_images`` (N, S, S) uint8, ``{split}_labels`` (N,) int64 and
``label_names``), ``data.root`` = that file; ``fmt="folder"`` writes
``OUT/{train,val,test}/<class>/{index:06d}.png`` for the ``folder`` source,
``data.root`` = ``OUT`` (give ``data.labels`` = :data:`CLASSES` to keep this
order; without it the source sorts the folder names).

=================  =================================================================
class              pattern
=================  =================================================================
``Pneumonia``      dense lobar consolidation with air bronchograms, one lung
``TB``             upper-zone nodules, a thick-walled cavity, fibrotic streaks
``Lung Opacity``   one to three patchy opacities anywhere in the lungs
``COVID``          bilateral peripheral lower-zone ground glass
``Normal``         none
=================  =================================================================

Every image is its own patient (the arrays carry no patient ids), drawn with
intensity 0.6-1.0; splits are stratified by class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrlab.data.phantom import draw_frontal
from cxrlab.data.phantom_layouts.common import (
    MASKS_META,
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
    save_masks,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.patterns import extra_patterns
from cxrlab.errors import CxrlabError
from cxrlab.runio import atomic_write_text

#: Class order of the labels (as in recipes/cxr5_resnet18_clahe.yaml).
CLASSES: tuple[str, ...] = ("Pneumonia", "TB", "Lung Opacity", "COVID", "Normal")
PATTERN = {"Pneumonia": "lobar_consolidation", "TB": "tuberculosis", "Lung Opacity": "patchy_opacity",
           "COVID": "ground_glass"}
#: Default class frequencies.
WEIGHTS: dict[str, float] = {"Pneumonia": 0.2, "TB": 0.15, "Lung Opacity": 0.2, "COVID": 0.15, "Normal": 0.3}


def class_of(index: int, seed: int, weights: dict[str, float]) -> int:
    p = np.array([weights[c] for c in CLASSES], dtype=float)
    return int(np.searchsorted(np.cumsum(p / p.sum()), draw(seed, 20, index).random(), side="right"))


def _render(args: tuple) -> np.ndarray:
    index, size, seed, k, path, *masks_at = args  # masks_at: (root, rel) with masks=True
    rng = draw(seed, 22, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    name = CLASSES[k]
    hook = extra_patterns({name: (PATTERN[name], float(rng.uniform(0.6, 1.0)))}) if name in PATTERN else None
    masks: dict[str, np.ndarray] | None = {} if masks_at else None
    pixels, _ = draw_frontal(size, Anatomy.draw(draw(seed, 21, index)), pose, rng, {}, extra=hook, masks=masks)
    if masks_at:
        save_masks(*masks_at[0], masks)
    if path:
        save_image(path, pixels)
        return np.empty(0, np.uint8)
    return pixels


def _splits(classes: np.ndarray, seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Stratified split names: per class, a seeded order cut at the fractions (>= 1 val and test)."""
    out = np.empty(len(classes), dtype=object)
    f = np.asarray(fractions, dtype=float) / sum(fractions)
    for k in range(len(CLASSES)):
        idx = np.flatnonzero(classes == k)
        if len(idx) == 0:
            continue
        idx = idx[draw(seed, 23, k).permutation(len(idx))]
        n_val = max(round(f[1] * len(idx)), int(f[1] > 0 and len(idx) >= 3))
        n_test = max(round(f[2] * len(idx)), int(f[2] > 0 and len(idx) >= 3))
        out[idx] = "train"
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "val"
    return out


def write_phantom_cxr5(
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    fmt: str = "npz",
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    weights: dict[str, float] | None = None,
    workers: int | None = None,
    masks: bool = False,
) -> Path:
    """Write ``n`` five-class phantom images; return ``data.root`` (the .npz file, or ``out``).

    Args:
        out: target folder; created if missing.
        n: number of images.
        size: image side in pixels.
        seed: dataset seed.
        fmt: ``npz`` (arrays, as Witon et al. ship them) or ``folder`` (class folders of PNGs).
        fractions: train/val/test shares, stratified by class.
        weights: class frequencies (default :data:`WEIGHTS`).
        workers: processes to render with (default: all cores).
        masks: also write the lung and heart masks, ``masks/<structure>/<split>/<CLASS>/<i>.png``
            (folder) or ``masks/<structure>/<split>/<position in the split>.png`` (npz: the names
            the ``npz`` source gives its exported images).
    """
    if fmt not in ("npz", "folder"):
        raise CxrlabError(f"phantom cxr5: fmt {fmt!r}; expected npz or folder")
    check_args(n, size, len(CLASSES))
    weights = {**WEIGHTS, **(weights or {})}
    out = Path(out)
    clear_previous(out, ("train", "val", "test", "cxr5_png", "masks"))  # also the npz source's stale PNG export
    out.mkdir(parents=True, exist_ok=True)
    classes = np.array([class_of(i, seed, weights) for i in range(n)])
    split = _splits(classes, seed, fractions)
    paths = [str(out / split[i] / CLASSES[k] / f"{i:06d}.png") if fmt == "folder" else ""
             for i, k in enumerate(classes)]
    rels = [p[len(str(out)) + 1:].rsplit(".", 1)[0] for p in paths]
    if fmt == "npz":  # the npz source names image j of a split <split>/<j:06d>.png
        for s in ("train", "val", "test"):
            for j, i in enumerate(np.flatnonzero(split == s)):
                rels[i] = f"{s}/{j:06d}"
    pixels = run_jobs(_render, [(i, size, seed, int(k), paths[i], *([(str(out), rels[i])] if masks else []))
                                for i, k in enumerate(classes)], workers, "phantom cxr5")
    root = out
    if fmt == "npz":
        arrays: dict[str, np.ndarray] = {"label_names": np.array(CLASSES)}
        for s in ("train", "val", "test"):
            idx = np.flatnonzero(split == s)
            if len(idx):
                arrays[f"{s}_images"] = np.stack([pixels[i] for i in idx])
                arrays[f"{s}_labels"] = classes[idx].astype(np.int64)
        root = out / "cxr5.npz"
        np.savez_compressed(root, **arrays)
    counts = {s: {c: int(((split == s) & (classes == k)).sum()) for k, c in enumerate(CLASSES)}
              for s in ("train", "val", "test")}
    meta = {"generator": "cxrlab.phantom", "layout": f"cxr5-{fmt}", "n": n, "size": size, "seed": seed,
            "fractions": list(fractions), "weights": weights, "labels": list(CLASSES), "counts": counts}
    if masks:  # only when set, so that the default phantom.json stays as it was
        meta["masks"] = MASKS_META
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return root
