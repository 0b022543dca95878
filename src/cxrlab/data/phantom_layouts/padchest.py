"""PadChest-layout phantom: 16-bit PNGs in numbered folders and the list-valued ``Labels`` table.

Layout (what the ``padchest`` source reads; ``data.root`` = ``OUT/PadChest``)::

    OUT/PadChest/
      PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz
          ImageID, ImageDir, StudyDate_DICOM, StudyID, PatientID, PatientBirth, PatientSex_DICOM,
          Projection, MethodLabel, Labels ("['pleural effusion', 'cardiomegaly']", "['normal']")
      0/<ImageID>.png  1/ ... (``folders`` numbered folders, 16-bit grey PNG)
      phantom_truth.csv, phantom.json

Image ``i`` is :func:`cxrlab.data.phantom.render` ``(i, size, seed)`` scaled to 16 bits; its lesions
become PadChest terms (:data:`TERMS`), no lesion ``normal``.  ``physician`` of the images are
``MethodLabel=Physician`` with exact terms; the others are ``RNN_model`` and miss each term with
probability ``model_miss`` (the machine labels are noisier, as in the real table).  A few rows
(``p_empty``) have an empty ``Labels`` cell, as the real table does.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from cxrlab.data.phantom import render
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
)
from cxrlab.data.sources.padchest import TABLE
from cxrlab.runio import atomic_write_bytes, atomic_write_text

FOLDER = "PadChest"
#: Phantom lesion -> PadChest term.
TERMS: dict[str, str] = {"Nodule": "nodule", "Mass": "mass", "Cardiomegaly": "cardiomegaly",
                         "Effusion": "pleural effusion", "Pneumothorax": "pneumothorax",
                         "Consolidation": "consolidation"}
HEADER = ("ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,Projection,"
          "MethodLabel,Labels")


def _image(args: tuple) -> dict:
    index, size, seed, folders, root = args
    img = render(index, size, seed)
    d = draw(seed, 40, index)
    name = f"2168401113669640{seed:04d}{index:08d}_{img.patient:02d}-{img.follow_up:03d}.png"
    folder = str(int(d.integers(folders)))
    save_image(Path(root) / folder / name, img.pixels.astype("uint16") * 257)
    return {"name": name, "dir": folder, "patient": img.patient, "follow_up": img.follow_up,
            "terms": [TERMS[k] for k, v in img.labels.items() if v], "view": "PA" if d.random() < 0.6 else "AP"}


def write_phantom_padchest(out: str | Path, n: int = 1000, size: int = 256, seed: int = 0, folders: int = 4,
                           physician: float = 0.27, model_miss: float = 0.15, p_empty: float = 0.02,
                           workers: int | None = None) -> Path:
    """Write ``n`` phantom images in the PadChest layout; return the folder to read (``data.root``).

    Args:
        out: target folder; the dataset goes to ``out/PadChest``.
        n: number of images.
        size: image side in pixels (16-bit PNG).
        seed: dataset seed.
        folders: number of image folders (``0/`` .. ``folders-1/``; the real dataset has 54).
        physician: share of images labelled by a radiologist (``MethodLabel=Physician``).
        model_miss: probability that a machine-labelled image misses one of its terms.
        p_empty: share of images with an empty ``Labels`` cell.
        workers: processes to render with (default: all cores).
    """
    check_args(n, size, 2)
    out = Path(out)
    root = out / FOLDER
    clear_previous(root, [str(k) for k in range(max(folders, 54))])
    root.mkdir(parents=True, exist_ok=True)
    images = run_jobs(_image, [(i, size, seed, folders, str(root)) for i in range(n)], workers, "phantom padchest")
    rows, truth = [HEADER], ["ImageID,MethodLabel,empty," + ",".join(TERMS.values())]
    for i, im in enumerate(images):
        p = draw(seed, 41, im["patient"])
        birth, sex = int(p.integers(1920, 2000)), ("M" if p.random() < 0.5 else "F")
        g = draw(seed, 42, i)
        year = min(2017, max(2009, birth + 18 + int(g.integers(0, 60))))
        date = f"{year}{int(g.integers(1, 13)):02d}{int(g.integers(1, 29)):02d}"
        manual = g.random() < physician
        terms = im["terms"] if manual else [t for t in im["terms"] if g.random() >= model_miss]
        empty = g.random() < p_empty
        cell = "" if empty else '"' + repr(terms or ["normal"]) + '"'
        method = "Physician" if manual else "RNN_model"
        rows.append(f"{im['name']},{im['dir']},{date},{seed}{i:07d},{im['patient']},{birth}.0,{sex},{im['view']},"
                    f"{method},{cell}")
        truth.append(",".join([im["name"], method, str(int(empty)), *(str(int(t in im["terms"]))
                                                                     for t in TERMS.values())]))
    atomic_write_bytes(root / f"{TABLE}.gz", gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0))
    atomic_write_text(root / "phantom_truth.csv", "\n".join(truth) + "\n")
    meta = {"generator": "cxrlab.phantom", "layout": "padchest", "n": n, "size": size, "seed": seed,
            "folders": folders, "physician": physician, "model_miss": model_miss, "p_empty": p_empty,
            "terms": TERMS, "bits": 16}
    atomic_write_text(root / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return root
