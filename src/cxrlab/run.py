"""The run folder: everything one experiment writes, written atomically.

::

    runs/<name>/
      config.yaml            fully resolved config + seed, versions, git commit
      split.json             image ids per split and a content hash
      metrics.jsonl          one line per epoch
      checkpoints/best.safetensors, last.safetensors   model weights
      checkpoints/last_state.pt                         optimiser/scheduler/RNG (resume)
      model.json             the model record: architecture and options, labels, task, the
                             preprocessing contract, thresholds and their rule, the fitted
                             calibration (:class:`ModelRecord`)
      predictions.csv        test-set probabilities (calibrated prob_, the model's own raw_) next to
                             the true labels (and _val)
      evaluation.json  summary.json  skipped_images.csv
      localization_<method>.json  uncertainty.json  explain/  model.onnx   derived by later commands
      audit_<method>.json, .csv  where the model looks (cxrlab audit)
      subgroups.json         per patient group at the run's thresholds (cxrlab subgroups; figures/subgroups_<label>.png)
      ood.json               out-of-distribution summary of the training features (train, card)
      card.md  metadata.json the model card and its bundle metadata (card)
      figures/*.png          plots;  report.html  the report (figures embedded)
      compare.html           the page of ``cxrlab compare RUN OTHER...`` (by default)
      external/<name>/       ``cxrlab evaluate RUN --on SOURCE``: predictions.csv, external.json, report.html

:class:`RunFolder` is the only code that spells these names.  Files derived
from the best weights are listed in :attr:`RunFolder.DERIVED`; training
invalidates them together, so no file can disagree with ``best``.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from cxrlab import __version__
from cxrlab.config import ExperimentConfig, to_yaml
from cxrlab.data.preprocess import Preprocess, preprocess_of_model_record
from cxrlab.data.splits import lists_hash
from cxrlab.data.vocabulary import Vocabulary
from cxrlab.errors import CxrlabError
from cxrlab.runio import (
    append_jsonl,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from cxrlab.tables import (  # noqa: F401  (the predictions schema, re-exported)
    PROB_PREFIX,
    RAW_PREFIX,
    prediction_table,
    prob_column,
    prob_columns,
    raw_columns,
)


def git_commit() -> str:
    """Commit of the cxrlab source tree, or ``unknown`` (e.g. installed from a wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, str]:
    import numpy
    import timm

    return {"cxrlab": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": str(numpy.__version__), "python": platform.python_version(),
            "git_commit": git_commit()}


#: Format of ``model.json`` written now (see :class:`ModelRecord`; not the package version).
MODEL_FORMAT_VERSION = 3


def model_format_version(info: dict[str, Any], origin: str = "model.json") -> int:
    """The format of a raw ``model.json``: its ``format_version``; without one, 1 (cxrlab 0.1.0) when it has
    an ``options`` block, else 0 (early development records)."""
    if "format_version" in info:
        try:
            return int(info["format_version"])
        except (TypeError, ValueError):
            raise CxrlabError(f"{origin}: format_version must be a number, got {info['format_version']!r}") from None
    return 1 if "options" in info else 0


#: ``threshold_rule`` of a model record until training has chosen the thresholds on validation.
UNFINISHED_RULE = "fixed 0.5 (training has not finished)"


@dataclass(frozen=True)
class ModelRecord:
    """``model.json``: all that is needed to rebuild and run a trained model, without its config.

    The file carries its own ``format_version`` (:data:`MODEL_FORMAT_VERSION`), independent of the
    package version; :meth:`from_dict` is the one place that reads older formats:

    - 0: early development records: model options at the top level (``width``...), no ``options``
      block, a fusion ``dropout`` of 0.0 meaning "the default", sometimes no preprocessing record;
    - 1: cxrlab 0.1.0 (no ``format_version`` key): ``options`` and the preprocessing record with
      one ``mean``/``std`` number each;
    - 2: ``format_version`` written; ``mean``/``std`` may be one value per channel (``data.normalize``);
    - 3: ``calibration`` (the fitted calibration, :class:`cxrlab.evaluate.calibration.Calibration`'s
      dict, or null) and ``operating`` (per label: the threshold rule and the value it reached on
      validation); an older cxrlab would ignore the calibration and return other probabilities, so
      it refuses the file.  Older formats read as "no calibration".
    """

    name: str
    labels: list[str]
    task: str
    in_chans: int
    preprocess: Preprocess
    dropout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_rule: str = "fixed 0.5"
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the file (ensembles: members, combine), kept when rewritten."""
    calibration: dict[str, Any] | None = None
    """The fitted calibration (method, parameters; chosen on validation), None for none."""
    operating: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per label: ``{"rule", "validation_value"}`` of the threshold rule that chose its threshold."""
    format_version: int = field(default=MODEL_FORMAT_VERSION, compare=False)
    """The format of the file this record was read from (the current one for a new record);
    :meth:`to_dict` always writes the current format."""

    @classmethod
    def new(cls, cfg: ExperimentConfig, labels: list[str], pre: Preprocess) -> ModelRecord:
        m = cfg.model
        vocab = Vocabulary.load(cfg.data.vocabulary)
        # whose names the labels are (several sources: canonical names), and the vocabulary that says so
        extra = {"label_source": "canonical" if cfg.data.sources else cfg.data.source, "vocabulary": vocab.record()}
        return cls(name=m.name, labels=list(labels), task=cfg.task, in_chans=m.in_chans, preprocess=pre,
                   dropout=m.dropout, options=dict(m.options), thresholds=dict.fromkeys(labels, 0.5),
                   threshold_rule=UNFINISHED_RULE, extra=extra)

    @property
    def label_source(self) -> str | None:
        """The source whose column names the labels are (``canonical``: the vocabulary's; None: older runs)."""
        return self.extra.get("label_source")

    @property
    def vocabulary_version(self) -> str | None:
        """The label vocabulary version the run used (None: a run from before the vocabulary)."""
        return (self.extra.get("vocabulary") or {}).get("version")

    def to_dict(self) -> dict[str, Any]:
        p = self.preprocess
        return {
            **self.extra, "format_version": MODEL_FORMAT_VERSION,
            "architecture": self.name, "num_classes": len(self.labels), "labels": self.labels,
            "task": self.task, "in_chans": self.in_chans, "dropout": self.dropout, "options": self.options,
            "input_size": p.size, "preprocess": p.to_record(),
            "normalization": {"mean": p.mean, "std": p.std, "scale": 1 / 255},
            "thresholds": self.thresholds, "threshold_rule": self.threshold_rule, "operating": self.operating,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, info: dict[str, Any], origin: str = "model.json") -> ModelRecord:
        known = {"format_version", "architecture", "num_classes", "labels", "task", "in_chans", "dropout",
                 "options", "input_size", "preprocess", "normalization", "thresholds", "threshold_rule", "width",
                 "convs", "backbones", "calibration", "operating"}
        fmt = model_format_version(info, origin)
        if fmt > MODEL_FORMAT_VERSION:
            raise CxrlabError(f"{origin}: model record format {fmt} is newer than this cxrlab reads "
                              f"(up to {MODEL_FORMAT_VERSION}); upgrade cxrlab")
        try:
            name = info["architecture"]
            options = dict(info.get("options") or {})
            dropout = info.get("dropout")
            if fmt == 0:  # options listed at the top level; a fusion dropout of 0.0 meant "the default" (0.5)
                legacy = {"simple_cnn": ("width", "convs"), "fusion": ("backbones",)}.get(name, ())
                options = {k: info[k] for k in legacy if k in info}
                dropout = None if name == "fusion" and not dropout else dropout
            return cls(name=name, labels=list(info["labels"]), task=info["task"], in_chans=int(info["in_chans"]),
                       preprocess=preprocess_of_model_record(info, origin), dropout=dropout, options=options,
                       thresholds=dict(info.get("thresholds") or {}),
                       threshold_rule=info.get("threshold_rule", "fixed 0.5"),
                       extra={k: v for k, v in info.items() if k not in known},
                       calibration=info.get("calibration") or None, operating=dict(info.get("operating") or {}),
                       format_version=fmt)
        except (KeyError, TypeError, ValueError) as e:
            raise CxrlabError(f"{origin}: broken model record ({type(e).__name__}: {e}); "
                              "re-create it by training again") from None

    def with_thresholds(self, thresholds: dict[str, float], rule: str,
                        operating: dict[str, dict[str, Any]] | None = None) -> ModelRecord:
        from dataclasses import replace

        return replace(self, thresholds=dict(thresholds), threshold_rule=rule, operating=dict(operating or {}))

    def with_calibration(self, calibration: dict[str, Any] | None) -> ModelRecord:
        """The record with a fitted calibration (a dict of :class:`cxrlab.evaluate.calibration.Calibration`)."""
        from dataclasses import replace

        return replace(self, calibration=calibration)


class RunFolder:
    """A run folder on disk; the only code that knows its file names."""

    #: Files computed from the best weights: removed together whenever the weights may change.
    DERIVED = ("predictions.csv", "predictions_val.csv", "evaluation.json", "summary.json", "report.html",
               "skipped_images.csv", "model.onnx", "uncertainty.json", "card.md", "metadata.json", "ood.json", "localization_*.json",
               "audit_*.json", "audit_*.csv", "subgroups.json", "compare.html", "figures", "explain", "external")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.figures = self.path / "figures"
        self.checkpoints = self.path / "checkpoints"
        self.config_file = self.path / "config.yaml"
        self.split_file = self.path / "split.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.model_json = self.path / "model.json"
        self.evaluation_file = self.path / "evaluation.json"
        self.summary_file = self.path / "summary.json"
        self.report_file = self.path / "report.html"
        self.onnx_file = self.path / "model.onnx"
        self.uncertainty_file = self.path / "uncertainty.json"
        self.skipped_file = self.path / "skipped_images.csv"
        self.explain_dir = self.path / "explain"
        self.compare_file = self.path / "compare.html"
        self.ood_file = self.path / "ood.json"
        self.card_file = self.path / "card.md"
        self.metadata_file = self.path / "metadata.json"
        self.subgroups_file = self.path / "subgroups.json"

    def create(self) -> RunFolder:
        self.figures.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        """Something was trained here before (a config or a checkpoint)."""
        return self.config_file.is_file() or any(self.checkpoints.glob("*"))

    def clear(self) -> None:
        """Remove everything (``--overwrite``)."""
        if self.path.is_dir():
            shutil.rmtree(self.path)

    def invalidate_derived(self) -> list[str]:
        """Delete every file derived from the best weights; return what was removed."""
        removed = []
        for pattern in self.DERIVED:
            for p in sorted(self.path.glob(pattern)):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p.name)
        return removed

    def unfinished_reason(self) -> str | None:
        """Why this run is not finished (None when it is): what a finished training leaves is missing.

        ``train`` writes ``summary.json`` after the best weights, the predictions and the
        validation-chosen thresholds in ``model.json``, and removes it (with everything derived
        from the weights) before it trains again; so a run killed mid-epoch, or stopped by a full
        disk, lacks it.  The thresholds are checked too, for a summary copied in from elsewhere.
        """
        if not self.model_json.is_file():
            return "model.json missing"
        if not self.weights_file("best").is_file():
            return "no best weights (training did not finish an epoch)"
        if not self.summary_file.is_file():
            return "no summary.json (training was stopped before the end)"
        try:
            summary = json.loads(self.summary_file.read_text())
            info = json.loads(self.model_json.read_text())
        except (OSError, ValueError):
            return "summary.json or model.json is not valid JSON"
        if not isinstance(summary, dict) or not isinstance(info, dict):
            return "summary.json or model.json is not a JSON object"
        if info.get("task") != "multiclass" and "not finished" in str(info.get("threshold_rule", "")):
            return "thresholds not chosen on validation yet (placeholder 0.5)"
        return None

    def finished(self) -> bool:
        """Training ran to its end: best weights, test predictions' summary and final thresholds."""
        return self.unfinished_reason() is None

    def predictions_file(self, split: str = "test") -> Path:
        if split not in ("test", "val"):
            raise ValueError(f"split must be test or val, got {split!r}")
        return self.path / ("predictions.csv" if split == "test" else "predictions_val.csv")

    def localization_file(self, key: str) -> Path:
        """``localization_<key>.json``: one ``cxrlab localize`` result (key: the method, and the box file)."""
        return self.path / f"localization_{key}.json"

    def localization_files(self) -> list[Path]:
        return sorted(self.path.glob("localization_*.json"))

    def localization_results(self) -> dict[str, Path]:
        """``{key: file}`` of every ``cxrlab localize`` result (the key as :meth:`localization_file` spelt it)."""
        return {p.stem.removeprefix("localization_"): p for p in self.localization_files()}

    def audit_file(self, method: str) -> Path:
        """``audit_<method>.json``: one ``cxrlab audit`` result (:class:`~cxrlab.evaluate.records.AuditResult`)."""
        return self.path / f"audit_{method}.json"

    def audit_images_file(self, method: str) -> Path:
        """``audit_<method>.csv``: the audit's values per (test image, label), for paired comparisons."""
        return self.path / f"audit_{method}.csv"

    def audit_results(self) -> dict[str, Path]:
        """``{method: file}`` of every ``cxrlab audit`` result."""
        return {p.stem.removeprefix("audit_"): p for p in sorted(self.path.glob("audit_*.json"))}

    def external_dir(self, name: str) -> Path:
        """``external/<name>/``: one external evaluation (``cxrlab evaluate RUN --on SOURCE --name NAME``)."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise CxrlabError(f"--name {name!r}: an external evaluation's name is one folder name (no slashes)")
        return self.path / "external" / name

    def external_files(self, name: str) -> dict[str, Path]:
        """The files of one external evaluation: ``predictions`` (csv), ``result`` (json), ``report`` (html),
        ``duplicates`` (json: the target images that copy training images), ``subgroups`` (json: a
        :class:`~cxrlab.evaluate.records.SubgroupResult` of the scored images) and ``figures`` (its folder of
        figures, each named as :meth:`figure` names it: ``subgroups_<label>.png``)."""
        d = self.external_dir(name)
        return {"predictions": d / "predictions.csv", "result": d / "external.json", "report": d / "report.html",
                "duplicates": d / "duplicates.json", "subgroups": d / "subgroups.json", "figures": d / "figures"}

    def external_results(self) -> dict[str, Path]:
        """``{name: external.json}`` of every external evaluation of this run."""
        return {p.parent.name: p for p in sorted((self.path / "external").glob("*/external.json"))}

    #: Every figure a run draws, by what it shows (:meth:`figure` gives its file).
    FIGURES = ("training_curves", "roc", "pr", "reliability", "confusion", "localization", "cam_overlays",
               "mc_dropout_std", "audit_suspects", "subgroups")

    def figure(self, name: str, key: str | None = None) -> Path:
        """The file of figure ``name`` (one of :attr:`FIGURES`); ``key``: one localisation result's own."""
        if name not in self.FIGURES:
            raise ValueError(f"unknown figure {name!r}; one of {', '.join(self.FIGURES)}")
        return self.figures / (f"{name}_{key}.png" if key else f"{name}.png")

    def weights_file(self, which: str = "best") -> Path:
        return self.checkpoints / f"{which}.safetensors"

    # ---- config, split, metrics ---------------------------------------------------
    def write_config(self, cfg: ExperimentConfig) -> None:
        atomic_write_text(self.config_file, to_yaml(cfg, {"environment": environment()}))

    def read_config(self) -> ExperimentConfig:
        """The resolved config the run was trained with (its ``environment`` record left out)."""
        import yaml

        from cxrlab.config import build_config

        path = self.config_file
        if not path.is_file():
            raise CxrlabError(f"{self.path}: not a cxrlab run folder (config.yaml missing)")
        tree = yaml.safe_load(path.read_text()) or {}
        tree.pop("environment", None)
        return build_config(tree, str(path))

    def read_environment(self) -> dict[str, Any]:
        """The ``environment`` block of ``config.yaml`` (versions, git commit); empty when absent."""
        import yaml

        if not self.config_file.is_file():
            return {}
        tree = yaml.safe_load(self.config_file.read_text()) or {}
        env = tree.get("environment")
        return dict(env) if isinstance(env, dict) else {}

    def write_split(self, splits: dict[str, list[str]]) -> str:
        digest = lists_hash(splits)
        atomic_write_json(self.split_file, {"hash": digest, **splits})
        return digest

    def read_split(self) -> dict[str, list[str]]:
        """Image ids per split as trained (``split.json``)."""
        if not self.split_file.is_file():
            raise CxrlabError(f"{self.path}: not a cxrlab run folder (split.json missing)")
        tree = json.loads(self.split_file.read_text())
        return {s: tree.get(s, []) for s in ("train", "val", "test")}

    def log_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.metrics_file, row)

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.metrics_file
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` lines (resume after a crash mid-epoch)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in rows))

    # ---- model --------------------------------------------------------------------
    def write_model_record(self, record: ModelRecord) -> None:
        atomic_write_json(self.model_json, record.to_dict())

    def read_model_json(self) -> dict[str, Any]:
        """The raw ``model.json`` (one error message for a missing or broken file)."""
        p = self.model_json
        if not p.is_file():
            raise CxrlabError(f"{self.path}: not a cxrlab run folder (model.json missing)")
        try:
            info = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CxrlabError(f"{p}: broken model record (not valid JSON: {e})") from None
        if not isinstance(info, dict):
            raise CxrlabError(f"{p}: broken model record (expected a JSON object)")
        return info

    def read_model_record(self) -> ModelRecord:
        return ModelRecord.from_dict(self.read_model_json(), str(self.model_json))

    # ---- predictions, evaluation, summary --------------------------------------------
    def write_predictions(self, table: pd.DataFrame, split: str = "test") -> Path:
        return atomic_write(self.predictions_file(split), lambda tmp: table.to_csv(tmp, index=False))

    def read_predictions(self, split: str = "test") -> pd.DataFrame:
        """A prediction table, checked against the labels of ``model.json``."""
        path = self.predictions_file(split)
        if not path.is_file():
            reason = self.unfinished_reason() if self.config_file.is_file() else None
            hint = f"training did not finish: {reason}; `cxrlab train --resume` completes it" if reason else ""
            raise CxrlabError(f"{self.path}: not a finished cxrlab run ({path.name} missing{'; ' if hint else ''}"
                              f"{hint})")
        table = pd.read_csv(path)
        labels = self.read_model_json().get("labels", [])
        missing = [c for c in ["image", *labels, *prob_columns(labels)] if c not in table.columns]
        if missing:
            raise CxrlabError(f"{path}: columns {missing[:4]} missing; the file does not match model.json")
        return table

    def has_predictions(self, split: str = "test") -> bool:
        return self.predictions_file(split).is_file()

    def write_skipped(self, table: pd.DataFrame) -> Path:
        """``skipped_images.csv``: image, split, reason (``data.bad_images: skip``)."""
        return atomic_write(self.skipped_file, lambda tmp: table.to_csv(tmp, index=False))

    def read_skipped(self) -> pd.DataFrame:
        return pd.read_csv(self.skipped_file) if self.skipped_file.is_file() else pd.DataFrame()

    def write_json(self, path: Path, obj: Any) -> Path:
        """Write a JSON file of this run (NaN written as null)."""
        return atomic_write_json(path, obj)

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text()) if path.is_file() else None

    def save_weights(self, model: torch.nn.Module, which: str) -> Path:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # serialised in memory, then written: a full disk is one line naming the file, not a safetensors error
        return atomic_write_bytes(self.weights_file(which), safetensors_bytes(state))

    def load_weights(self, model: torch.nn.Module, which: str = "best") -> None:
        path = self.weights_file(which)
        if not path.is_file():
            raise CxrlabError(f"{path}: checkpoint not found (training did not finish an epoch?)")
        state = load_file(str(path))
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
        if missing or extra or shapes:
            what = (f"{len(missing)} missing, {len(extra)} unexpected, {len(shapes)} wrong-shape tensors"
                    f" (e.g. {(missing + extra + shapes)[0]})")
            raise CxrlabError(f"{path}: checkpoint does not match the model: {what}")
        model.load_state_dict(state)

    def save_state(self, state: dict[str, Any]) -> None:
        import io

        buf = io.BytesIO()  # torch.save on a full disk says "unexpected pos ..."; a plain write says ENOSPC
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoints / "last_state.pt", buf.getbuffer())

    def load_state(self) -> dict[str, Any] | None:
        p = self.checkpoints / "last_state.pt"
        return torch.load(str(p), map_location="cpu", weights_only=False) if p.is_file() else None
