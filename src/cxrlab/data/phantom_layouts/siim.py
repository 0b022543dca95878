"""SIIM-ACR-layout phantom: pneumothorax masks as the competition's run-length code, DICOM images.

Layout (what the ``siim`` source reads; ``data.root`` = ``OUT``)::

    OUT/train-rle.csv                                   ImageId, " EncodedPixels" (-1: none)
    OUT/dicom-images-train/<study>/<series>/<ImageId>.dcm   8-bit MONOCHROME2, PatientID/Sex/Age, ViewPosition
    OUT/phantom.json

A pneumothorax (``pneumothorax_fraction`` of the images) is drawn here, not by the default phantom's
lesion, so that its region is known exactly: the lung's rim outside an ellipse shrunk toward the hilum,
darker and without the lung's texture, with a bright pleural line.  Its mask is that region; in a
``split_fraction`` share of the positives it is written as two rows (upper and lower part), as SIIM
has several rows for one image.  :func:`render_siim` gives the pixels and the true region.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrlab.data.phantom import draw_frontal, patient_of
from cxrlab.data.phantom_layouts.common import check_args, clear_previous, draw, run_jobs
from cxrlab.data.phantom_layouts.draw import Anatomy, Canvas, box_of, ellipse
from cxrlab.runio import atomic_write_text

UID_ROOT = "1.2.276.0.7230010.3.1"


def image_id(index: int, seed: int) -> str:
    """The phantom's ImageId: SIIM's UID shape (``1.2.276.0.7230010.3.1.4.<...>``), one per image."""
    return f"{UID_ROOT}.4.{seed}.{index}.1517875{index:03d}"


def render_siim(index: int, size: int, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Pixels, the true pneumothorax region (None without one) and the header values of image ``index``."""
    patient = patient_of(index, seed)[0]
    rng = draw(seed, 2, index)
    g = draw(seed, 30, index)
    positive = bool(g.random() < fraction)
    side, shrink = int(g.integers(2)), float(g.uniform(0.66, 0.8))
    region: dict[str, np.ndarray] = {}

    def pneumothorax(c: Canvas, _rng: np.random.Generator) -> list:
        lx = c.lung_x(side)
        a = c.anatomy
        hx = lx + (0.35 * a.lung_ax if side == 0 else -0.35 * a.lung_ax)
        inner = ellipse(c.xx, c.yy, hx, c.lcy + 0.08 * a.lung_ay, a.lung_ax * shrink, a.lung_ay * shrink)
        rim = c.lung_masks[side] & (inner > 1.0)
        line = np.exp(-(((np.sqrt(inner) - 1.0) / 0.025) ** 2)) * c.lung_masks[side]
        c.img = np.where(rim, c.img.min() + 0.02, c.img) + 0.10 * line * ~rim
        region["mask"] = rim
        return [("Pneumothorax", box_of(rim))]

    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    pixels, _ = draw_frontal(size, Anatomy.draw(draw(seed, 1, patient)), pose, rng, {},
                             extra=pneumothorax if positive else None)
    h = draw(seed, 31, patient)
    header = {"PatientID": f"phantom-{patient:05d}", "PatientSex": "MF"[int(h.integers(2))],
              "PatientAge": f"{int(h.integers(18, 90)):03d}Y", "ViewPosition": "PA" if h.random() < 0.6 else "AP"}
    return pixels, region.get("mask"), header


def write_dicom(path: Path, pixels: np.ndarray, uid: str, header: dict) -> None:
    """An 8-bit MONOCHROME2 DICOM (explicit VR little endian) with ``header``'s patient tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture, as SIIM's files
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    for k, v in header.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def mask_rows(mask: np.ndarray | None, split: bool) -> list[np.ndarray]:
    """The rows one image gets: none, the whole region, or its upper and lower parts."""
    if mask is None or not mask.any():
        return []
    if not split:
        return [mask]
    ys = np.flatnonzero(mask.any(1))
    cut = int(ys[len(ys) // 2])
    upper = mask.copy()
    upper[cut:] = False
    lower = mask & ~upper
    return [m for m in (upper, lower) if m.any()]


def _render(args: tuple) -> tuple[str, list[str]]:
    from cxrlab.data.sources.siim import siim_rle_encode

    index, size, seed, fraction, split_fraction, out = args
    pixels, region, header = render_siim(index, size, seed, fraction)
    uid = image_id(index, seed)
    study = f"{UID_ROOT}.2.{seed}.{index}"
    series = f"{UID_ROOT}.3.{seed}.{index}"
    write_dicom(Path(out) / "dicom-images-train" / study / series / f"{uid}.dcm", pixels, uid, header)
    rows = mask_rows(region, bool(draw(seed, 32, index).random() < split_fraction))
    return uid, [siim_rle_encode(m) for m in rows] or ["-1"]


def write_phantom_siim(out: str | Path, n: int = 1000, size: int = 256, seed: int = 0,
                       pneumothorax_fraction: float = 0.25, split_fraction: float = 0.3,
                       workers: int | None = None) -> Path:
    """Write ``n`` phantom images in the SIIM-ACR layout; return ``out`` (``data.root``).

    Args:
        out: target folder; created if missing.
        n: number of images (patients have 1-3 images).
        size: image side in pixels (DICOM files).
        seed: dataset seed.
        pneumothorax_fraction: share of images with a pneumothorax (about 22% in the real training set).
        split_fraction: share of positives whose mask is written as two rows.
        workers: processes to render with (default: all cores).
    """
    check_args(n, size, 4)
    out = Path(out)
    clear_previous(out, ("dicom-images-train",))
    jobs = [(i, size, seed, pneumothorax_fraction, split_fraction, str(out)) for i in range(n)]
    results = run_jobs(_render, jobs, workers, "phantom siim")
    lines = ["ImageId, EncodedPixels"] + [f"{uid},{rle}" for uid, rles in results for rle in rles]
    atomic_write_text(out / "train-rle.csv", "\n".join(lines) + "\n")
    positives = sum(rles != ["-1"] for _, rles in results)
    meta = {"generator": "cxrlab.phantom", "layout": "siim", "n": n, "size": size, "seed": seed,
            "pneumothorax_fraction": pneumothorax_fraction, "split_fraction": split_fraction,
            "counts": {"images": n, "positive": positives, "mask_rows": sum(len(r) for _, r in results
                                                                             if r != ["-1"])}}
    atomic_write_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return out
