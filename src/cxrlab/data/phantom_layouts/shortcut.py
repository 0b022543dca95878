"""A planted shortcut: burned-in text outside the lungs whose presence goes with one label.

Real models learn such cues (Zech et al. 2018: the hospital's "PORTABLE" stamp predicts
pneumonia; DeGrave et al. 2021: text and markers in COVID sets), and a report that claims
"the model looks at the lungs" should be able to see it fail.  With ``Shortcut("Effusion",
0.9, 0.1)`` the text is burned into 90% of the images that show an effusion and 10% of those
that do not; a model can then score the label from the corner of the image.

The text is drawn after the anatomy and lesions and before the acquisition (noise,
exposure), so that it looks burned in; whether an image carries it is drawn from its own
random stream ``(seed, 31, index)``.  The rest of the image is pixel for pixel the one drawn
without the shortcut (the clean twin), which is what makes a paired comparison exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrlab.errors import CxrlabError

#: Where the text lies (fractions of the image side: x0, y0, x1, y1): the lower left corner,
#: outside the body ellipse of every phantom anatomy, so outside the lungs and the heart.
REGION: tuple[float, float, float, float] = (0.03, 0.87, 0.31, 0.97)

#: "PORT" in a 3x5 pixel font (1 = ink), the glyphs side by side with one blank column between.
_GLYPHS = {
    "P": ("111", "101", "111", "100", "100"),
    "O": ("111", "101", "101", "101", "111"),
    "R": ("111", "101", "111", "110", "101"),
    "T": ("111", "010", "010", "010", "010"),
}
TEXT = "PORT"
_BITMAP = np.array([[int(c) for c in "0".join(_GLYPHS[g][r] for g in TEXT)] for r in range(5)], dtype=bool)


@dataclass(frozen=True)
class Shortcut:
    """Burned-in text in ``positive_rate`` of the images with ``label`` and ``negative_rate`` of the others."""

    label: str
    positive_rate: float = 0.9
    negative_rate: float = 0.1

    def __post_init__(self) -> None:
        for name in ("positive_rate", "negative_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise CxrlabError(f"phantom: --shortcut {name.replace('_', ' ')} must be in [0, 1], got {v}")

    @classmethod
    def parse(cls, spec: str, labels: tuple[str, ...] | list[str]) -> Shortcut:
        """``LABEL:0.9:0.1`` (rates default to 0.9 and 0.1) for one of ``labels``."""
        parts = spec.split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise CxrlabError(f"--shortcut: expected LABEL:POSITIVE_RATE:NEGATIVE_RATE (e.g. Effusion:0.9:0.1), "
                              f"got {spec!r}")
        if parts[0] not in labels:
            raise CxrlabError(f"--shortcut: {parts[0]!r} is not a label of this phantom ({', '.join(labels)})")
        try:
            rates = [float(x) for x in parts[1:]]
        except ValueError:
            raise CxrlabError(f"--shortcut: rates must be numbers, got {spec!r}") from None
        return cls(parts[0], *rates)

    def marked(self, seed: int, index: int, positive: bool) -> bool:
        """Whether image ``index`` carries the text (its own random stream; the image's is untouched)."""
        rate = self.positive_rate if positive else self.negative_rate
        return bool(np.random.default_rng([seed, 31, index]).random() < rate)

    def to_dict(self, size: int) -> dict:
        """The ``phantom.json`` record: rule, what is drawn, and where (box in pixels)."""
        x0, y0, x1, y1 = REGION
        return {"label": self.label, "positive_rate": self.positive_rate, "negative_rate": self.negative_rate,
                "marker": f"burned-in text {TEXT!r}, lower left corner, outside the lungs",
                "box": [round(x0 * size, 1), round(y0 * size, 1), round((x1 - x0) * size, 1),
                        round((y1 - y0) * size, 1)]}


def text_mask(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Bool mask of the text's ink on the grid ``(xx, yy)`` (fractions of the side)."""
    x0, y0, x1, y1 = REGION
    rows, cols = _BITMAP.shape
    inside = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    c = np.clip(((xx - x0) / (x1 - x0) * cols).astype(int), 0, cols - 1)
    r = np.clip(((yy - y0) / (y1 - y0) * rows).astype(int), 0, rows - 1)
    return inside & _BITMAP[r, c]


def burn_in(img: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``img`` with the text burned in (bright as the default site's lead marker)."""
    return np.where(text_mask(xx, yy), 0.92, img)
