"""CheXpert-layout phantom: studies with a frontal and often a lateral view, uncertain labels.

Layout (what the ``chexpert`` source reads; ``data.root`` = ``OUT/CheXpert-v1.0-small``)::

    OUT/CheXpert-v1.0-small/
      train.csv  valid.csv                   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
      train/patient00001/study1/view1_frontal.jpg  view2_lateral.jpg
      valid/patient00004/study1/view1_frontal.jpg
      phantom_truth.csv                      hidden truth (0/1) and grade per image and finding
      phantom.json                           how it was made

Findings: the 5 competition labels (Atelectasis: a plate-like band; Cardiomegaly;
Consolidation; Edema: bilateral perihilar haze; Pleural Effusion), plus
Pneumothorax and Lung Lesion (a nodule) with certain labels.  Each finding of a
study gets a *grade*: ``clear`` (present), ``mild`` (present, drawn faint/small),
``lookalike`` (absent, but a faint look-alike is drawn) or ``absent``.  An
:class:`UncertainRule` per label turns grades into train.csv values 1 / 0 / -1 /
blank, so U-Ones, U-Zeros and U-Ignore train on measurably different targets.
By default (:data:`RULES`) an uncertain Atelectasis or Edema is mostly a faint
true finding (U-Ones fits), an uncertain Cardiomegaly, Consolidation or Pleural
Effusion mostly an absent look-alike (U-Zeros fits), as the CheXpert paper found
for the real labels.  valid.csv holds the truth (0/1, no blanks), as the real one
holds radiologist consensus.  The frontal and lateral view of a study share its
grades and labels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from cxrlab.data.phantom import draw_frontal, patient_of
from cxrlab.data.phantom_layouts.common import (
    check_args,
    clear_previous,
    draw,
    run_jobs,
    save_image,
)
from cxrlab.data.phantom_layouts.draw import Anatomy
from cxrlab.data.phantom_layouts.lateral import draw_lateral
from cxrlab.data.phantom_layouts.patterns import extra_patterns
from cxrlab.data.phantom_layouts.site import Site, site_of
from cxrlab.data.phantom_layouts.site import prevalence as site_prevalence
from cxrlab.data.sources.chexpert import COMPETITION, OBSERVATIONS
from cxrlab.errors import CxrlabError
from cxrlab.runio import atomic_write_text

__all__ = ["COMPETITION", "PREVALENCE", "RULES", "UncertainRule", "rules_of", "write_phantom_chexpert"]

FOLDER = "CheXpert-v1.0-small"
#: Probability that a finding is present in a study.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.20, "Cardiomegaly": 0.18, "Consolidation": 0.15, "Edema": 0.22,
    "Pleural Effusion": 0.28, "Pneumothorax": 0.06, "Lung Lesion": 0.08,
}
#: Drawing intensity of each grade (1 = as clear as the default phantom's lesions).
INTENSITY: dict[str, float] = {"clear": 1.0, "mild": 0.45, "lookalike": 0.25, "absent": 0.0}
_FRONTAL = {"Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation", "Pleural Effusion": "Effusion",
            "Pneumothorax": "Pneumothorax", "Lung Lesion": "Nodule"}
_PATTERN = {"Edema": "edema", "Atelectasis": "atelectasis"}
_LATERAL = {"Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation", "Pleural Effusion": "Effusion",
            "Edema": "Edema", "Atelectasis": "Atelectasis", "Lung Lesion": "Nodule"}
_OPACITIES = ("Consolidation", "Edema", "Atelectasis", "Lung Lesion")


@dataclass(frozen=True)
class UncertainRule:
    """How the graded findings of one competition label become train.csv values.

    ``mild`` and ``lookalike`` change the images (how many findings are drawn
    faint, how many absent ones get a look-alike); the ``p_*`` and ``blank``
    only change the labels.
    """

    mild: float = 0.35  # share of present findings drawn mild (faint/small)
    lookalike: float = 0.10  # share of absent findings drawn as a faint look-alike
    p_mild: float = 0.8  # P(-1 | mild): a faint finding is mostly reported as uncertain
    p_lookalike: float = 0.5  # P(-1 | look-alike): an absent look-alike sometimes is
    p_clear: float = 0.02  # P(-1 | clear)
    blank: float = 0.6  # P(blank | certain negative): most negatives are not mentioned


_POSITIVE_LEANING = UncertainRule(mild=0.4, lookalike=0.06, p_mild=0.85, p_lookalike=0.4)
_NEGATIVE_LEANING = UncertainRule(mild=0.2, lookalike=0.15, p_mild=0.5, p_lookalike=0.6)
#: Default rule per label: -1 mostly means present for Atelectasis/Edema, absent for the others.
RULES: dict[str, UncertainRule] = {
    "Atelectasis": _POSITIVE_LEANING, "Edema": _POSITIVE_LEANING, "Cardiomegaly": _NEGATIVE_LEANING,
    "Consolidation": _NEGATIVE_LEANING, "Pleural Effusion": _NEGATIVE_LEANING,
}
_FIELDS = {f.name for f in fields(UncertainRule)}


def rules_of(spec: str | UncertainRule | Mapping | None) -> dict[str, UncertainRule]:
    """The rule of each competition label from ``write_phantom_chexpert``'s ``uncertain_rule``.

    ``"chexpert"``: :data:`RULES`; an :class:`UncertainRule` (or a dict of its
    fields): that rule for all; a mapping label -> rule (or field dict), with an
    optional ``default`` (else :data:`RULES`); ``None``: the images of
    :data:`RULES` with certain labels (mild -> 1, look-alike -> 0/blank).
    """
    if spec is None:
        return {k: UncertainRule(r.mild, r.lookalike, 0.0, 0.0, 0.0, r.blank) for k, r in RULES.items()}
    if isinstance(spec, str):
        if spec != "chexpert":
            raise CxrlabError(f"phantom chexpert: uncertain_rule {spec!r}; expected 'chexpert', a rule or None")
        return dict(RULES)
    if isinstance(spec, UncertainRule) or set(spec) <= _FIELDS:
        rule = spec if isinstance(spec, UncertainRule) else UncertainRule(**spec)
        return dict.fromkeys(COMPETITION, rule)
    unknown = sorted(set(spec) - set(COMPETITION) - {"default"})
    if unknown:
        raise CxrlabError(f"phantom chexpert: uncertain_rule for unknown labels {unknown}")
    table = {k: (v if isinstance(v, UncertainRule) else UncertainRule(**v)) for k, v in spec.items()}
    return {k: table.get(k, table.get("default", RULES[k])) for k in COMPETITION}


def grades(index: int, seed: int, rules: Mapping[str, UncertainRule], site: Site | None = None) -> dict[str, str]:
    """The hidden grade of each finding of study ``index`` (competition labels can be mild/look-alike);
    ``site`` scales the prevalence (:func:`cxrlab.data.phantom_layouts.site.prevalence`)."""
    g = draw(seed, 5, index)
    out = {}
    for label, p in PREVALENCE.items():
        u, v = g.random(), g.random()
        rule = rules.get(label)
        if u < site_prevalence(p, site):
            out[label] = "mild" if rule and v < rule.mild else "clear"
        else:
            out[label] = "lookalike" if rule and v < rule.lookalike else "absent"
    return out


def train_value(grade: str, rule: UncertainRule | None, g: np.random.Generator) -> float | None:
    """The train.csv value (1, 0, -1 or None = blank) of a finding with this grade."""
    u, b = g.random(), g.random()  # always two draws: one rule value does not shift the others
    if rule is None:  # a label without uncertainty
        return 1.0 if grade == "clear" else (None if b < 0.6 else 0.0)
    if grade == "clear":
        return -1.0 if u < rule.p_clear else 1.0
    if grade == "mild":
        return -1.0 if u < rule.p_mild else 1.0
    if grade == "lookalike" and u < rule.p_lookalike:
        return -1.0
    return None if b < rule.blank else 0.0


def _observations(values: dict[str, float | None], valid: bool) -> list[float | None]:
    """The 14 CheXpert columns, with the parents (Lung Opacity, Enlarged Cardiomediastinum) filled in."""
    empty = 0.0 if valid else None
    row: dict[str, float | None] = dict.fromkeys(OBSERVATIONS, empty)
    row.update(values)
    opac = [row[k] for k in _OPACITIES]
    row["Lung Opacity"] = 1.0 if 1.0 in opac else (-1.0 if -1.0 in opac else empty)
    row["Enlarged Cardiomediastinum"] = row["Cardiomegaly"] if row["Cardiomegaly"] in (1.0, -1.0) else empty
    mentioned = any(row[k] in (1.0, -1.0) for k in OBSERVATIONS if k != "No Finding")
    row["No Finding"] = empty if mentioned else 1.0
    return [row[k] for k in OBSERVATIONS]


def _study(args: tuple) -> dict:
    index, size, seed, rules, p_lateral, valid, root, *rest = args
    site = rest[0] if rest else None
    patient, follow_up = patient_of(index, seed)
    grade = grades(index, seed, rules, site)
    s = {label: INTENSITY[g] for label, g in grade.items()}
    anatomy = Anatomy.draw(draw(seed, 1, patient))
    rng = draw(seed, 2, index)
    pose = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    hook = extra_patterns({label: (pattern, s[label]) for label, pattern in _PATTERN.items()})
    frontal, _ = draw_frontal(size, anatomy, pose, rng, {v: s[k] for k, v in _FRONTAL.items()}, extra=hook,
                               site=site)
    m = draw(seed, 9, index)
    view = "AP" if m.random() < 0.7 else "PA"
    has_lateral = bool(m.random() < p_lateral)
    truth = {label: float(g in ("clear", "mild")) for label, g in grade.items()}
    values = truth if valid else {label: train_value(g, rules.get(label), m) for label, g in grade.items()}
    study = f"{FOLDER}/{'valid' if valid else 'train'}/patient{patient:05d}/study{follow_up + 1}"
    save_image(Path(root) / study / "view1_frontal.jpg", frontal)
    paths = [(f"{study}/view1_frontal.jpg", "Frontal", view)]
    if has_lateral:
        lat_rng = draw(seed, 6, index)
        lat_pose = (float(lat_rng.normal(0, 0.012)), float(lat_rng.normal(0, 0.012)))
        lateral = draw_lateral(size, anatomy, lat_pose, lat_rng, {v: s[k] for k, v in _LATERAL.items()}, site)
        save_image(Path(root) / study / "view2_lateral.jpg", lateral)
        paths.append((f"{study}/view2_lateral.jpg", "Lateral", ""))
    return {"patient": patient, "follow_up": follow_up, "valid": valid, "paths": paths,
            "grade": grade, "truth": truth, "row": _observations(values, valid)}


def _valid_patients(n: int, seed: int, fraction: float) -> set[int]:
    patients = sorted({patient_of(i, seed)[0] for i in range(n)})
    valid = {p for p in patients if draw(seed, 3, p).random() < fraction}
    if not valid and fraction > 0 and len(patients) > 1:
        valid = {patients[-1]}
    if valid == set(patients) and len(patients) > 1:
        valid.discard(patients[0])
    return valid


def _fmt(v: float | None) -> str:
    return "" if v is None or np.isnan(v) else f"{v:.1f}"


def write_phantom_chexpert(
    out: str | Path,
    n: int = 1000,
    size: int = 256,
    seed: int = 0,
    lateral: bool | float = True,
    uncertain_rule: str | UncertainRule | Mapping | None = "chexpert",
    valid_fraction: float = 0.15,
    workers: int | None = None,
    site: str | None = None,
) -> Path:
    """Write ``n`` phantom *studies* in the CheXpert layout; return the folder to read (``data.root``).

    Args:
        out: target folder; the dataset goes to ``out/CheXpert-v1.0-small``.
        n: number of studies (each has one frontal view; patients have 1-3 studies).
        size: image side in pixels (JPEG files).
        seed: dataset seed.
        lateral: add a lateral view to a study with this probability (``True`` = 0.5).
        uncertain_rule: ``"chexpert"`` (:data:`RULES`, per label), one
            :class:`UncertainRule` for all labels, a mapping label -> rule, or
            ``None`` (the same images, certain labels only); see :func:`rules_of`.
        valid_fraction: share of patients in ``valid.csv`` (true labels).
        workers: processes to render with (default: all cores).
        site: the phantom hospital (``"B"``: other acquisition, field of view, burned-in text and
            prevalence; :mod:`cxrlab.data.phantom_layouts.site`); None or ``"A"``: the default.
    """
    check_args(n, size, 2)
    where = site_of(site)
    rules = rules_of(uncertain_rule)
    p_lateral = 0.5 if lateral is True else float(lateral or 0.0)
    out = Path(out)
    root = out / FOLDER
    clear_previous(root, ("train", "valid"))
    root.mkdir(parents=True, exist_ok=True)
    valid = _valid_patients(n, seed, valid_fraction)
    jobs = [(i, size, seed, rules, p_lateral, patient_of(i, seed)[0] in valid, str(out), *([where] if where else []))
            for i in range(n)]
    studies = run_jobs(_study, jobs, workers, "phantom chexpert")

    header = ",".join(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
    tables: dict[bool, list[str]] = {False: [header], True: [header]}
    truth = [",".join(["Path", "split", *PREVALENCE, *(f"{k} grade" for k in PREVALENCE)])]
    for st in studies:
        d = draw(seed, 8, st["patient"])
        sex, age = ("Male" if d.random() < 0.55 else "Female"), int(d.integers(18, 86)) + st["follow_up"]
        labels = ",".join(_fmt(v) for v in st["row"])
        for path, fl, ap in st["paths"]:
            tables[st["valid"]].append(f"{path},{sex},{age},{fl},{ap},{labels}")
            truth.append(",".join([path, "valid" if st["valid"] else "train",
                                   *(f"{st['truth'][k]:.0f}" for k in PREVALENCE), *st["grade"].values()]))
    atomic_write_text(root / "train.csv", "\n".join(tables[False]) + "\n")
    atomic_write_text(root / "valid.csv", "\n".join(tables[True]) + "\n")
    atomic_write_text(root / "phantom_truth.csv", "\n".join(truth) + "\n")
    meta = {"generator": "cxrlab.phantom", "layout": "chexpert", "n_studies": n, "size": size, "seed": seed,
            "lateral": p_lateral, "valid_fraction": valid_fraction, "uncertain_rule": {k: asdict(r) for k, r in rules.items()},
            "intensity": INTENSITY, "prevalence": PREVALENCE, "labels": list(COMPETITION),
            "images": len(tables[False]) + len(tables[True]) - 2}
    if where is not None:  # only when set, so that the default phantom.json stays as it was
        meta["site"] = where.to_dict()
    atomic_write_text(root / "phantom.json", json.dumps(meta, indent=2) + "\n")
    return root
