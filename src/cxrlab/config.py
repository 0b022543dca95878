"""Typed experiment configuration: YAML in, fully resolved YAML out.

Every field has a default, so a recipe only states what differs.  Unknown keys
and wrong types are errors that name the key (``train.lr: ...``).  Command-line
overrides are ``key=value`` pairs with dotted keys; values are parsed as YAML
(``train.epochs=3``, ``data.labels=[Mass,Nodule]``).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxrlab.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceSpec(_Strict):
    """One entry of ``data.sources``: a dataset merged with others into one run."""

    source: str
    """Registered source name."""
    root: str
    """Its folder (or file) in the source's published layout."""
    options: dict[str, Any] = {}
    labels: list[str] | None = None
    """Its label columns in its own names (``None``: the source's default list)."""
    name: str | None = None
    """What the run calls it (the ``source`` column, the per-source report rows); default: ``source``."""


class DataConfig(_Strict):
    source: str = "nih14"
    """Registered source name (see ``cxrlab.data.sources``)."""
    root: str = ""
    """Dataset folder in the source's published layout."""
    labels: list[str] | None = None
    """Labels to train on; ``None`` takes the source's default list (with ``sources``: the union of
    their canonical names)."""
    sources: list[SourceSpec] | None = None
    """Several datasets in one run, merged by label name through the vocabulary (instead of
    ``source``/``root``/``options``); a label a source lacks is masked (NaN), never 0."""
    vocabulary: str | None = None
    """A user vocabulary file extending or overriding the shipped one (``cxrlab/data/vocabulary.yaml``)."""
    image_size: int = Field(224, ge=16, le=4096)
    options: dict[str, Any] = {}
    """Source-specific options (see each source's documentation)."""
    val_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    """Fraction of training *patients* held out for validation (when the source has no val split)."""
    fractions: dict[Literal["train", "val", "test"], float] = {"train": 0.7, "val": 0.1, "test": 0.2}
    """Patient shares per split when the source has no official split (iterative stratification)."""
    split_file: str | None = None
    """JSON file to save the split to, or reuse it from when it exists."""
    uncertain: str | dict[str, str] = "ignore"
    """Policy for uncertain (-1) labels: ignore | zeros | ones | random-flip | selftrained, or per label."""
    blank: Literal["negative", "ignore"] = "negative"
    """Blank (not mentioned) labels: negative (0) or ignored in the loss."""
    flip_p: float | dict[str, float] = 0.5
    """Probability of 1 for random-flip draws, for all labels or per label."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N images of each split (quick experiments)."""
    patient_fraction: float = Field(1.0, gt=0, le=1)
    """Use a random share of the patients (all their images), drawn once by ``seed`` over the whole
    dataset, so every split keeps its proportion (e.g. 0.5: the fusion project's "50% of patients")."""
    workers: int = Field(0, ge=0)
    """Processes for decoding images (0 = all cores)."""
    cache_dir: str = Field(default_factory=lambda: os.environ.get("CXRLAB_CACHE_DIR", "~/.cache/cxrlab"))
    """Where ``cxrlab prepare`` keeps decoded, resized images (default ``$CXRLAB_CACHE_DIR`` or ~/.cache/cxrlab)."""
    resize: Literal["squash", "letterbox"] = "squash"
    """Square squash, or pad to square first (keeps the aspect ratio)."""
    clahe: bool = False
    """Contrast Limited Adaptive Histogram Equalisation at cache time (Witon, Friedrich & Lobmayr)."""
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1)
    normalize: str | tuple[float | list[float], float | list[float]] = "default"
    """The network input ``(x / 255 - mean) / std``: ``default`` (grey ImageNet 0.449/0.226 on every
    channel), ``imagenet`` (the same for 1 channel, ImageNet's RGB triple for 3-channel models), or
    ``[mean, std]`` (each one number, or one per input channel).  Stored in model.json's preprocessing
    record; training, predict, ONNX and the server all normalise with it."""

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_spelling(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("default", "imagenet"):
            raise ValueError(f"must be default, imagenet or [mean, std], got {v!r}")
        if isinstance(v, list | tuple):
            flat = [x for e in v for x in (e if isinstance(e, list | tuple) else [e])]
            if len(v) != 2 or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
                raise ValueError(f"expected [mean, std] (numbers, or a list per channel), got {list(v)}")
        return v
    max_pixels: int = Field(100_000_000, ge=1024)
    """Refuse images whose header claims more pixels (corrupt files, decompression bombs)."""
    bad_images: Literal["error", "skip"] = "error"
    """Unreadable images: stop with the list (error), or train without them (skip; they are listed in
    RUN/skipped_images.csv and counted in the report)."""
    verify_cache: bool = False
    """On every use of the cache, also hash each image file and check each cached row's checksum
    (reads every file: O(data size)); without it files are checked by size + mtime only."""

    @model_validator(mode="after")
    def _one_way_to_name_data(self) -> DataConfig:
        if self.sources is not None:
            if not self.sources:
                raise ValueError("sources: empty list; give at least one {source, root}")
            both = sorted({"root", "options"} & self.model_fields_set)
            if both and (self.root or self.options):
                raise ValueError(f"sources and {both[0]} are both set; list every dataset under "
                                 "data.sources")
        return self


class ModelConfig(_Strict):
    name: str = "densenet121"
    """``simple_cnn``, ``fusion`` or any timm model name."""
    pretrained: str = "none"
    """``none``, ``hub`` (network or the local cache), a local weights file, or a run folder (its best weights)."""
    pretrained_strict: bool = True
    """Refuse a weights file that supplies under half of the model's tensors outside the classifier head
    (the wrong architecture or options); ``false`` loads whatever matches, with a warning."""
    in_chans: int = Field(1, ge=1, le=3)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout before the classifier; unset keeps the model's default (0.5 for fusion, else 0)."""
    options: dict[str, Any] = {}
    """Passed to the model's factory unchanged: ``width``/``convs`` (simple_cnn), ``backbones``
    (fusion), or timm keywords (e.g. ``drop_path_rate``)."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_options(cls, v: Any) -> Any:
        """Early configs (before the 0.1.0 release) spelled model options as ``model.width`` etc.; they move
        into options."""
        if isinstance(v, dict) and any(k in v for k in _LEGACY_MODEL_KEYS):
            v = dict(v)
            opts = dict(v.get("options") or {})
            for k in _LEGACY_MODEL_KEYS:
                if k in v:
                    value = v.pop(k)
                    if _applies(k, v.get("name", "densenet121")):
                        opts.setdefault(k, list(value) if k == "backbones" else value)
            v["options"] = opts
        return v


_LEGACY_MODEL_KEYS = ("width", "convs", "backbones")


def _applies(key: str, name: str) -> bool:
    return (name == "simple_cnn" and key in ("width", "convs")) or (name == "fusion" and key == "backbones")


class AugmentConfig(_Strict):
    """Batched augmentation on the training device; ``train.augment=false`` turns it all off."""

    enabled: bool = True
    hflip: bool = False
    """Horizontal flips (off by default: the heart is on one side)."""
    rotate_deg: float = Field(10.0, ge=0, le=45)
    zoom: float = Field(0.1, ge=0, lt=0.5)
    shift: float = Field(0.05, ge=0, lt=0.5)
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    crop_scale: float = Field(1.0, gt=0.2, le=1.0)
    """Random resized crop: minimum kept area (1 = off)."""

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["bce", "weighted_bce", "focal", "ce"] = "bce"
    """bce (multi-label/binary; read as ce for multi-class), weighted_bce, focal, ce."""
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    freeze_epochs: int = Field(0, ge=0)
    """Two-phase fine-tuning (as in the project report "Chest X-Ray Image Classification using Deep
    Learning approach"): epochs with the backbone frozen, head at ``head_lr``."""
    head_lr: float = Field(1e-3, gt=0)
    finetune_lr: float = Field(1e-5, gt=0)
    """Learning rate of all layers after the frozen phase."""
    accumulate: int = Field(1, ge=1)
    """Gradient accumulation steps (effective batch = batch_size x accumulate)."""
    amp: Literal["auto", "bf16", "off"] = "auto"
    """bf16 autocast: auto = on CUDA only."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    """torch.compile the model (CUDA recommended)."""
    tensorboard: bool = False
    """Also log the epoch metrics to RUN/tensorboard (needs the tensorboard package)."""
    scheduler: Literal["none", "plateau", "cosine"] = "plateau"
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    early_stop: int = Field(10, ge=1)
    """Stop after this many epochs without improvement of ``early_stop_on``."""
    early_stop_on: Literal["loss", "score"] = "loss"
    """Validation loss (Wollek et al. 2023) or the selection score (macro AUC / accuracy)."""
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """auto (CUDA when available), cpu, cuda, cuda:N or mps."""
    threads: int = Field(0, ge=0)
    """CPU threads for torch (0 = torch's default)."""
    augment: AugmentConfig = AugmentConfig()


#: ``evaluate.threshold_rule``: the grammar of :func:`cxrlab.evaluate.operating.parse_rule` (checked
#: here too, so a typo fails when the config is read, not after training).
THRESHOLD_RULE = r"^(youden|max_f1|(sensitivity|specificity|ppv):(0?\.\d+|1(\.0*)?))$"


class EvaluateConfig(_Strict):
    n_boot: int = Field(1000, ge=10)
    """Bootstrap resamples for the 95% CIs (patients resampled where known)."""
    tta: bool = False
    """Average the predictions of each image and its horizontal mirror."""
    calibration: Literal["none", "temperature", "platt", "isotonic"] = "temperature"
    """Calibration fitted on validation and applied to every probability the run gives (model.json)."""
    threshold_rule: str | dict[str, str] = "youden"
    """youden | max_f1 | sensitivity:T | specificity:T | ppv:T, for every label or as {label: rule}."""
    prevalence: dict[str, float] = Field(default_factory=dict)
    """{label: p}: also report PPV and NPV at this deployment prevalence."""

    @field_validator("threshold_rule")
    @classmethod
    def _rule(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        for rule in ([v] if isinstance(v, str) else v.values()):
            if not re.match(THRESHOLD_RULE, str(rule).strip()):
                raise ValueError(f"unknown threshold rule {rule!r}; use youden, max_f1, sensitivity:T, "
                                 "specificity:T or ppv:T (T in (0, 1])")
        return v

    @field_validator("prevalence")
    @classmethod
    def _prevalence(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in v.items() if not 0 < p < 1}
        if bad:
            raise ValueError(f"a deployment prevalence must lie in (0, 1), got {bad}")
        return v


class ExplainConfig(_Strict):
    enabled: bool = True
    method: Literal["gradcam", "layergradcam", "gradcam++", "saliency"] = "gradcam"
    threshold: float = Field(0.5, gt=0, lt=1)
    iou: float = Field(0.1, gt=0, le=1)
    max_images: int = Field(400, ge=1)
    """Test images with true boxes to score (all classes of an image are scored)."""
    random_draws: int = Field(20, ge=1)
    figures: int = Field(12, ge=0)
    """CAM overlays to draw in the report."""


class ExperimentConfig(_Strict):
    name: str = "run"
    seed: int = 0
    task: Literal["multilabel", "binary", "multiclass"] = "multilabel"
    runs_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()

    @model_validator(mode="after")
    def _normalize_fits_channels(self) -> ExperimentConfig:
        """Per-channel ``data.normalize`` values must match ``model.in_chans`` (checked here: both are known)."""
        norm = self.data.normalize
        for what, v in zip(("mean", "std"), norm if not isinstance(norm, str) else (), strict=False):
            values = v if isinstance(v, list) else [v]
            if len(values) not in (1, self.model.in_chans):
                raise ValueError(f"data.normalize: {len(values)} {what} values for model.in_chans="
                                 f"{self.model.in_chans}; give one number, or one per channel")
            if what == "std" and min(values) <= 0:
                raise ValueError(f"data.normalize: std must be > 0, got {v}")
        return self


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        near = _closest_key(first["loc"])
        msg = "unknown key" + (f"; did you mean {near}?" if near else "")
    if first["type"] == "value_error":  # our own validators' text, without pydantic's "Value error, "
        msg = str(first.get("ctx", {}).get("error", msg))
        if key == "<root>":  # a check across sections names its keys itself
            return f"{origin}: {msg}"
    got = first.get("input")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    shown = "" if first["type"] in ("extra_forbidden", "value_error") or isinstance(got, dict) else f" (got {got!r})"
    return f"{origin}: {key}: {msg}{shown}{more}"


def _closest_key(loc: tuple[Any, ...]) -> str | None:
    """The known key nearest an unknown one (``train.epoch`` -> ``train.epochs``), by spelling; None if none is near.

    Walks ``loc`` down the config's sections (list items keep their section), so the suggestion is a key
    of the same section, spelled out whole.
    """
    import difflib
    import typing

    def section(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return next((m for a in typing.get_args(annotation) if (m := section(a)) is not None), None)

    model: type[BaseModel] | None = ExperimentConfig
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections (data.sources.0)
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = section(field.annotation) if field is not None else None
        if model is None:
            return None
    near = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if near:
        return ".".join([*(str(p) for p in loc[:-1]), near[0]])
    if len(loc) == 1:  # a section's key at the top (epochs=3): the section's key it names
        inner = {f"{name}.{k}": k for name, f in ExperimentConfig.model_fields.items()
                 if (sub := section(f.annotation)) is not None for k in sub.model_fields}
        near = difflib.get_close_matches(str(loc[0]), list(inner.values()), n=1, cutoff=0.8)
        return next((dotted for dotted, k in inner.items() if near and k == near[0]), None)
    return None


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=1e-3", ...]`` into a nested dict."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def merge_trees(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested mappings merged key by key (neither is modified)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_trees(out[k], v)
        else:
            out[k] = v
    return out


def replace_keys(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with each dotted key set to its value whole (a mapping replaces, not merges)."""
    out = copy.deepcopy(tree)
    for key, value in values.items():
        _set_dotted(out, key, copy.deepcopy(value))
    return out


def build_config(tree: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load a YAML recipe, apply ``key=value`` overrides and validate.

    Args:
        path: YAML file; ``None`` starts from ``base`` (or the defaults).
        overrides: dotted ``key=value`` strings, applied last.
        base: a dict of settings under the file (e.g. a built-in recipe).
    """
    tree: dict[str, Any] = dict(base or {})
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        tree = merge_trees(tree, loaded)
    if overrides:
        tree = merge_trees(tree, parse_overrides(overrides))
        origin = f"{origin} + overrides"
    return build_config(tree, origin)


def to_yaml(cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> str:
    tree = cfg.model_dump(mode="json")
    if extra:
        tree = {**tree, **extra}
    return yaml.safe_dump(tree, sort_keys=False)
