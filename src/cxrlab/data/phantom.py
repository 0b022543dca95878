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

``render(..., subtle=True)`` draws nodules as small as real ones (radius
0.4-0.6% of the image width) and, in every image, nodule mimics of the same
integrated density (vessels seen end-on), so that low resolutions lose them.  The
dataset modes in :mod:`cxrlab.data.phantom_layouts` reuse :func:`draw_frontal`
with other findings, graded intensities and extra patterns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from cxrlab.data.phantom_layouts.draw import Anatomy, Box, Canvas, Extra, acquire, grid
from cxrlab.data.phantom_layouts.draw import box_of as _box_of
from cxrlab.data.phantom_layouts.draw import ellipse as _ellipse
from cxrlab.data.phantom_layouts.draw import point_in as _point_in
from cxrlab.data.phantom_layouts.draw import smooth_noise as _smooth_noise
from cxrlab.data.phantom_layouts.draw import soft as _soft
from cxrlab.data.phantom_layouts.shortcut import Shortcut, burn_in
from cxrlab.data.phantom_layouts.site import Site, site_box, site_of
from cxrlab.data.phantom_layouts.site import prevalence as site_prevalence

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

#: ``subtle=True`` nodules: radius range (fraction of the width) and peak contrast.
SUBTLE_NODULE: tuple[float, float, float] = (0.004, 0.006, 0.45)

#: ``subtle=True`` nodule mimics (vessels seen end-on, rib crossings), drawn in every image whatever its
#: labels: mean count per image, radius factor and contrast factor relative to a nodule.  A mimic has the
#: nodule's integrated density spread over twice its radius, so once both are smaller than a pixel
#: (64 px) they look alike; only a resolution that resolves the nodule's sharper core tells them apart.
SUBTLE_MIMICS: tuple[float, float, float] = (2.0, 2.0, 0.25)


@dataclass
class PhantomImage:
    """One phantom radiograph and its ground truth."""

    pixels: np.ndarray  # (S, S) uint8
    labels: dict[str, int]
    boxes: list[tuple[str, Box]] = field(default_factory=list)
    patient: int = 0
    follow_up: int = 0
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    """``render(masks=True)``: bool (S, S) ``right_lung``, ``left_lung``, ``heart`` (see :func:`anatomy_masks`)."""
    shortcut: bool = False
    """Whether the planted shortcut's text is burned in (``render(shortcut=...)``)."""


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


def render(index: int, size: int = 256, seed: int = 0, *, subtle: bool = False,
           site: str | Site | None = None, masks: bool = False, shortcut: Shortcut | None = None,
           fade: float = 1.0) -> PhantomImage:
    """Draw phantom image ``index`` of the dataset with this ``seed``.

    Args:
        index: image number (0-based).
        size: side length in pixels (square images).
        seed: dataset seed; the same ``(seed, index, size)`` gives the same image.
        subtle: draw nodules small (:data:`SUBTLE_NODULE`) beside mimics (:data:`SUBTLE_MIMICS`); off
            by default.
        site: the hospital (:mod:`cxrlab.data.phantom_layouts.site`): ``"B"`` changes acquisition, field
            of view, burned-in text and prevalence; None or ``"A"`` draws the default phantom.
        masks: also return the exact lung and heart masks (``PhantomImage.masks``); no pixel changes.
        shortcut: burn text into the lower left corner of the images its rule picks
            (:mod:`cxrlab.data.phantom_layouts.shortcut`); every other pixel stays as without it.
        fade: draw every lesion at this intensity (a planted subgroup effect,
            :mod:`cxrlab.data.phantom_layouts.subgroup`); the labels do not change.  1: as always.

    Returns:
        The image, its label dict (0/1 per :data:`LABELS`) and its true boxes.
    """
    if size < 32:
        raise ValueError(f"phantom size must be >= 32 px, got {size}")
    patient, follow_up = patient_of(index, seed)
    prng = np.random.default_rng([seed, 1, patient])  # anatomy: shared by a patient
    rng = np.random.default_rng([seed, 2, index])  # this image: lesions, noise, pose
    anatomy = Anatomy.draw(prng)
    sx, sy = rng.normal(0, 0.012, size=2)
    where = site_of(site)
    labels = {name: int(rng.random() < site_prevalence(PREVALENCE[name], where)) for name in LABELS}
    marked = shortcut is not None and shortcut.marked(seed, index, bool(labels[shortcut.label]))
    out_masks: dict[str, np.ndarray] | None = {} if masks else None
    findings = labels if fade == 1 else {k: v * fade for k, v in labels.items()}  # same draws, fainter
    pixels, boxes = draw_frontal(size, anatomy, (sx, sy), rng, findings, subtle=subtle, site=where,
                                 masks=out_masks, burn_text=marked)
    return PhantomImage(pixels=pixels, labels=labels, boxes=boxes, patient=patient, follow_up=follow_up,
                        masks=out_masks or {}, shortcut=marked)


def draw_frontal(
    size: int,
    anatomy: Anatomy,
    pose: tuple[float, float],
    rng: np.random.Generator,
    findings: Mapping[str, float],
    *,
    subtle: bool = False,
    extra: Extra | None = None,
    site: Site | None = None,
    masks: dict[str, np.ndarray] | None = None,
    burn_text: bool = False,
) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """Draw one frontal radiograph; return uint8 pixels and the true boxes.

    ``findings`` maps :data:`LABELS` names to an intensity: 0 (or missing) =
    absent, 1 = as in the default phantom, in between = a milder (fainter,
    smaller) lesion.  ``extra(canvas, rng)`` draws further patterns after the
    standard lesions and returns their boxes.  ``site`` draws another hospital's acquisition
    (:func:`cxrlab.data.phantom_layouts.site.apply_site`; boxes follow its field of view).
    A ``masks`` dict is filled with the anatomy's masks (:func:`anatomy_masks`); ``burn_text``
    burns the planted shortcut's text in before the acquisition (neither draws a random number).
    """
    xx, yy = grid(size)
    a = anatomy
    body_ax, body_ay, lung_ax, lung_ay = a.body_ax, a.body_ay, a.lung_ax, a.lung_ay
    lung_dx, lung_cy, heart_hw_normal, rib_phase = a.lung_dx, a.lung_cy, a.heart_hw_normal, a.rib_phase
    sx, sy = pose
    cx, cy = 0.5 + sx, 0.55 + sy
    lcy = lung_cy + sy
    sev = {name: float(findings.get(name, 0)) for name in LABELS}

    body = _soft(_ellipse(xx, yy, cx, cy, body_ax, body_ay), 0.05)
    lungs_d2 = [
        _ellipse(xx, yy, cx - lung_dx, lcy, lung_ax, lung_ay),
        _ellipse(xx, yy, cx + lung_dx, lcy, lung_ax, lung_ay),
    ]
    lung_masks = [d2 < 1.0 for d2 in lungs_d2]
    lung_soft = [_soft(d2, 0.15) for d2 in lungs_d2]
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
    if sev["Pneumothorax"]:
        side = int(rng.integers(2))
        lx = cx - lung_dx if side == 0 else cx + lung_dx
        shrink = rng.uniform(0.68, 0.84)
        if sev["Pneumothorax"] != 1:  # milder: a thinner rim
            shrink = 1.0 - (1.0 - shrink) * sev["Pneumothorax"]
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
    heart_hw = rng.uniform(0.16, 0.21) if sev["Cardiomegaly"] else heart_hw_normal * rng.uniform(0.97, 1.03)
    if 0 < sev["Cardiomegaly"] < 1:  # milder: between the patient's normal heart and a clear case
        heart_hw = heart_hw_normal + sev["Cardiomegaly"] * (heart_hw - heart_hw_normal)
    heart_cx, heart_cy, heart_hh = cx + 0.035, lcy + 0.17, rng.uniform(0.11, 0.13)
    heart_d2 = _ellipse(xx, yy, heart_cx, heart_cy, heart_hw, heart_hh)
    heart = _soft(heart_d2, 0.12)
    img = img * (1 - 0.7 * heart) + 0.46 * heart
    if sev["Cardiomegaly"]:
        boxes.append(("Cardiomegaly", _box_of(heart_d2 < 1.0)))
    # diaphragm domes
    dome = lcy + lung_ay * 0.9 + 0.06 * ((xx - cx) / 0.25) ** 2
    diaphragm = np.clip((yy - dome) / 0.03, 0, 1) * body
    img = img * (1 - 0.6 * diaphragm) + 0.42 * diaphragm

    visible_lung = [m & (heart_d2 > 1.1) & (yy < dome - 0.02) & ~pneumo_region for m in lung_masks]
    interior = [(d2 < 0.55) & v for d2, v in zip(lungs_d2, visible_lung, strict=True)]

    # --- lesions --------------------------------------------------------------------
    if sev["Effusion"]:
        side = int(rng.integers(2))
        lx = cx - lung_dx if side == 0 else cx + lung_dx
        level = lcy + lung_ay * rng.uniform(0.45, 0.7)
        if sev["Effusion"] != 1:  # milder: only the costophrenic angle fills
            level = lcy + lung_ay * (0.95 - sev["Effusion"] * (0.95 - (level - lcy) / lung_ay))
        lateral = np.abs(xx - lx) * (1 if side == 0 else 1)
        outward = (xx < lx) if side == 0 else (xx > lx)
        meniscus = level - 0.9 * lateral**2 / lung_ax * outward
        fluid = lung_masks[side] & (yy > meniscus) & (heart_d2 > 1.0)
        soft_fluid = cv2.GaussianBlur(fluid.astype(np.float32), (0, 0), max(size * 0.006, 0.5))
        img = img * (1 - 0.8 * soft_fluid) + 0.40 * soft_fluid
        boxes.append(("Effusion", _box_of(fluid)))
    if sev["Consolidation"]:
        side = int(rng.integers(2))
        px, py = _point_in(interior[side], rng)
        r = rng.uniform(0.055, 0.085)
        blob = _ellipse(xx, yy, (px + 0.5) / size, (py + 0.5) / size, r, r * rng.uniform(0.8, 1.3))
        patch = (_smooth_noise(rng, size, 0.02) > -0.3) & (blob < 1.0) & lung_masks[side]
        soft_patch = cv2.GaussianBlur(patch.astype(np.float32), (0, 0), max(size * 0.008, 0.5))
        img += (0.16 * sev["Consolidation"]) * soft_patch
        boxes.append(("Consolidation", _box_of(patch)))
    for name, rmin, rmax, amp in (("Mass", 0.05, 0.07, 0.22), ("Nodule", 0.024, 0.032, 0.26)):
        if not sev[name]:
            continue
        tiny = subtle and name == "Nodule"
        if tiny:
            rmin, rmax, amp = SUBTLE_NODULE
        side = int(rng.integers(2))
        px, py = _point_in(interior[side], rng)
        r = rng.uniform(rmin, rmax)
        fx, fy = (px + 0.5) / size, (py + 0.5) / size
        if tiny:  # sub-pixel position, so that a small size does not sample the peak exactly
            fx, fy = (px + rng.random()) / size, (py + rng.random()) / size
        prof = np.exp(-_ellipse(xx, yy, fx, fy, r, r) ** 1.5 * 1.2)
        if name == "Mass":  # lobulated: add two satellite lobes
            for _ in range(2):
                ang = rng.uniform(0, 2 * np.pi)
                ox, oy = fx + 0.6 * r * np.cos(ang), fy + 0.6 * r * np.sin(ang)
                prof = np.maximum(prof, 0.9 * np.exp(-_ellipse(xx, yy, ox, oy, 0.6 * r, 0.6 * r) ** 1.5 * 1.2))
        img += (amp * sev[name]) * prof
        if tiny:  # the analytic extent (prof > 0.3 is the disc of radius r), at least one pixel
            x0, x1 = max(int((fx - r) * size), 0), min(int(np.ceil((fx + r) * size)), size)
            y0, y1 = max(int((fy - r) * size), 0), min(int(np.ceil((fy + r) * size)), size)
            boxes.append((name, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))))
        else:
            boxes.append((name, _box_of(prof > 0.3)))
    if subtle:
        img += _mimics(xx, yy, size, interior, rng)
    if extra is not None:
        canvas = Canvas(size, xx, yy, cx, lcy, anatomy, img, lungs_d2, lung_masks, heart_d2, dome, interior)
        boxes += extra(canvas, rng)
        img = canvas.img

    if burn_text:
        img = burn_in(img, xx, yy)
    if masks is not None:
        masks.update(anatomy_masks(lung_masks, heart_d2, site))
    if site is not None:
        boxes = [(name, site_box(b, size, site)) for name, b in boxes]
    return acquire(img, xx, yy, rng, site), boxes


def anatomy_masks(lung_masks: list[np.ndarray], heart_d2: np.ndarray, site: Site | None = None) -> dict[str, np.ndarray]:
    """The structures the phantom drew, as bool masks: ``right_lung``, ``left_lung``, ``heart``.

    Left and right are the patient's (a PA view: the right lung on the image's left).  A lung
    is its ellipse less the heart shadow, as lung segmentations (CheXmask) leave the heart out;
    every lung finding the phantom draws lies inside it.  A site's field of view (zoom) moves
    the masks as it moves the pixels.
    """
    heart = heart_d2 < 1.0
    out = {"right_lung": lung_masks[0] & ~heart, "left_lung": lung_masks[1] & ~heart, "heart": heart}
    if site is not None and site.zoom != 1.0:
        size = heart.shape[0]
        m = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, site.zoom)
        out = {k: cv2.warpAffine(v.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR) >= 0.5
               for k, v in out.items()}
    return out


def _mimics(xx: np.ndarray, yy: np.ndarray, size: int, interior: list[np.ndarray],
            rng: np.random.Generator) -> np.ndarray:
    """Nodule look-alikes (:data:`SUBTLE_MIMICS`) at random places inside the lungs."""
    mean_count, radius_factor, contrast_factor = SUBTLE_MIMICS
    rmin, rmax, amp = SUBTLE_NODULE
    out = np.zeros_like(xx)
    for _ in range(int(rng.poisson(mean_count))):
        px, py = _point_in(interior[int(rng.integers(2))], rng)
        fx, fy = (px + rng.random()) / size, (py + rng.random()) / size
        r = rng.uniform(rmin, rmax) * radius_factor
        out += amp * contrast_factor * np.exp(-_ellipse(xx, yy, fx, fy, r, r) ** 1.5 * 1.2)
    return out

