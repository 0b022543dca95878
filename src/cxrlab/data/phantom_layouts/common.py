"""Shared helpers of the phantom dataset writers: parallel rendering, image files, draws."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress


def check_args(n: int, size: int, minimum: int = 1) -> None:
    if n < minimum:
        raise CxrlabError(f"phantom: --n must be >= {minimum} for this mode, got {n}")
    if size < 32:
        raise CxrlabError(f"phantom: size must be >= 32 px, got {size}")


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None, desc: str) -> list[Any]:
    """``[fn(j) for j in jobs]``, over processes when worth it; results keep the job order."""
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) >= 64:
        with worker_pool(workers) as pool:
            return list(progress(pool.map(fn, jobs, chunksize=16), total=len(jobs), desc=desc))
    return [fn(j) for j in progress(jobs, desc=desc)]


def save_image(path: str | Path, pixels: np.ndarray) -> None:
    """Write a grey image; the format follows the suffix (JPEG at OpenCV's default quality 95)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise CxrlabError(f"{path}: could not write image")


def draw(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of ``(seed, *keys)``: reproducible in any process and order."""
    return np.random.default_rng([seed, *keys])


def clear_previous(folder: Path, subdirs: Sequence[str]) -> None:
    """Remove ``subdirs`` of an earlier phantom in ``folder`` (one with a phantom.json), so that
    no stale image of a larger or other phantom is read with the new one; other folders stay."""
    if (folder / "phantom.json").is_file():
        for sub in subdirs:
            shutil.rmtree(folder / sub, ignore_errors=True)


def save_masks(root: str | Path, rel: str, masks: dict[str, np.ndarray]) -> None:
    """Write ``masks`` (structure -> bool array) as ``root/masks/<structure>/<rel>.png``, 0 / 255,
    where ``rel`` is the image's path without suffix (what :func:`cxrlab.data.masks.read_masks` matches)."""
    for structure, mask in masks.items():
        save_image(Path(root) / "masks" / structure / f"{rel}.png", mask.astype(np.uint8) * 255)


MASKS_META = {"layout": "masks/<structure>/<image path>.png", "structures": ["right_lung", "left_lung", "heart"],
              "pixels": "original", "values": "0 outside, 255 inside"}
