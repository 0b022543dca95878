"""VinDr-CXR-layout phantom: DICOMs, per-reader labels (3 readers per train image), boxes in DICOM pixels.

Layout (what the ``vindr`` source reads; ``data.root`` = ``OUT``; PhysioNet 1.0.0)::

    OUT/annotations/image_labels_train.csv   image_id, rad_id, 28 label columns (0/1); 3 rows per image
    OUT/annotations/image_labels_test.csv    image_id, 28 label columns: the consensus, one row per image
    OUT/annotations/annotations_train.csv    image_id, rad_id, class_name, x_min, y_min, x_max, y_max
    OUT/annotations/annotations_test.csv     (one row per box; a reader with no box: "No finding", blank)
    OUT/train/<image_id>.dicom  OUT/test/<image_id>.dicom
    OUT/phantom.json

The phantom's lesions become VinDr classes (:data:`FROM_PHANTOM`: Nodule and Mass -> Nodule/Mass,
Effusion -> Pleural effusion, ...); the other 22 columns stay 0.  Each train reader reports a true
finding with probability ``reader_sensitivity`` and a false one with ``reader_false_rate`` (a box
somewhere in the lungs), so ``aggregate: any`` and ``majority`` give different labels, as in the real
data.  Test labels are the truth (the real test set's five-reader consensus).  Image ids are 32 hex
digits, as VinDr's; every image is its own patient (VinDr publishes no patient ids).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from cxrlab.data.phantom import LABELS, PREVALENCE, draw_frontal
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_dicom,
    write_meta,
)
from cxrlab.data.phantom_layouts.draw import Anatomy

#: The 28 label columns of VinDr-CXR's image_labels_*.csv (PhysioNet 1.0.0), in the table's order.
VINDR_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding",
)
#: Phantom lesion -> the VinDr class it is written as.
FROM_PHANTOM: dict[str, str] = {"Nodule": "Nodule/Mass", "Mass": "Nodule/Mass", "Cardiomegaly": "Cardiomegaly",
                                "Effusion": "Pleural effusion", "Pneumothorax": "Pneumothorax",
                                "Consolidation": "Consolidation"}
PHANTOM_CLASSES: tuple[str, ...] = tuple(dict.fromkeys(FROM_PHANTOM.values()))


def image_id(seed: int, index: int) -> str:
    return hashlib.md5(f"vindr-phantom-{seed}-{index}".encode()).hexdigest()


def _render(args: tuple) -> list:
    index, size, seed, path, findings, header = args
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    pixels, boxes = draw_frontal(size, Anatomy.draw(draw(seed, 1, index)), pose, rng, findings)
    save_dicom(path, pixels, **header)
    return [(FROM_PHANTOM[label], box) for label, box in boxes if label in FROM_PHANTOM]


def _corners(box: tuple[float, float, float, float], size: int) -> list[float]:
    x, y, w, h = box
    return [round(max(0.0, x), 1), round(max(0.0, y), 1), round(min(size, x + w), 1), round(min(size, y + h), 1)]


def write_phantom_vindr(out: str | Path, n: int = 300, size: int = 256, seed: int = 0, test_fraction: float = 0.2,
                        readers: int = 3, reader_sensitivity: float = 0.8, reader_false_rate: float = 0.04,
                        workers: int | None = None) -> Path:
    """Write ``n`` phantom DICOMs in the VinDr-CXR layout; return ``out`` (``data.root``).

    Args:
        n: images; ``test_fraction`` of them go to ``test/`` (consensus labels), the rest to
            ``train/`` with ``readers`` readers each (out of R1..R17).
        reader_sensitivity, reader_false_rate: how often a train reader reports a true finding and
            a finding the image does not have.
    """
    check_args(n, size, 10)
    out = Path(out)
    clear_previous(out, ("train", "test", "annotations"))
    jobs, truth, splits, ids = [], [], [], []
    for i in range(n):
        g = draw(seed, 40, i)
        findings = {lab: int(g.random() < PREVALENCE[lab]) for lab in LABELS}
        split = "test" if draw(seed, 3, i).random() < test_fraction else "train"
        header = {"PatientSex": "MF"[int(g.random() < 0.45)], "PatientAge": f"{int(g.integers(20, 90)):03d}Y"}
        if g.random() < 0.1:  # VinDr's headers lack the demographics in some images
            header = {}
        ids.append(image_id(seed, i))
        jobs.append((i, size, seed, str(out / split / f"{ids[-1]}.dicom"), findings, header))
        truth.append(findings)
        splits.append(split)
    all_boxes = run_jobs(_render, jobs, workers, "phantom vindr")
    label_rows: dict[str, list] = {"train": [], "test": []}
    box_rows: dict[str, list] = {"train": [], "test": []}
    for i, (iid, split, boxes) in enumerate(zip(ids, splits, all_boxes, strict=True)):
        true = {cls: [b for c, b in boxes if c == cls] for cls in PHANTOM_CLASSES}
        if split == "test":
            reports = {"": {cls: bs for cls, bs in true.items() if bs}}
        else:
            g = draw(seed, 41, i)
            rads = [f"R{r + 1}" for r in g.choice(17, size=readers, replace=False)]
            reports = {}
            for rad in rads:
                seen = {}
                for cls in PHANTOM_CLASSES:
                    if true[cls] and g.random() < reader_sensitivity:
                        seen[cls] = [(x + g.normal(0, 0.5), y + g.normal(0, 0.5), w, h) for x, y, w, h in true[cls]]
                    elif not true[cls] and g.random() < reader_false_rate:
                        s = size * float(g.uniform(0.1, 0.2))
                        seen[cls] = [(float(g.uniform(0.2, 0.7)) * size, float(g.uniform(0.25, 0.6)) * size, s, s)]
                reports[rad] = seen
        for rad, seen in reports.items():
            row = {"image_id": iid, **({"rad_id": rad} if rad else {}), **dict.fromkeys(VINDR_LABELS, 0)}
            for cls in seen:
                row[cls] = 1
            row["No finding"] = int(not seen)
            label_rows[split].append(row)
            for cls, bs in seen.items():
                for b in bs:
                    box_rows[split].append([iid, rad or "R_consensus", cls, *_corners(b, size)])
            if not seen:
                box_rows[split].append([iid, rad or "R_consensus", "No finding", None, None, None, None])
    ann = out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        pd.DataFrame(label_rows[split], columns=["image_id", *(["rad_id"] if split == "train" else []),
                                                 *VINDR_LABELS]).to_csv(ann / f"image_labels_{split}.csv", index=False)
        pd.DataFrame(box_rows[split], columns=["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max",
                                               "y_max"]).to_csv(ann / f"annotations_{split}.csv", index=False)
    write_meta(out, "vindr", n, size, seed, test_fraction=test_fraction, readers=readers,
               reader_sensitivity=reader_sensitivity, reader_false_rate=reader_false_rate, from_phantom=FROM_PHANTOM,
               counts={s: splits.count(s) for s in ("train", "test")})
    return out
