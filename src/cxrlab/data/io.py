"""Image reading: one function from a file to a 2-D grey array at full precision."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxrlab.errors import CxrlabError


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D array (uint8 or uint16, full precision).

    RGB(A) images are converted to grey; 16-bit PNGs stay 16-bit.

    Raises:
        CxrlabError: the file is missing, empty, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise CxrlabError(f"{path}: image file is empty")
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
