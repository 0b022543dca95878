"""Synthetic chest X-ray phantom with known lesions and true boxes.

The phantom is cxrlab's embedded default: the demo, the tests and the benchmarks
use it, so it must be deterministic, fast and *learnable but not trivial*.

Each image is drawn on a float grid in [0, 1] (1 = dense, bright as on a CXR):
body outline, two lung fields with vessel texture, ribs, spine/mediastinum,
heart shadow, diaphragm, exposure variation, noise and vignetting, sometimes a
radio-opaque marker (a distractor outside the lungs).  Lesions change the
labels and carry a true box ``(x, y, w, h)`` in pixel coordinates:

========================  ==========================================================
label                     appearance
========================  ==========================================================
``Nodule``                small, soft-edged opacity inside a lung
``Mass``                  large lobulated opacity inside a lung
``Cardiomegaly``          heart wider than normal (box = heart shadow)
``Effusion``              fluid at a lung base with a lateral meniscus
``Pneumothorax``          lateral/apical rim without vessel texture, pleural line
``Consolidation``         patchy opacity inside a lung
========================  ==========================================================

Images are reproducible per ``(seed, index)``, independent of how many are
drawn or in which process.  Images of one patient share their anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

LABELS: tuple[str, ...] = (
    "Nodule",
    "Mass",
    "Cardiomegaly",
    "Effusion",
    "Pneumothorax",
    "Consolidation",
)

#: Probability that each lesion is present in an image (independent draws).
PREVALENCE: dict[str, float] = {
    "Nodule": 0.22,
    "Mass": 0.18,
    "Cardiomegaly": 0.20,
    "Effusion": 0.22,
    "Pneumothorax": 0.18,
    "Consolidation": 0.22,
}

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


@dataclass
class PhantomImage:
    """One phantom radiograph and its ground truth."""

    pixels: np.ndarray  # (S, S) uint8
    labels: dict[str, int]
    boxes: list[tuple[str, Box]] = field(default_factory=list)
    patient: int = 0
    follow_up: int = 0


_PARTITIONS = ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 2))  # patient slot of each image in a block


def patient_of(index: int, seed: int) -> tuple[int, int]:
    """Patient id (1-based) and follow-up number of image ``index``.

    Images come in blocks of three; each block is split into one to three
    patients by a draw that depends only on ``(seed, block)``.  So the mapping
    costs O(1), and any prefix of a phantom dataset has the same patients.
    """
    block, pos = divmod(index, 3)
    part = _PARTITIONS[int(np.random.default_rng([seed, 7919, block]).integers(len(_PARTITIONS)))]
    slot = part[pos]
    return block * 3 + slot + 1, part[:pos].count(slot)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance low-pass noise; ``sigma`` is relative to the image size."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    s = max(sigma * size, 0.5)
    out = cv2.GaussianBlur(noise, (0, 0), sigmaX=s, borderType=cv2.BORDER_REFLECT)
    return out / (out.std() + 1e-6)


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2


def _soft(d2: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """Soft inside-indicator of an ellipse from its normalised squared distance."""
    return np.clip((1.0 - d2) / edge, 0.0, 1.0)


def _box_of(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _point_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    i = rng.integers(len(xs))
    return int(xs[i]), int(ys[i])


def render(index: int, size: int = 256, seed: int = 0) -> PhantomImage:
    """Draw phantom image ``index`` of the dataset with this ``seed``.

    Args:
        index: image number (0-based).
        size: side length in pixels (square images).
        seed: dataset seed; the same ``(seed, index, size)`` gives the same image.

    Returns:
        The image, its label dict (0/1 per :data:`LABELS`) and its true boxes.
    """
    if size < 32:
        raise ValueError(f"phantom size must be >= 32 px, got {size}")
    patient, follow_up = patient_of(index, seed)
    prng = np.random.default_rng([seed, 1, patient])  # anatomy: shared by a patient
    rng = np.random.default_rng([seed, 2, index])  # this image: lesions, noise, pose
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(lin, lin)

    # --- anatomy (per patient) -------------------------------------------------
    body_ax, body_ay = prng.uniform(0.40, 0.46), prng.uniform(0.46, 0.52)
    lung_ax, lung_ay = prng.uniform(0.115, 0.14), prng.uniform(0.25, 0.30)
    lung_dx, lung_cy = prng.uniform(0.16, 0.19), prng.uniform(0.44, 0.49)
    heart_hw_normal = prng.uniform(0.10, 0.14)
    rib_phase = prng.uniform(0, 1)
    # --- pose / exposure (per image) ----------------------------------------------
    sx, sy = rng.normal(0, 0.012, size=2)
    cx, cy = 0.5 + sx, 0.55 + sy
    lcy = lung_cy + sy

    body = _soft(_ellipse(xx, yy, cx, cy, body_ax, body_ay), 0.05)
    lungs_d2 = [
        _ellipse(xx, yy, cx - lung_dx, lcy, lung_ax, lung_ay),
        _ellipse(xx, yy, cx + lung_dx, lcy, lung_ax, lung_ay),
    ]
    lung_masks = [d2 < 1.0 for d2 in lungs_d2]
    lung_soft = [_soft(d2, 0.15) for d2 in lungs_d2]

    labels = {name: int(rng.random() < PREVALENCE[name]) for name in LABELS}
    boxes: list[tuple[str, Box]] = []

    img = 0.04 + 0.30 * body
    # spine and mediastinum
    img += 0.18 * body * np.exp(-(((xx - cx) / 0.045) ** 2))
    # ribs: curved bands, visible over the lungs and soft tissue
    rib_y = yy + 0.55 * (xx - cx) ** 2
    ribs = np.cos(2 * np.pi * (rib_y / 0.075 + rib_phase))
    ribs = np.clip((ribs - 0.55) / 0.45, 0, 1) * body
    # lungs: dark air with vessel texture, denser toward the hilum
    vessels = np.clip(_smooth_noise(rng, size, 0.012), 0, None)
    pneumo_region = np.zeros_like(img, dtype=bool)
    pleural_line = np.zeros_like(img)
    if labels["Pneumothorax"]:
        side = int(rng.integers(2))
        lx = cx - lung_dx if side == 0 else cx + lung_dx
        shrink = rng.uniform(0.68, 0.84)
        # collapsed lung: an ellipse shrunk toward the hilum (medial, lower)
        hx = lx + (0.35 * lung_ax if side == 0 else -0.35 * lung_ax)
        inner = _ellipse(xx, yy, hx, lcy + 0.08 * lung_ay, lung_ax * shrink, lung_ay * shrink)
        pneumo_region = lung_masks[side] & (inner > 1.0)
        pleural_line = np.exp(-(((np.sqrt(inner) - 1.0) / 0.025) ** 2)) * lung_masks[side]
        boxes.append(("Pneumothorax", _box_of(pneumo_region)))
    for k in range(2):
        hilum = np.exp(-(((xx - (cx + (k * 2 - 1) * lung_dx * 0.55)) / 0.08) ** 2 + ((yy - lcy) / 0.12) ** 2))
        texture = 0.055 * vessels * (0.5 + hilum) * ~pneumo_region
        img += lung_soft[k] * (-0.20 + texture) - pneumo_region * lung_soft[k] * 0.04
    img += 0.06 * ribs + 0.10 * pleural_line

    # heart shadow (overlaps the medial lower lungs)
    heart_hw = rng.uniform(0.16, 0.21) if labels["Cardiomegaly"] else heart_hw_normal * rng.uniform(0.97, 1.03)
    heart_cx, heart_cy, heart_hh = cx + 0.035, lcy + 0.17, rng.uniform(0.11, 0.13)
    heart_d2 = _ellipse(xx, yy, heart_cx, heart_cy, heart_hw, heart_hh)
    heart = _soft(heart_d2, 0.12)
    img = img * (1 - 0.7 * heart) + 0.46 * heart
    if labels["Cardiomegaly"]:
        boxes.append(("Cardiomegaly", _box_of(heart_d2 < 1.0)))
    # diaphragm domes
    dome = lcy + lung_ay * 0.9 + 0.06 * ((xx - cx) / 0.25) ** 2
    diaphragm = np.clip((yy - dome) / 0.03, 0, 1) * body
    img = img * (1 - 0.6 * diaphragm) + 0.42 * diaphragm

    visible_lung = [m & (heart_d2 > 1.1) & (yy < dome - 0.02) & ~pneumo_region for m in lung_masks]
    interior = [(d2 < 0.55) & v for d2, v in zip(lungs_d2, visible_lung, strict=True)]

    # --- lesions --------------------------------------------------------------------
    if labels["Effusion"]:
        side = int(rng.integers(2))
        lx = cx - lung_dx if side == 0 else cx + lung_dx
        level = lcy + lung_ay * rng.uniform(0.45, 0.7)
        lateral = np.abs(xx - lx) * (1 if side == 0 else 1)
        outward = (xx < lx) if side == 0 else (xx > lx)
        meniscus = level - 0.9 * lateral**2 / lung_ax * outward
        fluid = lung_masks[side] & (yy > meniscus) & (heart_d2 > 1.0)
        soft_fluid = cv2.GaussianBlur(fluid.astype(np.float32), (0, 0), max(size * 0.006, 0.5))
        img = img * (1 - 0.8 * soft_fluid) + 0.40 * soft_fluid
        boxes.append(("Effusion", _box_of(fluid)))
    if labels["Consolidation"]:
        side = int(rng.integers(2))
        px, py = _point_in(interior[side], rng)
        r = rng.uniform(0.055, 0.085)
        blob = _ellipse(xx, yy, (px + 0.5) / size, (py + 0.5) / size, r, r * rng.uniform(0.8, 1.3))
        patch = (_smooth_noise(rng, size, 0.02) > -0.3) & (blob < 1.0) & lung_masks[side]
        soft_patch = cv2.GaussianBlur(patch.astype(np.float32), (0, 0), max(size * 0.008, 0.5))
        img += 0.16 * soft_patch
        boxes.append(("Consolidation", _box_of(patch)))
    for name, rmin, rmax, amp in (("Mass", 0.05, 0.07, 0.22), ("Nodule", 0.024, 0.032, 0.26)):
        if not labels[name]:
            continue
        side = int(rng.integers(2))
        px, py = _point_in(interior[side], rng)
        r = rng.uniform(rmin, rmax)
        fx, fy = (px + 0.5) / size, (py + 0.5) / size
        prof = np.exp(-_ellipse(xx, yy, fx, fy, r, r) ** 1.5 * 1.2)
        if name == "Mass":  # lobulated: add two satellite lobes
            for _ in range(2):
                ang = rng.uniform(0, 2 * np.pi)
                ox, oy = fx + 0.6 * r * np.cos(ang), fy + 0.6 * r * np.sin(ang)
                prof = np.maximum(prof, 0.9 * np.exp(-_ellipse(xx, yy, ox, oy, 0.6 * r, 0.6 * r) ** 1.5 * 1.2))
        img += amp * prof
        boxes.append((name, _box_of(prof > 0.3)))

    # --- distractors and acquisition ------------------------------------------------
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
    pixels = np.round(img * 255).astype(np.uint8)
    return PhantomImage(pixels=pixels, labels=labels, boxes=boxes, patient=patient, follow_up=follow_up)
