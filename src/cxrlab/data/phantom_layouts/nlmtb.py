"""NLM-TB-layout phantom: the Shenzhen and Montgomery sets, label in the file name.

Layout (what the ``nlmtb`` source reads; ``data.root`` = ``OUT``)::

    OUT/ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png ...        ClinicalReadings/CHNCXR_0001_0.txt
    OUT/MontgomerySet/CXR_png/MCUCXR_0001_1.png ...            ClinicalReadings/MCUCXR_0001_1.txt
    OUT/MontgomerySet/ManualMask/leftMask/MCUCXR_0001_1.png    ManualMask/rightMask/...
    OUT/phantom.json

``sets`` picks which sets are written (both by default).  One image per patient; a ``tb_fraction``
share is TB (upper-zone nodules, a cavity and fibrotic streaks: the ``tuberculosis`` pattern), the
last digit of its name 1.  Readings follow each set's format (``male 35yrs`` / ``Patient's Sex: M``,
``Patient's Age: 044Y``).  The phantom's ``leftMask`` is the patient's left lung (on the image's
right), its ``rightMask`` the patient's right, both 0/255 PNGs in image pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrlab.data.phantom import draw_frontal
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.patterns import extra_patterns
from cxrlab.errors import CxrlabError
from cxrlab.runio import atomic_write_text

SETS = {"shenzhen": ("ChinaSet_AllFiles", "CHNCXR"), "montgomery": ("MontgomerySet", "MCUCXR")}


def reading(prefix: str, sex: str, age: int, tb: bool) -> str:
    """The clinical-reading text of one image, in its set's format."""
    finding = "PTB in the right upper field" if tb else "normal"
    if prefix == "CHNCXR":
        return f"{'male' if sex == 'M' else 'female'} {age}yrs\n{finding}\n"
    return f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{finding}\n"


def _render(args: tuple) -> None:
    index, size, seed, folder, stem, tb, with_masks = args
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    hook = extra_patterns({"Tuberculosis": ("tuberculosis", float(draw(seed, 41, index).uniform(0.6, 1.0)) if tb else 0.0)})
    masks: dict | None = {} if with_masks else None
    pixels, _ = draw_frontal(size, Anatomy.draw(draw(seed, 1, index)), pose, rng, {}, extra=hook, masks=masks)
    save_image(Path(folder) / "CXR_png" / f"{stem}.png", pixels)
    if masks is not None:  # the patient's sides (anatomy_masks): leftMask = left_lung
        save_image(Path(folder) / "ManualMask" / "leftMask" / f"{stem}.png", masks["left_lung"].astype("uint8") * 255)
        save_image(Path(folder) / "ManualMask" / "rightMask" / f"{stem}.png", masks["right_lung"].astype("uint8") * 255)


def write_phantom_nlmtb(out: str | Path, n: int = 400, size: int = 256, seed: int = 0, tb_fraction: float = 0.5,
                        sets: tuple[str, ...] = ("shenzhen", "montgomery"), workers: int | None = None) -> Path:
    """Write ``n`` images per set in the NLM TB layout; return ``out`` (``data.root``).

    Args:
        out: target folder; created if missing.
        n: images per set (one per patient).
        size: image side in pixels (PNG files).
        seed: dataset seed.
        tb_fraction: share of TB images (Shenzhen: 336 of 662, Montgomery: 58 of 138).
        sets: ``shenzhen`` and/or ``montgomery`` (only Montgomery has lung masks).
        workers: processes to render with (default: all cores).
    """
    check_args(n, size, 2)
    bad = [s for s in sets if s not in SETS]
    if bad or not sets:
        raise CxrlabError(f"phantom nlmtb: sets must be among {', '.join(SETS)}, got {list(sets)}")
    out = Path(out)
    clear_previous(out, [SETS[s][0] for s in SETS])
    jobs, counts = [], {}
    for k, name in enumerate(sets):
        folder_name, prefix = SETS[name]
        folder = out / folder_name
        tb_count = 0
        for i in range(n):
            index = k * n + i
            g = draw(seed, 40, index)
            tb = bool(g.random() < tb_fraction) if 0 < i < n - 1 else i == 0  # both classes in every set
            sex, age = "MF"[int(g.integers(2))], int(g.integers(5, 85))
            stem = f"{prefix}_{i + 1:04d}_{int(tb)}"
            (folder / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "ClinicalReadings" / f"{stem}.txt", reading(prefix, sex, age, tb))
            jobs.append((index, size, seed, str(folder), stem, tb, name == "montgomery"))
            tb_count += tb
        counts[name] = {"images": n, "tb": tb_count}
    run_jobs(_render, jobs, workers, "phantom nlmtb")
    meta = {"generator": "cxrlab.phantom", "layout": "nlmtb", "n": n, "size": size, "seed": seed,
            "tb_fraction": tb_fraction, "sets": list(sets), "counts": counts,
            "masks": {"leftMask": "the patient's left lung (image right)", "rightMask": "the patient's right lung"}}
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return out
