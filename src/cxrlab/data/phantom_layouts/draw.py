"""Drawing primitives shared by the phantom's frontal and lateral views (see ``phantom.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from cxrlab.data.phantom_layouts.site import Site, apply_site

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance low-pass noise; ``sigma`` is relative to the image size."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    s = max(sigma * size, 0.5)
    out = cv2.GaussianBlur(noise, (0, 0), sigmaX=s, borderType=cv2.BORDER_REFLECT)
    return out / (out.std() + 1e-6)


def ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2


def soft(d2: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """Soft inside-indicator of an ellipse from its normalised squared distance."""
    return np.clip((1.0 - d2) / edge, 0.0, 1.0)


def box_of(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def point_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    i = rng.integers(len(xs))
    return int(xs[i]), int(ys[i])


@dataclass
class Anatomy:
    """Per-patient shape parameters (fractions of the image side)."""

    body_ax: float
    body_ay: float
    lung_ax: float
    lung_ay: float
    lung_dx: float
    lung_cy: float
    heart_hw_normal: float
    rib_phase: float

    @classmethod
    def draw(cls, prng: np.random.Generator) -> Anatomy:
        body_ax, body_ay = prng.uniform(0.40, 0.46), prng.uniform(0.46, 0.52)
        lung_ax, lung_ay = prng.uniform(0.115, 0.14), prng.uniform(0.25, 0.30)
        lung_dx, lung_cy = prng.uniform(0.16, 0.19), prng.uniform(0.44, 0.49)
        return cls(body_ax, body_ay, lung_ax, lung_ay, lung_dx, lung_cy, prng.uniform(0.10, 0.14), prng.uniform(0, 1))


@dataclass
class Canvas:
    """A frontal image being drawn, handed to ``extra`` pattern hooks (edit ``img`` in place)."""

    size: int
    xx: np.ndarray
    yy: np.ndarray
    cx: float
    lcy: float
    anatomy: Anatomy
    img: np.ndarray
    lungs_d2: list[np.ndarray]
    lung_masks: list[np.ndarray]
    heart_d2: np.ndarray
    dome: np.ndarray
    interior: list[np.ndarray]

    def lung_x(self, side: int) -> float:
        return self.cx - self.anatomy.lung_dx if side == 0 else self.cx + self.anatomy.lung_dx


Extra = Callable[[Canvas, np.random.Generator], list[tuple[str, Box]]]


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(lin, lin)


def acquire(img: np.ndarray, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator,
            site: Site | None = None) -> np.ndarray:
    """Distractor marker, vignetting, exposure, noise and gamma; float image -> uint8.

    ``site``: another phantom hospital's acquisition (:mod:`.site`); None draws the default's.
    """
    if site is not None:
        return apply_site(img, xx, yy, rng, site)
    if rng.random() < 0.3:  # radio-opaque side marker in an upper corner
        mx = rng.uniform(0.06, 0.14) if rng.random() < 0.5 else rng.uniform(0.82, 0.9)
        my = rng.uniform(0.05, 0.12)
        marker = (np.abs(xx - mx) < 0.025) & (np.abs(yy - my) < 0.035)
        img = np.where(marker, 0.9, img)
    vignette = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.5
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-0.04, 0.04)
    img = img * vignette * gain + offset
    img += rng.normal(0, rng.uniform(0.01, 0.025), size=img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    return np.round(img * 255).astype(np.uint8)
