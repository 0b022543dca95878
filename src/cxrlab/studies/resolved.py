"""What a study ran, written to its folder before the first cell trains.

A preset describes the paper's setting (224 px, hub weights, 20 epochs); a
study run changes it through its phantom form and the command line.  So the
study folder keeps both, apart:

- ``preset.yaml``: the study file as given, verbatim (comments kept); ``study
  report`` reads the spec from it;
- ``recipe.yaml``: the recipe the study file names in ``base``, verbatim (the
  paper's settings a preset builds on), when it names one;
- ``study.yaml``: what runs: the command line verbatim, the data root, and
  every cell's resolved config as dotted keys (``common``: the same in every
  cell; ``cells``: what differs), so a reader sees ``data.image_size: 32``
  where 32 px ran, not the preset's 224.

Each cell's full config is also in ``runs/<cell>/config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cxrlab.errors import ConfigError
from cxrlab.runio import atomic_write_text
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.spec import StudySpec, base_recipe, read_spec

_HEADER = ("# cxrlab study: what ran.  Every cell's resolved config (the base recipe and the study file, then its\n"
           "# phantom form, then the command line), as dotted keys: `common` holds what every cell shares, `cells`\n"
           f"# what differs.  The study file as given: {StudyFolder.PRESET}; its base recipe: {StudyFolder.RECIPE}.\n"
           f"# A cell's full config: {StudyFolder.RUNS}/<cell>/config.yaml.\n")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"image_size": 32}}`` -> ``{"data.image_size": 32}`` (lists stay values; ``{}`` stays too)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def write_study_files(study: StudyFolder, spec: StudySpec, source: Path, cells: dict[str, dict[str, Any]],
                      command_line: list[str], root: str | None, phantom: bool, baseline: str,
                      masks: str | None = None) -> Path:
    """Write ``preset.yaml`` (the study file, verbatim), ``recipe.yaml`` (its base recipe, verbatim) and
    ``study.yaml`` (what runs); return the latter.

    Args:
        source: the study file the spec came from (a preset's file in the package, or the user's).
        cells: cell name -> its resolved config (``ExperimentConfig.model_dump(mode="json")``).
        command_line: the ``key=value`` overrides as typed.
        masks: the mask spec each cell is audited against (None: no masks, the cells are not audited).
    """
    study.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.preset_file, Path(source).read_text(encoding="utf-8"))
    base = base_recipe(source, spec)
    if base is not None:
        atomic_write_text(study.recipe_file, base.read_text(encoding="utf-8"))
    elif study.recipe_file.is_file():  # the study file no longer names one
        study.recipe_file.unlink()
    flat = {name: flatten(tree) for name, tree in cells.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    first = next(iter(flat.values()), {})
    common = {k: first[k] for k in keys if all(k in f and f[k] == first[k] for f in flat.values())}
    doc = {"study": spec.name, "title": spec.title, "source": str(source),
           "base": str(base) if base is not None else None, "phantom": phantom, "root": root,
           "command_line": list(command_line), "baseline": baseline, "masks": masks, "common": common,
           "cells": {name: {k: v for k, v in f.items() if k not in common} for name, f in flat.items()}}
    text = _HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=110)
    return atomic_write_text(study.resolved_file, text)


def read_resolved(study: StudyFolder) -> dict[str, Any] | None:
    """``study.yaml`` as written by :func:`write_study_files` (None for a folder from an older cxrlab)."""
    path = study.resolved_file
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    return doc if isinstance(doc, dict) and "command_line" in doc else None


def folder_spec(study: StudyFolder) -> StudySpec:
    """The spec a study folder ran: ``preset.yaml``, or the older ``study.yaml`` that held the spec."""
    if study.preset_file.is_file():
        return read_spec(study.preset_file)
    if study.resolved_file.is_file() and read_resolved(study) is None:
        return read_spec(study.resolved_file)
    raise ConfigError(f"{study.path}: no {study.PRESET} (not a study folder? pass the study file or run "
                      "cxrlab study run)")
