"""Uncertainty policies for labels in {1, 0, -1 (uncertain), NaN (blank)}.

Following CheXpert (Irvin et al. 2019) and Sinha & Agarwal 2025:

* ``ignore``      -1 -> NaN, masked out of the loss (U-Ignore)
* ``zeros``       -1 -> 0 (U-Zeros)
* ``ones``        -1 -> 1 (U-Ones)
* ``random-flip`` -1 is drawn anew every epoch: 1 with probability ``p`` (per label), else 0
* ``selftrained`` stage 1 trains as ``ignore``; then :func:`relabel_uncertain` replaces
  the uncertain entries with that model's predictions for stage 2 (U-SelfTrained)

Blank (not mentioned) is negative (0) unless ``blank="ignore"``.  A policy can
be given for all labels (``"ones"``) or per label with a ``default``
(``{"Atelectasis": "ones", "Edema": "ones", "default": "zeros"}``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cxrlab.errors import CxrlabError

log = logging.getLogger(__name__)
POLICIES = ("ignore", "zeros", "ones", "random-flip", "selftrained")


@dataclass
class LabelPlan:
    """Targets after the policy, plus what must be re-drawn each epoch."""

    targets: np.ndarray  # float32 (N, L), NaN = ignore
    flip_mask: np.ndarray  # bool (N, L): entries re-drawn every epoch (random-flip)
    flip_p: np.ndarray  # float32 (L,)
    uncertain_mask: np.ndarray  # bool (N, L): where the source said -1
    policies: dict[str, str]
    counts: dict[str, dict[str, int]]


def resolve_policies(labels: list[str], uncertain: str | dict[str, str]) -> dict[str, str]:
    if isinstance(uncertain, str):
        table = {"default": uncertain}
    else:
        table = dict(uncertain)
    unknown = sorted(set(table) - set(labels) - {"default"})
    if unknown:
        raise CxrlabError(f"data.uncertain: policy given for unknown labels {unknown}")
    out = {lab: table.get(lab, table.get("default", "ignore")) for lab in labels}
    bad = sorted({p for p in out.values() if p not in POLICIES})
    if bad:
        raise CxrlabError(f"data.uncertain: unknown policy {bad}; known: {', '.join(POLICIES)}")
    return out


def _per_label(labels: list[str], value: float | dict[str, float], what: str) -> np.ndarray:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(labels) - {"default"})
        if unknown:
            raise CxrlabError(f"{what}: given for unknown labels {unknown}")
        return np.array([value.get(lab, value.get("default", 0.5)) for lab in labels], np.float32)
    return np.full(len(labels), float(value), np.float32)


def apply_policy(raw: np.ndarray, labels: list[str], uncertain: str | dict[str, str] = "ignore",
                 blank: str = "negative", flip_p: float | dict[str, float] = 0.5,
                 absent: np.ndarray | None = None) -> LabelPlan:
    """Map raw labels (1/0/-1/NaN) to training targets; log what changed, with counts.

    ``absent`` (N, L) marks labels the image's dataset does not have (several sources in one run,
    :meth:`~cxrlab.data.manifest.Manifest.absent_mask`): they stay NaN whatever ``blank`` says.
    """
    raw = np.asarray(raw, dtype=np.float32)
    values = set(np.unique(raw[~np.isnan(raw)]).tolist())
    if not values <= {-1.0, 0.0, 1.0}:
        raise CxrlabError(f"labels hold values {sorted(values - {-1.0, 0.0, 1.0})}; expected 1, 0, -1 or blank")
    policies = resolve_policies(labels, uncertain)
    p = _per_label(labels, flip_p, "data.flip_p")
    if ((p < 0) | (p > 1)).any():
        raise CxrlabError("data.flip_p: probabilities must lie in [0, 1]")
    out = raw.copy()
    unc = raw == -1
    blank_mask = np.isnan(raw)
    if absent is not None:
        blank_mask = blank_mask & ~absent
    out[blank_mask] = np.nan if blank == "ignore" else 0.0
    flip = np.zeros_like(unc)
    counts = {}
    for j, lab in enumerate(labels):
        pol = policies[lab]
        col = unc[:, j]
        if pol in ("ignore", "selftrained"):
            out[col, j] = np.nan
        elif pol == "zeros":
            out[col, j] = 0.0
        elif pol == "ones":
            out[col, j] = 1.0
        else:  # random-flip: a first draw is made by redraw()
            out[col, j] = 0.0
            flip[col, j] = True
        counts[lab] = {"uncertain": int(col.sum()), "blank": int(blank_mask[:, j].sum()), "policy": pol}
        if absent is not None and absent[:, j].any():
            counts[lab]["absent"] = int(absent[:, j].sum())
        if col.any():
            log.info("label %s: %d uncertain -> %s", lab, int(col.sum()), pol)
    return LabelPlan(out, flip, p, unc, policies, counts)


def redraw(plan: LabelPlan, rng: np.random.Generator) -> np.ndarray:
    """Targets for one epoch: random-flip entries drawn anew as Bernoulli(p)."""
    if not plan.flip_mask.any():
        return plan.targets
    t = plan.targets.copy()
    draws = rng.random(t.shape) < plan.flip_p[None, :]
    t[plan.flip_mask] = draws[plan.flip_mask].astype(np.float32)
    return t


def relabel_uncertain(plan: LabelPlan, probs: np.ndarray, hard: bool = False) -> np.ndarray:
    """U-SelfTrained stage 2: uncertain entries of ``selftrained`` labels take the model's output."""
    t = plan.targets.copy()
    cols = np.array([plan.policies[lab] == "selftrained" for lab in plan.policies])
    mask = plan.uncertain_mask & cols[None, :]
    vals = (probs >= 0.5).astype(np.float32) if hard else probs.astype(np.float32)
    t[mask] = vals[mask]
    return t
