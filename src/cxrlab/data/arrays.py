"""Decode images once into a resized uint8 array (N, S, S) held in memory.

This is the simple in-memory form of the decode-once cache; the on-disk
memory-mapped cache of ``cxrlab prepare`` builds on the same per-image
function (:func:`load_one`).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cxrlab.data.io import read_gray, to_uint8_resized
from cxrlab.progress import progress


def load_one(args: tuple[str, int]) -> np.ndarray:
    path, size = args
    return to_uint8_resized(read_gray(path), size)


def load_images(paths: list[Path], size: int, workers: int = 0, desc: str = "decode") -> np.ndarray:
    """Read, grey-convert and resize every image; errors name the file."""
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    jobs = [(str(p), size) for p in paths]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(paths) >= 256:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, img in enumerate(progress(pool.map(load_one, jobs, chunksize=64),
                                             total=len(jobs), desc=desc)):
                out[i] = img
    else:
        for i, job in enumerate(progress(jobs, desc=desc)):
            out[i] = load_one(job)
    return out
