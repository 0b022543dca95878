"""MIMIC-CXR-JPG-layout phantom: the default phantom's images under PhysioNet's folder tree and tables.

Layout (what the ``mimic`` source reads; ``data.root`` = ``OUT/mimic-cxr-jpg/2.0.0``)::

    OUT/mimic-cxr-jpg/2.0.0/
      files/p10/p10000001/s50000000/<dicom_id>.jpg
      mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns
      mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 observations (1 / 0 / -1 / blank)
      mimic-cxr-2.0.0-negbio.csv.gz     the same, drawn with the NegBio labeller's other rates
      mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
      mimic-cxr-2.1.0-test-set-labeled.csv   study_id and the truth (0/1) of the test studies
      phantom_truth.csv, phantom.json

Image ``i`` is :func:`cxrlab.data.phantom.render` ``(i, size, seed)`` (the nih14 phantom's lesions),
one study each; a share of studies (``p_second``) holds a second image of the same acquisition
(another ``dicom_id``), so labels are joined per study as in the real tables.  The phantom's
Effusion is MIMIC's ``Pleural Effusion``, Nodule and Mass are ``Lung Lesion``, Cardiomegaly,
Pneumothorax and Consolidation keep their names; the other observations stay blank.  A present
finding is 1 (``-1`` at the labeller's uncertain rate), an absent one blank or 0 (rarely -1).
The split is by patient (about 10 % test, 5 % validate).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrlab.data.phantom import render
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
)
from cxrlab.data.sources.chexpert import OBSERVATIONS
from cxrlab.data.sources.mimic import RADIOLOGIST, TABLES, image_path
from cxrlab.runio import atomic_write_bytes, atomic_write_text

FOLDER = "mimic-cxr-jpg/2.0.0"
#: MIMIC observation -> the phantom lesions it is (positive if any is drawn).
FINDINGS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Cardiomegaly",), "Pleural Effusion": ("Effusion",), "Pneumothorax": ("Pneumothorax",),
    "Consolidation": ("Consolidation",), "Lung Lesion": ("Nodule", "Mass"),
}
#: Per labeller: P(-1 | present), P(-1 | absent), P(blank | absent, not uncertain).
RATES = {"chexpert": (0.12, 0.03, 0.6), "negbio": (0.06, 0.01, 0.5)}


def _image(args: tuple) -> dict:
    index, size, seed, p_second, root = args
    img = render(index, size, seed)
    subject, study = 10_000_000 + img.patient, 50_000_000 + index
    d = draw(seed, 30, index)
    view = "AP" if d.random() < 0.6 else "PA"
    ids = [f"{seed:08x}-{index:08x}-{k:04x}" for k in range(1 + int(d.random() < p_second))]
    for dicom in ids:
        save_image(Path(root) / image_path(subject, study, dicom), img.pixels)
    truth = {obs: int(any(img.labels[x] for x in parts)) for obs, parts in FINDINGS.items()}
    return {"subject": subject, "study": study, "patient": img.patient, "ids": ids, "view": view, "truth": truth}


def _value(present: int, rates: tuple[float, float, float], g: np.random.Generator) -> str:
    u, b = g.random(), g.random()  # always two draws
    p_pos, p_neg, blank = rates
    if present:
        return "-1.0" if u < p_pos else "1.0"
    if u < p_neg:
        return "-1.0"
    return "" if b < blank else "0.0"


def _split(patient: int, seed: int) -> str:
    u = draw(seed, 31, patient).random()
    return "test" if u < 0.10 else ("validate" if u < 0.15 else "train")


def _gz(path: Path, lines: list[str]) -> None:
    import gzip

    atomic_write_bytes(path, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def write_phantom_mimic(out: str | Path, n: int = 1000, size: int = 256, seed: int = 0, p_second: float = 0.2,
                        workers: int | None = None) -> Path:
    """Write ``n`` phantom studies in the MIMIC-CXR-JPG layout; return the folder to read (``data.root``).

    Args:
        out: target folder; the dataset goes to ``out/mimic-cxr-jpg/2.0.0``.
        n: number of studies (images ``0..n-1`` of the default phantom).
        size: image side in pixels (JPEG files).
        seed: dataset seed.
        p_second: share of studies with a second image of the same acquisition.
        workers: processes to render with (default: all cores).
    """
    check_args(n, size, 2)
    out = Path(out)
    root = out / FOLDER
    clear_previous(root, ("files",))
    root.mkdir(parents=True, exist_ok=True)
    studies = run_jobs(_image, [(i, size, seed, p_second, str(root)) for i in range(n)], workers, "phantom mimic")
    meta = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns"]
    split = ["dicom_id,study_id,subject_id,split"]
    header = ",".join(["subject_id", "study_id", *OBSERVATIONS])
    labels = {name: [header] for name in RATES}
    radiologist = [",".join(["study_id", *OBSERVATIONS])]
    truth = [",".join(["study_id", "split", *FINDINGS])]
    for st in studies:
        part = _split(st["patient"], seed)
        for dicom in st["ids"]:
            meta.append(f"{dicom},{st['subject']},{st['study']},CHEST (PORTABLE AP),{st['view']},{size},{size}")
            split.append(f"{dicom},{st['study']},{st['subject']},{part}")
        for k, (name, rates) in enumerate(RATES.items()):
            g = draw(seed, 32 + k, st["study"])
            row = dict.fromkeys(OBSERVATIONS, "")
            row.update({obs: _value(st["truth"][obs], rates, g) for obs in FINDINGS})
            row["No Finding"] = "" if any(row[o] in ("1.0", "-1.0") for o in FINDINGS) else "1.0"
            labels[name].append(",".join([str(st["subject"]), str(st["study"]), *row.values()]))
        if part == "test":
            exact = {o: "0.0" for o in OBSERVATIONS} | {o: f"{v:.1f}" for o, v in st["truth"].items()}
            exact["No Finding"] = "0.0" if any(st["truth"].values()) else "1.0"
            radiologist.append(",".join([str(st["study"]), *(exact[o] for o in OBSERVATIONS)]))
        truth.append(",".join([str(st["study"]), part, *(str(v) for v in st["truth"].values())]))
    _gz(root / f"{TABLES['metadata']}.gz", meta)
    _gz(root / f"{TABLES['split']}.gz", split)
    for name in RATES:
        _gz(root / f"{TABLES[name]}.gz", labels[name])
    atomic_write_text(root / RADIOLOGIST, "\n".join(radiologist) + "\n")
    atomic_write_text(root / "phantom_truth.csv", "\n".join(truth) + "\n")
    info = {"generator": "cxrlab.phantom", "layout": "mimic", "n_studies": n, "size": size, "seed": seed,
            "p_second": p_second, "findings": {k: list(v) for k, v in FINDINGS.items()},
            "rates": {k: dict(zip(("uncertain_present", "uncertain_absent", "blank_absent"), v, strict=True))
                      for k, v in RATES.items()},
            "images": len(meta) - 1}
    atomic_write_text(root / "phantom.json", json.dumps(info, indent=2) + "\n")
    return root
