"""Kermany-layout phantom: binary pneumonia, ``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

Layout (what the ``kermany`` source reads; ``data.root`` = ``OUT``)::

    OUT/train/NORMAL/IM-0003-0001.jpeg  NORMAL2-IM-0007-0002.jpeg ...
    OUT/train/PNEUMONIA/person1_bacteria_0.jpeg  person2_virus_5.jpeg ...
    OUT/val/...   (a few images per class, as the official 16-image val folder)
    OUT/test/...
    OUT/phantom.json

Each patient has one class: PNEUMONIA (``pneumonia_fraction`` of patients,
bacterial: a dense lobar consolidation with air bronchograms, or viral:
bilateral perihilar streaky opacity) or NORMAL.  File names follow Kermany, so
the source derives patients (``person12``, ``IM-0003``, ``NORMAL2-IM-0007``).
Splits are by patient, except ``shared_patients`` patients whose images are
split between train and test, like the leak in the real dataset.
"""

from __future__ import annotations

from pathlib import Path

from cxrlab.data.phantom import draw_frontal, patient_of
from cxrlab.data.phantom_layouts.common import (
    MASKS_META,
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
    save_masks,
    write_meta,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.patterns import extra_patterns
from cxrlab.errors import CxrlabError


def _case(patient: int, seed: int, pneumonia_fraction: float) -> tuple[str, str]:
    """(class, kind) of a patient: PNEUMONIA bacteria|virus, or NORMAL IM|NORMAL2."""
    g = draw(seed, 10, patient)
    u, v = g.random(), g.random()
    if u < pneumonia_fraction:
        return "PNEUMONIA", "bacteria" if v < 0.65 else "virus"
    return "NORMAL", "NORMAL2" if v < 0.3 else "IM"


def patient_id(patient: int, cls: str, kind: str) -> str:
    """The patient as the ``kermany`` source reads it from the file name."""
    if cls == "PNEUMONIA":
        return f"person{patient}"
    return f"{'NORMAL2-' if kind == 'NORMAL2' else ''}IM-{patient:04d}"


def file_name(index: int, patient: int, follow_up: int, cls: str, kind: str) -> str:
    if cls == "PNEUMONIA":  # Kermany numbers pneumonia images across patients
        return f"person{patient}_{kind}_{index}.jpeg"
    return f"{patient_id(patient, cls, kind)}-{follow_up + 1:04d}.jpeg"


def _render(args: tuple) -> None:
    index, size, seed, cls, kind, path, *masks_at = args  # masks_at: (root, rel) with masks=True
    patient = patient_of(index, seed)[0]
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    s = float(rng.uniform(0.5, 1.0)) if cls == "PNEUMONIA" else 0.0
    pattern = "lobar_consolidation" if kind == "bacteria" else "interstitial"
    hook = extra_patterns({"Pneumonia": (pattern, s)})
    masks: dict | None = {} if masks_at else None
    pixels, _ = draw_frontal(size, Anatomy.draw(draw(seed, 1, patient)), pose, rng, {}, extra=hook, masks=masks)
    save_image(path, pixels)
    if masks_at:
        save_masks(*masks_at[0], masks)


def _assign(images: dict[int, list[int]], cls: dict[int, str], seed: int, test_fraction: float,
            val_per_class: int, shared: int) -> dict[int, str]:
    """Split of each image index: by patient, with the class cells filled and ``shared`` leaks."""
    split = {p: "test" if draw(seed, 3, p).random() < test_fraction else "train" for p in images}
    for k, c in enumerate(("NORMAL", "PNEUMONIA")):
        mine = [p for p in images if cls[p] == c]
        if len(mine) < 2:
            raise CxrlabError(f"phantom kermany: only {len(mine)} {c} patients; raise --n")
        if all(split[p] == "train" for p in mine):
            split[mine[-1]] = "test"
        if all(split[p] == "test" for p in mine):
            split[mine[0]] = "train"
        if val_per_class > 0:  # whole train patients, in a seeded order, while one stays in train
            train = [mine[i] for i in draw(seed, 11, k).permutation(len(mine)) if split[mine[i]] == "train"]
            got = 0
            for p in train[:-1]:
                if got >= val_per_class:
                    break
                split[p], got = "val", got + len(images[p])
    if val_per_class > 0 and {split[p] for p in images if cls[p] == "NORMAL"} != {
            split[p] for p in images if cls[p] == "PNEUMONIA"}:
        for p in images:  # one class could not fill val: keep no val folder at all
            split[p] = "train" if split[p] == "val" else split[p]
    out = {i: split[p] for p, idx in images.items() for i in idx}
    order = [int(p) for p in draw(seed, 12).permutation(sorted(images))]
    multi = [p for p in order if len(images[p]) > 1]
    leaks = [p for p in multi if split[p] == "test"] + [p for p in multi if split[p] == "train"]
    if len(leaks) < shared:
        raise CxrlabError(f"phantom kermany: only {len(leaks)} patients could be shared; raise --n")
    for p in leaks[:shared]:  # a test patient's first image goes to train, a train patient's last to test
        idx = images[p]
        if split[p] == "test":
            out[idx[0]] = "train"
        else:
            out[idx[-1]] = "test"
    return out


def write_phantom_kermany(
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    pneumonia_fraction: float = 0.73,
    test_fraction: float = 0.12,
    val_per_class: int = 8,
    shared_patients: int = 1,
    workers: int | None = None,
    masks: bool = False,
) -> Path:
    """Write ``n`` phantom images in the Kermany layout; return ``out`` (``data.root``).

    Args:
        out: target folder; created if missing.
        n: number of images (patients have 1-3 images).
        size: image side in pixels (JPEG files).
        seed: dataset seed.
        pneumonia_fraction: share of patients with pneumonia (about 73% in the real data).
        test_fraction: share of patients in ``test``.
        val_per_class: about this many images per class in ``val`` (0: no val folder).
        shared_patients: patients with images in both train and test (the real leak; 0: none).
        workers: processes to render with (default: all cores).
        masks: also write the lung and heart masks, ``masks/<structure>/<split>/<CLASS>/<image stem>.png``.
    """
    check_args(n, size, 8)
    out = Path(out)
    clear_previous(out, ("train", "val", "test", "masks"))
    images: dict[int, list[int]] = {}
    for i in range(n):
        images.setdefault(patient_of(i, seed)[0], []).append(i)
    case = {p: _case(p, seed, pneumonia_fraction) for p in images}
    cls = {p: c for p, (c, _) in case.items()}
    split = _assign(images, cls, seed, test_fraction, val_per_class, shared_patients)
    jobs, files = [], []
    for p, idx in images.items():
        c, kind = case[p]
        for f, i in enumerate(idx):
            rel = f"{split[i]}/{c}/{file_name(i, p, f, c, kind)}"
            jobs.append((i, size, seed, c, kind, str(out / rel),
                         *([(str(out), rel.rsplit(".", 1)[0])] if masks else [])))
            files.append(rel)
    run_jobs(_render, jobs, workers, "phantom kermany")
    shared = sorted(p for p, idx in images.items() if len({split[i] for i in idx} - {"val"}) > 1)
    counts = {f"{s}/{c}": sum(f.startswith(f"{s}/{c}/") for f in files)
              for s in ("train", "val", "test") for c in ("NORMAL", "PNEUMONIA")}
    write_meta(out, "kermany", n, size, seed, pneumonia_fraction=pneumonia_fraction, test_fraction=test_fraction,
               val_per_class=val_per_class, shared_patients=[patient_id(p, *case[p]) for p in shared],
               counts=counts,
               **({"masks": MASKS_META} if masks else {}))  # only when set: the default record stays as it was
    return out
