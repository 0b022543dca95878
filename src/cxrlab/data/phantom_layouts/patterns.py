"""Extra frontal patterns for the phantom modes (not used by the default NIH phantom).

Each function draws onto a :class:`~cxrlab.data.phantom_layouts.draw.Canvas`
(in place, after the standard lesions) with intensity ``s`` in (0, 1] (1 = a
clear case, smaller = fainter/smaller) and returns the true box.

==========================  ===========================================================
pattern                     appearance
==========================  ===========================================================
``edema``                   bilateral perihilar haze ("bat wings"), fading outward
``atelectasis``             plate-like linear band in a lower zone (discoid atelectasis)
``lobar_consolidation``     dense lobar opacity with air bronchograms (bacterial pneumonia)
``interstitial``            bilateral perihilar streaky/reticular opacity (viral pneumonia)
``tuberculosis``            upper-zone nodules, a thick-walled cavity, fibrotic streaks
``ground_glass``            bilateral peripheral lower-zone ground glass (COVID-19-like)
``patchy_opacity``          one to three patchy opacities anywhere in the lungs
==========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import cv2
import numpy as np

from cxrlab.data.phantom_layouts.draw import (
    Box,
    Canvas,
    box_of,
    ellipse,
    point_in,
    smooth_noise,
    soft,
)


def _blur(mask: np.ndarray, c: Canvas, rel: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(c.size * rel, 0.5))


def _union(boxes: list[Box | None]) -> Box:
    got = [b for b in boxes if b is not None]
    if not got:
        return 0.0, 0.0, 1.0, 1.0
    x0, y0 = min(b[0] for b in got), min(b[1] for b in got)
    x1, y1 = max(b[0] + b[2] for b in got), max(b[1] + b[3] for b in got)
    return x0, y0, x1 - x0, y1 - y0


def _hilum_x(c: Canvas, side: int) -> float:
    return c.lung_x(side) + (0.45 if side == 0 else -0.45) * c.anatomy.lung_ax


def _perihilar(c: Canvas, side: int, wx: float, wy: float) -> np.ndarray:
    a = c.anatomy
    d = ((c.xx - _hilum_x(c, side)) / (wx * a.lung_ax)) ** 2 + ((c.yy - c.lcy) / (wy * a.lung_ay)) ** 2
    return np.exp(-d) * soft(c.lungs_d2[side], 0.25) * (c.heart_d2 > 1.0)


def _patchiness(c: Canvas, rng: np.random.Generator, rel: float, floor: float) -> np.ndarray:
    n = np.clip(smooth_noise(rng, c.size, rel), -1.5, 1.5) / 3.0 + 0.5  # 0..1
    return floor + (1.0 - floor) * n


def edema(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    haze = sum(_perihilar(c, k, 1.6, 0.9) for k in range(2)) * _patchiness(c, rng, 0.03, 0.5)
    c.img += (0.22 * s) * haze
    return _union([box_of(haze > 0.3)])


def atelectasis(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    side = int(rng.integers(2))
    lower = c.interior[side] & (c.yy > c.lcy)
    px, py = point_in(lower if lower.any() else c.interior[side], rng)
    fx, fy = (px + 0.5) / c.size, (py + 0.5) / c.size
    ang, half = rng.uniform(-0.35, 0.35), rng.uniform(0.05, 0.08) * (0.6 + 0.4 * s)
    width = rng.uniform(0.010, 0.016)
    u = (c.xx - fx) * np.cos(ang) + (c.yy - fy) * np.sin(ang)
    v = -(c.xx - fx) * np.sin(ang) + (c.yy - fy) * np.cos(ang)
    band = np.exp(-((v / width) ** 2)) * np.clip((half - np.abs(u)) / 0.01, 0, 1) * c.lung_masks[side]
    c.img += (0.24 * s) * band
    return _union([box_of(band > 0.3)])


def lobar_consolidation(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    side, a = int(rng.integers(2)), c.anatomy
    edge = c.lcy + a.lung_ay * rng.uniform(-0.15, 0.2) + 0.03 * smooth_noise(rng, c.size, 0.04)
    lobe = (c.yy > edge) if rng.random() < 0.7 else (c.yy < edge - 0.2 * a.lung_ay)
    region = c.lung_masks[side] & lobe & (c.heart_d2 > 0.9) & (c.yy < c.dome)
    if rng.random() > s:  # milder cases: a segment, not the whole lobe
        px, py = point_in(region, rng) if region.any() else point_in(c.interior[side], rng)
        part = region & (ellipse(c.xx, c.yy, (px + 0.5) / c.size, (py + 0.5) / c.size, 0.07, 0.06) < 1.0)
        region = part if part.any() else region
    if not region.any():
        region = c.interior[side]
    dense = _blur(region, c, 0.01)
    bronchi = np.exp(-((smooth_noise(rng, c.size, 0.012) / 0.15) ** 2)) * dense
    c.img += (0.24 * s) * dense - (0.08 * s) * bronchi
    return _union([box_of(region)])


def interstitial(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    ridges = np.exp(-((smooth_noise(rng, c.size, 0.008) / 0.3) ** 2))
    hazes = [_perihilar(c, k, 1.2, 0.8) for k in range(2)]
    c.img += (0.11 * s) * ridges * sum(hazes) + (0.05 * s) * sum(hazes)
    return _union([box_of(h > 0.3) for h in hazes])


def tuberculosis(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    a = c.anatomy
    first = int(rng.integers(2))
    sides = [first, 1 - first] if rng.random() < 0.4 else [first]
    boxes: list[Box | None] = []
    for k, side in enumerate(sides):
        upper = c.lung_masks[side] & (c.lungs_d2[side] < 0.85) & (c.yy < c.lcy - 0.3 * a.lung_ay)
        if not upper.any():
            continue
        lesion = np.zeros_like(c.img)
        for _ in range(int(rng.integers(4, 10))):
            px, py = point_in(upper, rng)
            r = rng.uniform(0.006, 0.014)
            lesion = np.maximum(lesion, np.exp(-ellipse(c.xx, c.yy, (px + 0.5) / c.size, (py + 0.5) / c.size, r, r) ** 1.5))
        if k == 0 and rng.random() < 0.8:  # a thick-walled cavity
            px, py = point_in(upper, rng)
            d = np.sqrt(ellipse(c.xx, c.yy, (px + 0.5) / c.size, (py + 0.5) / c.size, 1.0, 1.0))
            rad = rng.uniform(0.022, 0.035) * (0.7 + 0.3 * s)
            lesion = np.maximum(lesion, np.exp(-(((d - rad) / (0.35 * rad)) ** 2)))
            c.img -= (0.08 * s) * (d < 0.75 * rad)
        streaks = np.exp(-((smooth_noise(rng, c.size, 0.01) / 0.25) ** 2)) * _blur(upper, c, 0.02)
        c.img += (0.20 * s) * lesion * c.lung_masks[side] + (0.06 * s) * streaks
        boxes.append(box_of((lesion > 0.3) & c.lung_masks[side]))
    return _union(boxes)


def ground_glass(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    a = c.anatomy
    lower = np.clip((c.yy - (c.lcy - 0.3 * a.lung_ay)) / (0.4 * a.lung_ay), 0, 1)
    patch = _patchiness(c, rng, 0.025, 0.3)
    boxes = []
    for side in range(2):
        outward = (c.xx < c.lung_x(side)) if side == 0 else (c.xx > c.lung_x(side))
        periphery = np.clip((c.lungs_d2[side] - 0.25) / 0.35, 0, 1) * (0.5 + 0.5 * outward)
        ggo = _blur(c.lung_masks[side], c, 0.01) * periphery * lower * patch * (c.heart_d2 > 1.0)
        c.img += (0.26 * s) * ggo
        boxes.append(box_of(ggo > 0.25))
    return _union(boxes)


def patchy_opacity(c: Canvas, rng: np.random.Generator, s: float) -> Box:
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        side = int(rng.integers(2))
        px, py = point_in(c.interior[side], rng)
        r = rng.uniform(0.035, 0.065)
        blob = ellipse(c.xx, c.yy, (px + 0.5) / c.size, (py + 0.5) / c.size, r, r * rng.uniform(0.7, 1.4))
        patch = (smooth_noise(rng, c.size, 0.015) > -0.4) & (blob < 1.0) & c.lung_masks[side]
        c.img += (0.14 * s) * _blur(patch, c, 0.008)
        boxes.append(box_of(patch))
    return _union(boxes)


PATTERNS: dict[str, Callable[[Canvas, np.random.Generator, float], Box]] = {
    "edema": edema, "atelectasis": atelectasis, "lobar_consolidation": lobar_consolidation,
    "interstitial": interstitial, "tuberculosis": tuberculosis, "ground_glass": ground_glass,
    "patchy_opacity": patchy_opacity,
}


def extra_patterns(wanted: Mapping[str, tuple[str, float]]):
    """An ``extra`` hook for :func:`~cxrlab.data.phantom.draw_frontal`.

    ``wanted`` maps a label name to ``(pattern, intensity)``; intensity 0 draws nothing.
    """
    def hook(c: Canvas, rng: np.random.Generator) -> list[tuple[str, Box]]:
        return [(label, PATTERNS[pattern](c, rng, s)) for label, (pattern, s) in wanted.items() if s > 0]
    return hook
