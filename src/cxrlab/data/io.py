"""Image reading: one function from a file to a 2-D grey array at full precision."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
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


def read_dicom(path: str | Path, max_pixels: int = 100_000_000, data: bytes | None = None) -> np.ndarray:
    """Read a single-frame DICOM as float32 with display semantics (bright = dense).

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or
    window from the file when present, and inverts MONOCHROME1 so that every
    image has bright bones.  No quantisation happens here.  ``data`` is the
    file's content when the caller has read it already (read once, not twice).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if data is not None else str(path))
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
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        read_file_bytes(Path(path))  # raises the one-line reason (loop, broken link, permission, ...)
        raise
    return sniff_bytes(head, Path(path))


def sniff_bytes(head: bytes, path: Path) -> str:
    """:func:`sniff` on the first 132 bytes of a file already read."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    return "other"


def read_file_bytes(path: Path) -> bytes:
    """The whole file, or a one-line :class:`CxrlabError` saying why it cannot be read.

    A symlink loop or a dangling symlink is named as such (a plain "not found"
    hides that the dataset tree itself is broken), and so is a file the user may
    not read (``PermissionError`` would otherwise end in a traceback).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CxrlabError(f"{path}: broken symbolic link (its target {os.readlink(path)} does not "
                              "exist)") from None
        raise CxrlabError(f"{path}: image file not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CxrlabError(f"{path}: symbolic link loop (the link leads back to itself, never to a "
                              "file)") from None
        raise CxrlabError(f"{path}: cannot access the image file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CxrlabError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise CxrlabError(f"{path}: not a regular file (a device, pipe or socket)")
    if st.st_size == 0:
        raise CxrlabError(f"{path}: image file is empty")
    try:
        with open(path, "rb") as f:
            return f.read()
    except PermissionError:
        raise CxrlabError(f"{path}: permission denied (the user running cxrlab may not read this file)") from None
    except OSError as e:
        raise CxrlabError(f"{path}: cannot read the image file ({e.strerror or e})") from None


def _png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure, or ``None``.

    Walks the chunks to ``IEND``: bytes after it (some scanners and web exports
    append them) are fine, a file that ends before it is truncated.  The CRC of
    each critical chunk is checked because libpng would refuse a bad one and
    print its own error line beside cxrlab's.
    """
    pos, n, view = 8, len(data), memoryview(data)
    while pos + 12 <= n:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if not ctype.isalpha():
            return f"corrupt PNG (broken chunk structure at byte {pos})"
        end = pos + 12 + length
        name = ctype.decode("ascii")
        if end > n:
            return f"truncated PNG (the file ends inside its {name} chunk, before IEND)"
        if ctype[:1].isupper() and zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return f"corrupt PNG (checksum mismatch in its {name} chunk at byte {pos})"
        if ctype == b"IEND":
            return None
        pos = end
    return "truncated PNG (no IEND chunk)"


#: In entropy-coded JPEG data 0xFF is followed by 0x00 (stuffing), a restart marker or a fill 0xFF;
#: anything else is the next marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg_problem(data: bytes) -> str | None:
    """What is wrong with a JPEG's marker structure, or ``None``.

    Walks the segments (skipping each by its length, so the end marker of an
    embedded EXIF thumbnail is not taken for the image's) and the entropy-coded
    scans to the end-of-image marker; bytes after it are fine.
    """
    pos, n = 2, len(data)
    while True:
        pos = data.find(b"\xff", pos)  # libjpeg also skips stray bytes between segments
        if pos < 0:
            return "truncated JPEG (no end-of-image marker)"
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return "truncated JPEG (no end-of-image marker)"
        code = data[pos]
        pos += 1
        if code == 0xD9:
            return None
        if code in _JPEG_STANDALONE or code == 0x00:
            continue
        if pos + 2 > n:
            return "truncated JPEG (no end-of-image marker)"
        seg = (data[pos] << 8) | data[pos + 1]
        if seg < 2:
            return f"corrupt JPEG (segment of length {seg} at byte {pos})"
        pos += seg
        if pos > n:
            return "truncated JPEG (the file ends inside a segment, before the end-of-image marker)"
        if code == 0xDA:  # start of scan: entropy-coded data up to the next marker
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                return "truncated JPEG (the file ends inside the image data, no end-of-image marker)"
            pos = m.start()


def _check_complete(path: Path, kind: str, data: bytes) -> None:
    """Refuse truncated or corrupt JPEG/PNG files, which OpenCV would decode partially or complain about.

    Truncation means the end marker is missing, not that it is not the last byte.
    """
    problem = _png_problem(data) if kind == "png" else _jpeg_problem(data) if kind == "jpeg" else None
    if problem:
        raise CxrlabError(f"{path}: {problem}")


_CV_LOG = getattr(getattr(cv2, "utils", None), "logging", None)


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own ``[ERROR] ... imread_`` log lines: cxrlab says what is wrong in one line."""
    if _CV_LOG is None:
        yield
        return
    before = _CV_LOG.getLogLevel()
    _CV_LOG.setLogLevel(_CV_LOG.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        _CV_LOG.setLogLevel(before)


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
        CxrlabError: the file is missing, empty, unreadable (permissions, a
            symlink loop or a broken link), corrupt, truncated, too large,
            multi-frame or not an image.
    """
    path = Path(path)
    data = read_file_bytes(path)
    kind = sniff_bytes(data[:132], path)
    if kind == "dicom":
        return read_dicom(path, max_pixels, data=data)
    _check_complete(path, kind, data)
    check_pixels(path, *_header_size(path, data), max_pixels)
    with quiet_opencv():  # imread, not imdecode of ``data``: imdecode is 2x slower on 16-bit PNG
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
    path = Path(path)
    if sniff(path) == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception as e:  # pydicom raises many types for a broken header
            raise CxrlabError(f"{path}: cannot read DICOM header ({type(e).__name__}: {e})") from None
    return _pil_size(path, path)


def _header_size(path: Path, data: bytes) -> tuple[int, int]:
    """(width, height) from the header of a non-DICOM file already read into ``data``."""
    return _pil_size(path, io.BytesIO(data))


def _pil_size(path: Path, source: Path | io.BytesIO) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns (e.g. "Corrupt EXIF data") on files the decoder then refuses in one line
            warnings.simplefilter("ignore")
            with Image.open(source) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise CxrlabError(f"{path}: image too large to open ({e})") from None
    except UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise CxrlabError(f"{path}: cannot read image header (not an image format cxrlab reads, or "
                          "corrupt or truncated)") from None
    except OSError as e:
        raise CxrlabError(f"{path}: cannot read image header ({e})") from None
