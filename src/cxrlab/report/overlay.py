"""An attribution map drawn over its image as PNG bytes (the server's overlay; no files, no matplotlib)."""

from __future__ import annotations

import cv2
import numpy as np


def normalise_map(cam: np.ndarray) -> np.ndarray:
    """Min-max scale a map to 0..1 (all zeros when it is flat)."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32))
    lo, hi = float(cam.min()), float(cam.max())
    return np.zeros_like(cam) if hi <= lo else (cam - lo) / (hi - lo)


def cam_overlay_png(image_u8: np.ndarray, cam: np.ndarray, size: int = 384, alpha: float = 0.45) -> bytes:
    """The grey model input with a jet-coloured map blended over it, ``size`` px square, as PNG.

    Args:
        image_u8: (S, S) uint8 model input.
        cam: (S, S) attribution map at the input's resolution (any range).
        size: side of the PNG (the image is scaled up for a screen; the map with it).
        alpha: weight of the colour map where the map is strongest (weaker where it is weak).
    """
    grey = cv2.resize(image_u8, (size, size), interpolation=cv2.INTER_LINEAR)
    heat = cv2.resize(normalise_map(cam), (size, size), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR).astype(np.float32)
    weight = (alpha * np.clip(heat, 0.15, 1.0))[..., None]
    out = np.clip(base * (1 - weight) + colour.astype(np.float32) * weight, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", out)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
