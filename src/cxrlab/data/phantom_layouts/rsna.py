"""RSNA Pneumonia Detection-layout phantom: DICOMs with demographics in the header, opacity boxes.

Layout (what the ``rsna`` source reads; ``data.root`` = ``OUT``; the Kaggle stage 2 files)::

    OUT/stage_2_train_labels.csv          patientId, x, y, width, height, Target (one row per box;
                                          a Target 0 image has one row with blank box)
    OUT/stage_2_detailed_class_info.csv   patientId, class (Lung Opacity | No Lung Opacity / Not Normal
                                          | Normal), one row per row of the labels table, as Kaggle's
    OUT/stage_2_train_images/<patientId>.dcm   PatientSex, PatientAge (e.g. "51"), ViewPosition (PA/AP)
    OUT/phantom.json

One image per patient (as in RSNA).  ``opacity_fraction`` of the images have one or two lobar
consolidations (Target 1, one box each); of the others, those with a phantom cardiomegaly or
effusion are "No Lung Opacity / Not Normal", the rest "Normal".  AP views are more common in
patients with opacity (as in the real data, where AP films are from sicker patients).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

from cxrlab.data.phantom import draw_frontal
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_dicom,
    write_meta,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.patterns import PATTERNS

CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")


def patient_id(seed: int, index: int) -> str:
    """A uuid-shaped id, as RSNA's ``patientId``."""
    return str(uuid.UUID(bytes=draw(seed, 50, index).bytes(16)))


def _render(args: tuple) -> list:
    index, size, seed, path, n_opacities, findings, header = args
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))

    def hook(c, r):
        return [("Lung Opacity", PATTERNS["lobar_consolidation"](c, r, float(r.uniform(0.6, 1.0))))
                for _ in range(n_opacities)]

    pixels, boxes = draw_frontal(size, Anatomy.draw(draw(seed, 1, index)), pose, rng, findings, extra=hook)
    save_dicom(path, pixels, **header)
    return [b for label, b in boxes if label == "Lung Opacity"]


def write_phantom_rsna(out: str | Path, n: int = 300, size: int = 256, seed: int = 0,
                       opacity_fraction: float = 0.3, workers: int | None = None) -> Path:
    """Write ``n`` phantom DICOMs in the RSNA Pneumonia Detection layout; return ``out`` (``data.root``)."""
    check_args(n, size, 10)
    out = Path(out)
    clear_previous(out, ("stage_2_train_images",))
    jobs, meta_rows = [], []
    for i in range(n):
        g = draw(seed, 51, i)
        opacity = g.random() < opacity_fraction
        k = (1 + int(g.random() < 0.4)) if opacity else 0
        findings = {"Cardiomegaly": int(g.random() < 0.25), "Effusion": int(g.random() < 0.2)}
        cls = CLASSES[0] if opacity else CLASSES[1] if any(findings.values()) else CLASSES[2]
        pid = patient_id(seed, i)
        header = {"PatientID": pid, "PatientSex": "MF"[int(g.random() < 0.43)],
                  "PatientAge": str(int(g.integers(5, 90))),
                  "ViewPosition": "AP" if g.random() < (0.7 if opacity else 0.4) else "PA"}
        jobs.append((i, size, seed, str(out / "stage_2_train_images" / f"{pid}.dcm"), k, findings, header))
        meta_rows.append((pid, cls))
    all_boxes = run_jobs(_render, jobs, workers, "phantom rsna")
    labels, info = [], []
    for (pid, cls), boxes in zip(meta_rows, all_boxes, strict=True):
        rows = [[pid, round(x, 1), round(y, 1), round(w, 1), round(h, 1), 1] for x, y, w, h in boxes] \
            if boxes else [[pid, None, None, None, None, 0]]
        labels += rows
        info += [[pid, cls]] * len(rows)
    pd.DataFrame(labels, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        out / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(info, columns=["patientId", "class"]).to_csv(out / "stage_2_detailed_class_info.csv", index=False)
    write_meta(out, "rsna", n, size, seed, opacity_fraction=opacity_fraction,
               counts={c: sum(cls == c for _, cls in meta_rows) for c in CLASSES})
    return out
