"""Phantom "hospitals": how one site's radiographs differ from another's (``site=`` of the phantom writers).

Real sites differ in acquisition (detector, exposure, processing), field of view, the text and
markers burned into the image, and who is imaged (prevalence).  A model that learnt one site's
look loses accuracy at the next (Zech et al. 2018, PLOS Medicine), and its thresholds give the
wrong share of positives there (torchxrayvision #175).  :class:`Site` holds those differences;
:func:`apply_site` draws them where :func:`~cxrlab.data.phantom_layouts.draw.acquire` draws the
default site's acquisition.

Site ``"A"`` is the default phantom (byte-identical to a phantom written without ``site``);
``"B"`` is a second hospital: over-exposed with a flatter gamma, three times the noise, a softer
detector, a tighter field of view, a burned-in text block in every image and half the prevalence.
``"C"`` is a third, shifted the other way: under-exposed with a steeper gamma, twice the noise, a
wider field of view, no marker and 1.4 times the prevalence (the cross-site study's third hospital).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cxrlab.errors import CxrlabError


@dataclass(frozen=True)
class Site:
    """One phantom hospital's acquisition, field of view, burned-in marks and prevalence.

    Ranges are drawn uniformly per image.  ``zoom`` > 1 is a tighter field of view (the chest
    fills more of the image; its edges leave it); ``blur`` is the detector's softness (Gaussian
    sigma as a fraction of the image side); ``marker`` is ``square`` (the default site's side
    marker, in 30% of images), ``text`` (a burned-in text block at the top left, every image) or
    ``none``; ``prevalence`` scales the probability of every finding.
    """

    name: str
    gain: tuple[float, float] = (0.85, 1.15)
    offset: tuple[float, float] = (-0.04, 0.04)
    gamma: tuple[float, float] = (0.85, 1.15)
    noise: tuple[float, float] = (0.01, 0.025)
    blur: float = 0.0
    zoom: float = 1.0
    marker: str = "square"
    prevalence: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


#: The built-in sites; ``A`` is the default phantom.
SITES: dict[str, Site] = {
    "A": Site("A"),
    "B": Site("B", gain=(1.1, 1.3), offset=(0.02, 0.06), gamma=(0.6, 0.75), noise=(0.05, 0.08),
              blur=0.012, zoom=1.18, marker="text", prevalence=0.5),
    "C": Site("C", gain=(0.75, 0.9), offset=(-0.03, 0.0), gamma=(1.2, 1.4), noise=(0.03, 0.05),
              blur=0.006, zoom=0.9, marker="none", prevalence=1.4),
}


def site_of(site: str | Site | None) -> Site | None:
    """The :class:`Site` of a name (``None`` and ``"A"``: the default phantom, drawn as before)."""
    if site is None or isinstance(site, Site):
        return None if site is None or site == SITES["A"] else site
    if site not in SITES:
        raise CxrlabError(f"phantom: unknown site {site!r}; expected one of {', '.join(SITES)}")
    return None if site == "A" else SITES[site]


def prevalence(p: float, site: Site | None) -> float:
    """A finding's probability at ``site`` (unchanged for the default)."""
    return p if site is None else float(min(max(p * site.prevalence, 0.0), 1.0))


def site_box(box: tuple[float, float, float, float] | None, size: int,
             site: Site) -> tuple[float, float, float, float] | None:
    """A true box ``(x, y, w, h)`` after ``site``'s field of view (zoom about the centre), clipped to the image."""
    if box is None or site.zoom == 1.0:
        return box
    x, y, w, h = box
    c, z = size / 2, site.zoom
    x0, y0 = max((x - c) * z + c, 0.0), max((y - c) * z + c, 0.0)
    x1, y1 = min((x + w - c) * z + c, float(size)), min((y + h - c) * z + c, float(size))
    return (x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0))


def _text_block(xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two lines of blocky "characters" at the top left (a name/date/"PORTABLE" stamp)."""
    mask = np.zeros(xx.shape, dtype=bool)
    for line in range(2):
        y0 = 0.035 + 0.05 * line
        x = 0.04
        for _ in range(int(rng.integers(6, 10))):
            w = rng.uniform(0.012, 0.022)
            mask |= (xx > x) & (xx < x + w) & (yy > y0) & (yy < y0 + 0.03)
            x += w + 0.008
    return mask


def apply_site(img: np.ndarray, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator,
               site: Site) -> np.ndarray:
    """``site``'s acquisition of a float image in [0, 1]-ish -> uint8 (what ``acquire`` does for site A)."""
    size = img.shape[0]
    if site.zoom != 1.0:  # tighter collimation: scale about the centre, the chest's edges leave the image
        m = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, site.zoom)
        img = cv2.warpAffine(img.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    if site.blur > 0:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(site.blur * size, 0.3))
    if site.marker == "square" and rng.random() < 0.3:
        mx = rng.uniform(0.06, 0.14) if rng.random() < 0.5 else rng.uniform(0.82, 0.9)
        my = rng.uniform(0.05, 0.12)
        img = np.where((np.abs(xx - mx) < 0.025) & (np.abs(yy - my) < 0.035), 0.9, img)
    elif site.marker == "text":
        img = np.where(_text_block(xx, yy, rng), 0.95, img)
    vignette = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.5
    img = img * vignette * rng.uniform(*site.gain) + rng.uniform(*site.offset)
    img = img + rng.normal(0, rng.uniform(*site.noise), size=img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(*site.gamma)
    return np.round(img * 255).astype(np.uint8)
