"""A planted subgroup effect: one group's lesions drawn fainter, so a performance gap exists by construction.

``SubgroupGap.parse("sex=F:0.5")`` draws every lesion of the images whose ``Patient Gender`` is F at
half its intensity (``draw_frontal``'s graded findings: fainter opacities, a smaller heart, a lower
fluid level); ``"age=60-89:0.4"`` does so for ages 60 to 89.  The labels do not change, so a model
misses more of that group's positives (lower AUC and TPR) while the other group is as before.  The
default phantom (no gap) is unchanged, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrlab.errors import CxrlabError

_FORMAT = "ATTR=VALUE:FACTOR, e.g. sex=F:0.5 or age=60-89:0.4 (FACTOR in (0, 1])"


@dataclass(frozen=True)
class SubgroupGap:
    """Images of one group (``sex`` = value, or ``age`` within [low, high]) get lesions ``factor`` as intense."""

    attribute: str
    value: str
    factor: float

    @classmethod
    def parse(cls, spec: str) -> SubgroupGap:
        try:
            group, factor = spec.rsplit(":", 1)
            attribute, value = group.split("=", 1)
            f = float(factor)
        except ValueError:
            raise CxrlabError(f"--subgroup-gap {spec!r}: expected {_FORMAT}") from None
        attribute, value = attribute.strip(), value.strip()
        if attribute not in ("sex", "age") or not value or not 0 < f <= 1:
            raise CxrlabError(f"--subgroup-gap {spec!r}: expected {_FORMAT}")
        if attribute == "age":
            cls._age_range(value, spec)
        return cls(attribute, value, f)

    @staticmethod
    def _age_range(value: str, spec: str = "") -> tuple[float, float]:
        try:
            lo, hi = (float(v) for v in value.split("-", 1))
        except ValueError:
            raise CxrlabError(f"--subgroup-gap {spec or value!r}: an age group is LOW-HIGH, e.g. age=60-89") from None
        return lo, hi

    def factors(self, ages: np.ndarray, sexes: np.ndarray) -> np.ndarray:
        """(N,) lesion intensity per image: ``factor`` in the group, 1 elsewhere."""
        if self.attribute == "sex":
            inside = np.asarray(sexes).astype(str) == self.value
        else:
            lo, hi = self._age_range(self.value)
            a = np.asarray(ages, dtype=float)
            inside = (a >= lo) & (a <= hi)
        return np.where(inside, self.factor, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "value": self.value, "factor": self.factor,
                "effect": "every lesion of the group drawn at this intensity (labels unchanged)"}
