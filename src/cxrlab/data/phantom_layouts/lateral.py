"""Lateral view of the phantom: a side projection of the same patient's anatomy.

The patient faces left (anterior on the left, posterior on the right, as
lateral radiographs are usually shown).  No left/right lungs: one overlapping
lung field, the spine's vertebral bodies posteriorly (bright blocks with darker
disc spaces), posterior ribs, the sternum anteriorly, the heart in the middle
and anterior-lower part, the hila at the centre, and diaphragm domes that
descend to the posterior costophrenic recess.  Findings, with intensity ``s``:

* ``Cardiomegaly``: the heart widens (fills the retrosternal clear space)
* ``Effusion``: fluid in the posterior costophrenic recess, meniscus rising posteriorly
* ``Consolidation``: patchy opacity; ``Edema``: perihilar haze;
  ``Atelectasis``: a band along the fissure; ``Nodule``: a soft blob
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cxrlab.data.phantom_layouts.draw import (
    Anatomy,
    acquire,
    ellipse,
    grid,
    point_in,
    smooth_noise,
    soft,
)
from cxrlab.data.phantom_layouts.site import Site


def draw_lateral(
    size: int,
    anatomy: Anatomy,
    pose: tuple[float, float],
    rng: np.random.Generator,
    findings: Mapping[str, float],
    site: Site | None = None,
) -> np.ndarray:
    """Draw a lateral radiograph (uint8, ``size`` x ``size``) with these finding intensities
    (``site``: another phantom hospital's acquisition, :mod:`.site`)."""
    a = anatomy
    sev = {k: float(v) for k, v in findings.items()}
    xx, yy = grid(size)
    cx, cy = 0.5 + pose[0], 0.55 + pose[1]
    lcy = a.lung_cy + pose[1]
    body = soft(ellipse(xx, yy, cx, cy, a.body_ax * 0.95, a.body_ay), 0.05)
    img = 0.04 + 0.30 * body + 0.10 * body * np.clip((0.32 - yy) / 0.12, 0, 1)  # shoulders and arms

    # one lung field, hila at the centre
    lung_d2 = ellipse(xx, yy, cx + 0.03, lcy, 0.23, a.lung_ay * 1.1)
    lung = soft(lung_d2, 0.15)
    hilum = np.exp(-(((xx - (cx + 0.03)) / 0.08) ** 2) - ((yy - lcy) / 0.09) ** 2)
    vessels = np.clip(smooth_noise(rng, size, 0.012), 0, None)
    img += lung * (-0.22 + 0.05 * vessels * (0.5 + hilum) + 0.08 * hilum)
    # vertebral bodies posteriorly, disc spaces between them; posterior ribs; sternum anteriorly
    spine_x = cx + 0.29
    discs = np.clip((np.cos(2 * np.pi * (yy / 0.055 + a.rib_phase)) - 0.7) / 0.3, 0, 1)
    spine = np.clip((0.05 - np.abs(xx - spine_x)) / 0.01, 0, 1) * body * (1 - 0.6 * discs)
    ribs = np.cos(2 * np.pi * ((yy - 0.5 * (xx - cx) ** 2) / 0.075 + a.rib_phase))
    ribs = np.clip((ribs - 0.6) / 0.4, 0, 1) * body * np.clip((xx - cx + 0.05) / 0.1, 0, 1)
    sternum = np.clip((0.012 - np.abs(xx - (cx - 0.31))) / 0.006, 0, 1) * (np.abs(yy - lcy + 0.02) < 0.22)
    img += 0.22 * spine + 0.04 * ribs + 0.12 * sternum

    heart_hw = a.heart_hw_normal * 1.2 * rng.uniform(0.97, 1.03)
    if sev.get("Cardiomegaly", 0):
        heart_hw += sev["Cardiomegaly"] * rng.uniform(0.05, 0.09)
    heart = soft(ellipse(xx, yy, cx - 0.12 + 0.3 * (heart_hw - 0.15), lcy + 0.16, heart_hw, 0.14), 0.12)
    img = img * (1 - 0.7 * heart) + 0.44 * heart
    dome = lcy + a.lung_ay * 0.85 + 0.10 * (xx - cx) + 0.08 * ((xx - cx) / 0.3) ** 2
    diaphragm = np.clip((yy - dome) / 0.03, 0, 1) * body
    img = img * (1 - 0.6 * diaphragm) + 0.42 * diaphragm
    inside = (lung_d2 < 0.6) & (yy < dome - 0.03) & (heart < 0.5)

    if sev.get("Effusion", 0):  # posterior costophrenic recess
        h = (0.03 + 0.09 * sev["Effusion"]) * rng.uniform(0.8, 1.2)
        rise = np.clip((xx - (cx + 0.02)) / 0.2, 0, 1)
        fluid = ((yy > dome - h * rise) & (lung_d2 < 1.1) & (rise > 0)).astype(np.float32)
        img = img * (1 - 0.8 * fluid) + 0.40 * fluid
    if sev.get("Consolidation", 0):
        px, py = point_in(inside, rng)
        blob = ellipse(xx, yy, (px + 0.5) / size, (py + 0.5) / size, 0.07, 0.06)
        img += (0.16 * sev["Consolidation"]) * ((smooth_noise(rng, size, 0.02) > -0.3) & (blob < 1.0))
    if sev.get("Edema", 0):
        img += (0.15 * sev["Edema"]) * np.exp(-(((xx - cx - 0.03) / 0.16) ** 2) - ((yy - lcy) / 0.2) ** 2) * lung
    if sev.get("Atelectasis", 0):  # along the major fissure: posterior-upper to anterior-lower
        ang, fx, fy = rng.uniform(0.5, 0.8), cx + rng.uniform(-0.05, 0.05), lcy + rng.uniform(0.0, 0.12)
        u = (xx - fx) * np.cos(ang) - (yy - fy) * np.sin(ang)
        v = (xx - fx) * np.sin(ang) + (yy - fy) * np.cos(ang)
        band = np.exp(-((v / 0.014) ** 2)) * np.clip((0.08 - np.abs(u)) / 0.01, 0, 1) * lung
        img += (0.22 * sev["Atelectasis"]) * band
    if sev.get("Nodule", 0):
        px, py = point_in(inside, rng)
        img += (0.20 * sev["Nodule"]) * np.exp(-ellipse(xx, yy, (px + 0.5) / size, (py + 0.5) / size, 0.028, 0.028) ** 1.5)
    return acquire(img.astype(np.float32), xx, yy, rng, site)
