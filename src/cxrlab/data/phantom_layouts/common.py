"""Shared helpers of the phantom dataset writers: parallel rendering, image and DICOM files, draws."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.progress import progress
from cxrlab.runio import atomic_write_text


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


def save_dicom(path: str | Path, pixels: np.ndarray, **header: str) -> None:
    """Write 8-bit grey ``pixels`` as an uncompressed MONOCHROME2 DICOM with ``header`` tags
    (``PatientSex="F"``, ...): what the VinDr and RSNA phantoms ship instead of PNGs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    with warnings.catch_warnings():  # RSNA's PatientAge is a bare number ("51"), not DICOM's "051Y"
        warnings.simplefilter("ignore", UserWarning)
        for key, value in header.items():
            setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def draw(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of ``(seed, *keys)``: reproducible in any process and order."""
    return np.random.default_rng([seed, *keys])


def clear_previous(folder: Path, subdirs: Sequence[str]) -> None:
    """Remove ``subdirs`` of an earlier phantom in ``folder`` (one with a phantom.json), so that
    no stale image of a larger or other phantom is read with the new one; other folders stay."""
    if (folder / "phantom.json").is_file():
        for sub in subdirs:
            shutil.rmtree(folder / sub, ignore_errors=True)


def write_meta(out: Path, layout: str, n: int, size: int, seed: int, **fields: Any) -> None:
    """Write ``out/phantom.json``, how the phantom was made: generator, layout, n, size, seed, then
    ``fields`` in their order; one writer so that every layout's record starts alike."""
    meta = {"generator": "cxrlab.phantom", "layout": layout, "n": n, "size": size, "seed": seed, **fields}
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")


def save_masks(root: str | Path, rel: str, masks: dict[str, np.ndarray]) -> None:
    """Write ``masks`` (structure -> bool array) as ``root/masks/<structure>/<rel>.png``, 0 / 255,
    where ``rel`` is the image's path without suffix (what :func:`cxrlab.data.masks.read_masks` matches)."""
    for structure, mask in masks.items():
        save_image(Path(root) / "masks" / structure / f"{rel}.png", mask.astype(np.uint8) * 255)


MASKS_META = {"layout": "masks/<structure>/<image path>.png", "structures": ["right_lung", "left_lung", "heart"],
              "pixels": "original", "values": "0 outside, 255 inside"}
