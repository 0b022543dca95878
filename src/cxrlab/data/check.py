"""Scan every image of a manifest and report all problems at once."""

from __future__ import annotations

import os
from pathlib import Path

from cxrlab.data.io import read_gray
from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress

MIN_SIDE = 32


def check_one(path: str) -> str | None:
    """``None`` if the image reads as a plausible radiograph, else what is wrong."""
    try:
        img = read_gray(path)
    except CxrlabError as e:
        return str(e)
    if img.ndim != 2:
        return f"{path}: unexpected shape {img.shape}"
    if min(img.shape) < MIN_SIDE:
        return f"{path}: too small ({img.shape[1]} x {img.shape[0]} px; at least {MIN_SIDE} px expected)"
    if float(img.max()) == float(img.min()):
        return f"{path}: blank image (all pixels {float(img.max()):g})"
    return None


def check_images(paths: list[Path], workers: int = 0) -> list[str]:
    """Problems found, one line each (empty list: all images are fine)."""
    jobs = [str(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) >= 64:
        with worker_pool(workers) as pool:
            results = list(progress(pool.map(check_one, jobs, chunksize=32), total=len(jobs), desc="check"))
    else:
        results = [check_one(j) for j in progress(jobs, desc="check")]
    return [r for r in results if r]
