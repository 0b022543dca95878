"""Study files: a base recipe, a grid of cells, a baseline, and the published numbers.

A study is a paper's comparison as data::

    name: wollek_resolution
    title: Wollek et al. 2023, Higher Chest X-ray Resolution Improves Classification Performance
    base: nih14_densenet121.yaml   # a recipe: relative to the study file, else a shipped recipe by name
    recipe: {...}              # what the study changes in it (or the whole config, inline)
    axes:                      # a full grid over any config keys ...
      data.image_size: [64, 128, 256]
    cells:                     # ... or explicit cells (name + overrides)
      - {name: resnet18_clahe, overrides: {model.name: resnet18, data.clahe: true}}
    baseline: image_size=256   # the cell every other one is tested against
    comparisons: [[image_size=64, image_size=128]]   # extra pairs to test
    post:                      # prediction-only cells made after training:
      - {ensemble: {by: study}}                                 # each cell's views fused per study
      - {ensemble: {groups: {cnn_mix: [resnet18_clahe, densenet121]}}}   # several cells' mean
    published: {image_size=64: {macro: 0.775, labels: {Atelectasis: 0.74}}}
    phantom: {kind: nih14, n: 600, size: 256, overrides: {train.epochs: 3},
              cells: {densenet121: {model.options: {growth_rate: 8, block_config: [2, 2, 2, 2]}}}}
    audit: {method: gradcam, masks: /data/masks}   # each cell's lung-energy share (the phantom has masks)

A cross-site study names datasets instead of axes; its cells are made from them::

    sites:                     # train on each, test on every one (roots: study run --root nih=DIR ...)
      nih: {source: nih14}
      chexpert: {source: chexpert, options: {views: frontal}}
      mimic: {source: mimic}
    leave_one_out: true        # and one cell per site trained on all the others (3 or more sites)
    phantom: {n: 300, size: 64, sites: {nih: {kind: nih14, seed: 1}, chexpert: {kind: chexpert, seed: 2,
              options: {site: B}}, mimic: {kind: nih14, seed: 3, options: {site: C}}}}

Its cells are ``train=<site>`` and ``without=<site>``; after training, ``study run`` scores every cell
on every site's test split (:mod:`cxrlab.workflows.transfer`) and the report shows the matrix.

Cell names come from the axes (``image_size=64``, ``name=value`` joined by
``,``), so they are stable, readable folder names.  Presets ship as package
data (:func:`list_presets`), and so do the recipes they build on
(:func:`list_recipes`): a preset names its paper's recipe in ``base`` and
states in ``recipe`` and the cells only what its comparison changes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxrlab.config import merge_trees
from cxrlab.errors import ConfigError


class Cell(BaseModel):
    """One cell of a study: a run named ``name``, the base recipe with ``overrides`` (dotted keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.=,+-]+$")
    overrides: dict[str, Any] = {}
    sites: tuple[str, ...] = ()
    """The sites a cross-site study's cell trains on (``data.sources``, merged by label name); () otherwise."""


class SiteSpec(BaseModel):
    """One dataset of a cross-site study: a source in its published layout (its folder: ``--root NAME=DIR``)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    options: dict[str, Any] = {}
    """Its source options (``data.options``), e.g. ``{views: frontal}``."""
    labels: list[str] | None = None
    """Its label columns in its own names; None: the columns the label vocabulary maps to the study's
    ``data.labels`` (CheXpert's ``Pleural Effusion`` for NIH's ``Effusion``)."""


class PhantomSite(BaseModel):
    """One phantom hospital of a cross-site study's small form: a layout, a seed and the writer's options."""

    model_config = ConfigDict(extra="forbid")
    kind: str = "nih14"
    seed: int = 0
    """Dataset seed: sites need different ones, else two sites draw the same patients."""
    options: dict[str, Any] = {}
    """Keyword options of the phantom writer, e.g. ``{site: B}`` (:mod:`cxrlab.data.phantom_layouts.site`)."""
    source_options: dict[str, Any] = {}
    """Options its layout's source reads it with (the real site's ``options`` are for the real layout)."""


class PhantomSpec(BaseModel):
    """The small form of a study on the built-in phantom (``--phantom``)."""

    model_config = ConfigDict(extra="forbid")
    kind: str = "nih14"
    n: int = Field(400, ge=40)
    size: int = Field(128, ge=32)
    options: dict[str, Any] = {}
    """Keyword options of the phantom writer (e.g. ``lateral``, ``subtle``)."""
    overrides: dict[str, Any] = {}
    """Config overrides for the small form (fewer epochs, a small model); the cells' own keys win."""
    cells: dict[str, dict[str, Any]] = {}
    """Per-cell overrides for the small form; they win over the cell's own keys and replace whole values
    (a mapping is not merged): e.g. a tiny DenseNet in place of the paper's DenseNet-121, so that a model
    comparison trains in seconds."""
    only: list[str] = []
    """Run only these cells on the phantom (default: all)."""
    baseline: str | None = None
    sites: dict[str, PhantomSite] = {}
    """A cross-site study's phantom hospitals, one per site of the study (same names)."""


class AuditSpec(BaseModel):
    """Where each cell looks (``cxrlab audit``, run by ``study run`` after training when masks are known)."""

    model_config = ConfigDict(extra="forbid")
    method: str = "gradcam"
    """The CAM method of the lung-energy share (:data:`cxrlab.explain.cams.METHODS`)."""
    masks: str | None = None
    """A mask folder or file for a real-data study (``study run --masks SPEC`` wins); the phantom form
    writes its own."""
    sanity: int = Field(0, ge=0)
    """Images of the randomisation and deletion checks per cell (0: skip; ``cxrlab audit RUN`` runs them)."""


class StudySpec(BaseModel):
    """A study file (the module docstring shows one); a preset is one shipped in this package.

    The extension point for a paper's comparison (``docs/extending.md``): a new
    ``studies/<name>.yaml`` is listed by :func:`list_presets` and run by the preset tests.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = ""
    description: str = ""
    recipe: dict[str, Any] = {}
    base: str | None = None
    axes: dict[str, list[Any]] = {}
    cells: list[Cell] = []
    baseline: str | None = None
    comparisons: list[tuple[str, str]] = []
    metrics: list[str] = ["auc"]
    n_boot: int = Field(1000, ge=10)
    """Bootstrap resamples of the report's paired tests and of the post-step cells' CIs."""
    post: list[dict[str, Any]] = []
    published: dict[str, dict[str, Any]] = {}
    published_source: str = ""
    phantom: PhantomSpec | None = None
    audit: AuditSpec = AuditSpec()
    sites: dict[str, SiteSpec] = {}
    """A cross-site study's datasets (its cells are made from them; no ``axes`` or ``cells``)."""
    leave_one_out: bool = True
    """With 3 or more sites, also one cell per site trained on all the others (``without=<site>``)."""

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        for step in self.post:
            if set(step) != {"ensemble"}:
                raise ValueError(f"unknown post step {sorted(step)} (known: ensemble)")
        if self.sites:
            self._check_sites()
        elif not self.axes and not self.cells:
            raise ValueError("a study needs axes (a grid), cells or sites")
        names = [c.name for c in self.grid()]
        if len(set(names)) != len(names):
            raise ValueError(f"cell names repeat: {sorted(n for n in names if names.count(n) > 1)}")
        refs = [self.baseline, *[x for pair in self.comparisons for x in pair], *self.published]
        if self.phantom:
            refs += [*self.phantom.only, self.phantom.baseline, *self.phantom.cells]
        for step in self.post:
            ens = step.get("ensemble") or {}
            refs += [*ens.get("cells", []), *(m for members in ens.get("groups", {}).values() for m in members)]
        for ref in refs:
            if ref is not None and ref not in names:
                raise ValueError(f"{ref!r} is not a cell of the study (cells: {', '.join(names)})")
        return self

    def _check_sites(self) -> None:
        import re

        if self.axes or self.cells:
            raise ValueError("a cross-site study makes its cells from its sites; drop axes and cells")
        if len(self.sites) < 2:
            raise ValueError(f"a cross-site study needs two or more sites, got {len(self.sites)}")
        bad = [s for s in self.sites if not re.fullmatch(r"[A-Za-z0-9_.-]+", s)]
        if bad:
            raise ValueError(f"site names {bad}: use letters, digits, '_', '.' or '-' (they name folders)")
        if self.phantom is not None and set(self.phantom.sites) != set(self.sites):
            raise ValueError(f"phantom.sites must name every site of the study ({', '.join(self.sites)}), got "
                             f"{', '.join(self.phantom.sites) or 'none'}")

    def grid(self) -> list[Cell]:
        """Every cell: the explicit ones, then the product of the axes (first axis varies slowest); a
        cross-site study's ``train=<site>`` cells, then its ``without=<site>`` ones (:attr:`leave_one_out`)."""
        if self.sites:
            names = list(self.sites)
            cells = [Cell(name=f"train={s}", sites=(s,)) for s in names]
            if self.leave_one_out and len(names) >= 3:
                cells += [Cell(name=f"without={s}", sites=tuple(n for n in names if n != s)) for s in names]
            return cells
        cells = list(self.cells)
        if self.axes:
            keys = list(self.axes)
            for values in itertools.product(*(self.axes[k] for k in keys)):
                name = ",".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in zip(keys, values, strict=True))
                cells.append(Cell(name=name, overrides=dict(zip(keys, values, strict=True))))
        return cells

    def baseline_cell(self) -> str:
        return self.baseline or self.grid()[0].name

    def post_cells(self, cells: list[str]) -> dict[str, PostCell]:
        """The prediction-only cells the post steps make from the trained ``cells``: name -> how.

        ``{ensemble: {by: study}}`` makes ``<cell>+study_mean`` of each cell (or of ``cells:``);
        ``{ensemble: {groups: {name: [cell, ...]}}}`` one cell per group whose members are all in ``cells``.
        """
        out: dict[str, PostCell] = {}
        for step in self.post:
            ens = step["ensemble"]
            how, by = ens.get("how", "mean"), ens.get("by")
            if "groups" in ens:
                out.update({name: PostCell(name, list(members), how, by) for name, members in ens["groups"].items()
                            if all(m in cells for m in members)})
            else:
                by = by or "study"
                out.update({f"{c}+{by}_{how}": PostCell(f"{c}+{by}_{how}", [c], how, by)
                            for c in ens.get("cells", cells) if c in cells})
        return out


@dataclass(frozen=True)
class PostCell:
    """A prediction-only cell of a post step: the ensemble (``how``, fused per ``by``) of ``members``."""

    name: str
    members: list[str]
    how: str = "mean"
    by: str | None = None


def _label(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v).replace(" ", "").replace("/", "-")


def _parse(tree: Any, origin: str) -> StudySpec:
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level of a study file")
    try:
        return StudySpec.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<study>"
        raise ConfigError(f"{origin}: {key}: {first['msg']}") from None


def list_presets() -> dict[str, Path]:
    """The studies shipped with cxrlab: preset name -> file."""
    folder = resources.files("cxrlab.studies")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def list_recipes() -> dict[str, Path]:
    """The recipes shipped with cxrlab (``src/cxrlab/recipes``, ``recipes/`` in a checkout): file name -> file."""
    folder = resources.files("cxrlab") / "recipes"
    return {Path(str(p)).name: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def base_recipe(path: str | Path, spec: StudySpec) -> Path | None:
    """The recipe file a study file's ``base`` names: relative to the study file, else a shipped recipe
    (by file name, ``nih14_densenet121.yaml``, or its stem); None when the study has no ``base``."""
    if not spec.base:
        return None
    path = Path(path)
    local = Path(spec.base) if Path(spec.base).is_absolute() else path.parent / spec.base
    if local.is_file():
        return local
    shipped = list_recipes()
    found = shipped.get(spec.base) or shipped.get(f"{spec.base}.yaml")
    if found is None:
        raise ConfigError(f"{path}: base recipe {spec.base} not found (next to the study file, or shipped: "
                          f"{', '.join(sorted(shipped))})")
    return found


def study_path(ref: str | Path) -> Path:
    """The file of a study file or preset name (a ConfigError naming the presets when there is none)."""
    presets = list_presets()
    path = presets.get(str(ref)) or Path(ref)
    if not path.is_file():
        raise ConfigError(f"{ref}: no such study file or preset (presets: {', '.join(sorted(presets))})")
    return path


def read_spec(path: str | Path) -> StudySpec:
    """The study file at ``path`` as a spec (its ``base`` recipe is not read)."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    return _parse(tree, str(path))


def load_study(ref: str | Path) -> tuple[StudySpec, dict[str, Any]]:
    """A study file or preset name -> (spec, base recipe tree with the study's ``recipe`` applied)."""
    path = study_path(ref)
    spec = read_spec(path)
    base: dict[str, Any] = {}
    base_path = base_recipe(path, spec)
    if base_path is not None:
        try:
            base = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise ConfigError(f"{base_path}: not valid YAML (base recipe of {path})") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{base_path}: expected a mapping of settings (base recipe of {path})")
    return spec, merge_trees(base, spec.recipe)


def dotted(overrides: dict[str, Any]) -> list[str]:
    """``{"data.image_size": 64}`` -> ``["data.image_size=64"]`` (values as YAML)."""
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in overrides.items()]
