"""Image reading: one function from a file to a 2-D grey array at full precision."""

from __future__ import annotations

import warnings
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


def read_dicom(path: str | Path, max_pixels: int = 100_000_000) -> np.ndarray:
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
        if "PixelData" not in ds:
            raise CxrlabError(f"{path}: cannot read DICOM: the file has no pixel data")
        check_pixels(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), max_pixels)
        raw = ds.pixel_array
    except CxrlabError:
        raise
    except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError, EOFError, RuntimeError,
            NotImplementedError, ImportError) as e:  # pydicom: no decoder for a compressed transfer syntax
        raise CxrlabError(f"{path}: cannot read DICOM ({type(e).__name__}: {e})") from None
    if raw.ndim != 2:
        raise CxrlabError(f"{path}: DICOM pixel data has shape {raw.shape}, expected one grey frame")
    img = apply_modality_lut(raw, ds).astype(np.float32)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        img = apply_voi_lut(img, ds, prefer_lut=True).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        img = float(img.max()) + float(img.min()) - img
    return img


#: Default pixel limit: 100 megapixels, ~6x the largest real radiograph (about 4,300 x 3,500).
DEFAULT_MAX_PIXELS = 100_000_000

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sniff(path: Path) -> str:
    """The file's format from its first bytes: ``png``, ``jpeg``, ``dicom`` or ``other``.

    Public CXR collections hold PNG files named ``.jpg`` (and the reverse), so the
    extension is only trusted for DICOM files without the 128-byte preamble.
    """
    with open(path, "rb") as f:
        head = f.read(132)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    return "other"


def _check_complete(path: Path, kind: str) -> None:
    """Refuse truncated JPEG/PNG files, which OpenCV would decode partially without an error."""
    if kind not in ("png", "jpeg"):
        return
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - 64, 0))
        tail = f.read().rstrip(b"\x00\r\n\t ")
    if kind == "png" and b"IEND" not in tail:
        raise CxrlabError(f"{path}: truncated PNG (no IEND chunk at the end)")
    # 0xFF 0xD9 cannot occur inside entropy-coded data (0xFF is byte-stuffed), so its presence in the
    # last bytes marks a complete file, even with a short trailer after it
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        raise CxrlabError(f"{path}: truncated JPEG (no end-of-image marker)")


def check_pixels(path: str | Path, width: int, height: int, max_pixels: int) -> None:
    """One-line error for an image whose header claims more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise CxrlabError(f"{path}: image of {width} x {height} pixels exceeds the limit of {max_pixels:,} "
                          "pixels (corrupt header or decompression bomb; raise data.max_pixels if it is real)")


def read_gray(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as a 2-D array at full precision.

    The decoder is chosen from the file's content, not its name.  PNG (8/16-bit),
    JPEG and other OpenCV formats give uint8/uint16; RGB(A) is converted to grey.
    DICOM gives float32 after rescale, VOI LUT/window and MONOCHROME1 inversion
    (:func:`read_dicom`).  The header's size is checked against ``max_pixels``
    before any pixel is decoded.

    Raises:
        CxrlabError: the file is missing, empty, corrupt, truncated, too large,
            multi-frame or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise CxrlabError(f"{path}: image file is empty")
    kind = sniff(path)
    if kind == "dicom":
        return read_dicom(path, max_pixels)
    _check_complete(path, kind)
    check_pixels(path, *image_size(path), max_pixels)
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
    """(width, height) of an image file (PNG/JPEG/..., or DICOM) without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if sniff(path) == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception as e:  # pydicom raises many types for a broken header
            raise CxrlabError(f"{path}: cannot read DICOM header ({type(e).__name__}: {e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise CxrlabError(f"{path}: image too large to open ({e})") from None
    except (OSError, UnidentifiedImageError) as e:
        raise CxrlabError(f"{path}: cannot read image header ({e})") from None
