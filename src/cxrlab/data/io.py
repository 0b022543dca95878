"""Image reading: one function from a file to a 2-D grey array at full precision."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxrlab.errors import CxrlabError

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | Path) -> np.ndarray:
    """Read a single-frame DICOM as float32 with display semantics (bright = dense).

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or
    window from the file when present, and inverts MONOCHROME1 so that every
    image has bright bones.  No quantisation happens here.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise CxrlabError(f"{path}: multi-frame DICOM ({frames} frames) is not a radiograph cxrlab can read")
        raw = ds.pixel_array
    except CxrlabError:
        raise
    except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError, EOFError) as e:
        raise CxrlabError(f"{path}: cannot read DICOM ({type(e).__name__}: {e})") from None
    if raw.ndim != 2:
        raise CxrlabError(f"{path}: DICOM pixel data has shape {raw.shape}, expected one grey frame")
    img = apply_modality_lut(raw, ds).astype(np.float32)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        img = apply_voi_lut(img, ds, prefer_lut=True).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        img = float(img.max()) + float(img.min()) - img
    return img


def _check_complete(path: Path) -> None:
    """Refuse truncated JPEG/PNG files, which OpenCV would decode partially without an error."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - 64, 0))
        tail = f.read().rstrip(b"\x00\r\n\t ")
    if suffix == ".png" and b"IEND" not in tail:
        raise CxrlabError(f"{path}: truncated PNG (no IEND chunk at the end)")
    # 0xFF 0xD9 cannot occur inside entropy-coded data (0xFF is byte-stuffed), so its presence in the
    # last bytes marks a complete file, even with a short trailer after it
    if suffix in (".jpg", ".jpeg") and b"\xff\xd9" not in tail:
        raise CxrlabError(f"{path}: truncated JPEG (no end-of-image marker)")


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D array at full precision.

    PNG (8/16-bit), JPEG and other OpenCV formats give uint8/uint16; RGB(A) is
    converted to grey.  DICOM gives float32 after rescale, VOI LUT/window and
    MONOCHROME1 inversion (:func:`read_dicom`).

    Raises:
        CxrlabError: the file is missing, empty, corrupt, multi-frame or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise CxrlabError(f"{path}: image file is empty")
    if is_dicom(path):
        return read_dicom(path)
    _check_complete(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CxrlabError(f"{path}: cannot decode image (corrupt, truncated or unsupported format)")
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.ndim != 2 or min(img.shape) < 2:
        raise CxrlabError(f"{path}: unexpected image shape {img.shape}")
    return img


def to_uint8_resized(img: np.ndarray, size: int) -> np.ndarray:
    """Square-resize with area interpolation, then quantise to uint8.

    Full precision is kept until after the resize: 16-bit and float inputs are
    resized as float32 and min-max scaled to 0..255 at the end.
    """
    interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_LINEAR
    if img.dtype == np.uint8:
        return cv2.resize(img, (size, size), interpolation=interp)
    f = cv2.resize(img.astype(np.float32), (size, size), interpolation=interp)
    lo, hi = float(f.min()), float(f.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.round((f - lo) * scale), 0, 255).astype(np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as e:
        raise CxrlabError(f"{path}: cannot read image header ({e})") from None
