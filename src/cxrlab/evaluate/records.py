"""Typed, versioned result records: what ``evaluation.json``, ``summary.json``,
``localization_<key>.json`` and ``uncertainty.json`` hold, and what a comparison returns.

Why: results used to be dicts read by key in a dozen files, the point estimate was ``"auc"``
in some and ``"value"`` in others, and each reader reconciled them (and guessed a file's age
from missing keys).  Now a writer builds a record and writes :meth:`to_dict`; a reader calls
``from_dict`` and uses attributes.  ``from_dict`` is the one place that reads older files:
no ``format_version`` means format 1 (cxrlab 0.1), missing AP, PPV or operating point become
NaN / None, ``"auc"`` and ``"value"`` are both read as :attr:`Estimate.value`.

The files keep their keys (older readers and the study code read them as dicts) plus a
``format_version``; :attr:`Evaluation.outdated` says a file was written by an older format.
Records are arrays-free and import nothing of cxrlab (``evaluate/`` is a leaf).

To add a metric: a field on the record, its key in ``to_dict`` and a default in ``from_dict``
(so older files still read), then bump ``FORMAT_VERSION`` if readers must know it is there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

NAN = float("nan")

#: A file without ``format_version`` was written by cxrlab 0.1 (format 1).
UNVERSIONED = 1


def _num(v: Any) -> float:
    """A number of a JSON file (NaN is stored as null)."""
    return NAN if v is None else float(v)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def finite(v: Any) -> bool:
    """``v`` is a finite number (not None, not NaN)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _version(d: dict[str, Any]) -> int:
    return int(d.get("format_version", UNVERSIONED))


def coerce(cls: type, x: Any, *args: Any) -> Any:
    """``x`` as a ``cls`` record: itself, or read by ``cls.from_dict`` (a dict from a file or a caller)."""
    return x if isinstance(x, cls) or x is None else cls.from_dict(x, *args)


def fresh(cls: type, d: dict[str, Any], **changes: Any) -> Any:
    """A record of what this cxrlab just computed (``d`` from a leaf function): this format's version.

    ``from_dict`` alone reads a dict without ``format_version`` as format 1 (an old file).
    """
    return replace(cls.from_dict(d), format_version=cls.FORMAT_VERSION, **changes)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A result file's dict (None when the file is absent or empty)."""
    path = Path(path)
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return d or None


@dataclass(frozen=True)
class Estimate:
    """One point estimate with its 95% CI: the one name for "the estimate and its CI".

    Attributes:
        value: the estimate on the test set itself (NaN when undefined, e.g. one class only).
        low, high: the 95% interval (bootstrap percentile, or DeLong's normal interval); NaN if none.
        n_boot: resamples behind the interval, where the estimate carries its own.
    """

    value: float
    low: float = NAN
    high: float = NAN
    n_boot: int | None = None

    @property
    def defined(self) -> bool:
        return finite(self.value)

    @property
    def has_ci(self) -> bool:
        return finite(self.low) and finite(self.high)

    def to_dict(self, key: str = "value") -> dict[str, Any]:
        """``{key: value, "ci_low", "ci_high"}`` (and ``n_boot`` when the estimate has its own)."""
        out: dict[str, Any] = {key: self.value, "ci_low": self.low, "ci_high": self.high}
        if self.n_boot is not None:
            out["n_boot"] = self.n_boot
        return out

    def interval(self) -> list[float]:
        """``[low, high]``: the per-class ``*_ci`` lists of ``evaluation.json``."""
        return [self.low, self.high]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | float | None, key: str | None = None) -> Estimate:
        """Read ``{"auc"|"value", "ci_low", "ci_high"[, "n_boot"]}``; a bare number or None reads too."""
        if d is None or isinstance(d, int | float):
            return cls(_num(d))
        v = d.get(key) if key else None
        if v is None:
            v = d.get("value", d.get("auc"))
        return cls(_num(v), _num(d.get("ci_low")), _num(d.get("ci_high")), _int(d.get("n_boot")))

    @classmethod
    def of(cls, value: Any, interval: list[Any] | None) -> Estimate:
        """From a value and a ``[low, high]`` list (missing: no CI)."""
        lo, hi = (interval or [None, None])[:2]
        return cls(_num(value), _num(lo), _num(hi))


# ---- evaluation.json ----------------------------------------------------------------------

#: The rates at a threshold, in the order shown.
RATES = ("accuracy", "sensitivity", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class OperatingPoint:
    """A binary label's decisions at its validation-chosen threshold: rates with CIs, confusion counts."""

    threshold: float
    confusion: dict[str, int]
    normalised: list[list[float]]
    rates: dict[str, Estimate]
    n_boot: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "confusion": dict(self.confusion), "n_boot": self.n_boot,
                "normalised": self.normalised, **{k: e.to_dict("value") for k, e in self.rates.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> OperatingPoint | None:
        if not d:
            return None
        return cls(_num(d.get("threshold")), {k: int(v) for k, v in (d.get("confusion") or {}).items()},
                   d.get("normalised") or [[NAN, NAN], [NAN, NAN]],
                   {k: Estimate.from_dict(d.get(k), "value") for k in RATES if k in d}, _int(d.get("n_boot")))


@dataclass(frozen=True)
class LabelResult:
    """One label of a multi-label or binary evaluation (``evaluation.json["per_label"][label]``)."""

    auc: Estimate
    positives: int | None = None
    average_precision: float = NAN
    threshold: float = NAN
    threshold_rule: str = "rule not recorded"
    sensitivity: float = NAN
    specificity: float = NAN
    ppv: float = NAN
    ece: float = NAN
    operating_point: OperatingPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"auc": self.auc.value, "ci_low": self.auc.low, "ci_high": self.auc.high, "positives": self.positives,
               "average_precision": self.average_precision, "threshold": self.threshold,
               "threshold_rule": self.threshold_rule, "sensitivity": self.sensitivity,
               "specificity": self.specificity, "ppv": self.ppv, "ece": self.ece}
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelResult:
        return cls(Estimate.from_dict(d, "auc"), _int(d.get("positives")), _num(d.get("average_precision")),
                   _num(d.get("threshold")), d.get("threshold_rule") or "rule not recorded",
                   _num(d.get("sensitivity")), _num(d.get("specificity")), _num(d.get("ppv")), _num(d.get("ece")),
                   OperatingPoint.from_dict(d.get("operating_point")))


@dataclass(frozen=True)
class ClassResult:
    """One class of a multi-class evaluation: arg-max decisions' precision/recall with CIs, one-vs-rest AUC."""

    precision: Estimate
    recall: Estimate
    auc: Estimate
    f1: float = NAN
    support: int = 0
    fpr: float = NAN
    average_precision: float = NAN

    @property
    def never_predicted(self) -> bool:
        """No image was predicted as this class (no true and no false positive): precision is undefined."""
        return self.recall.value == 0 and self.fpr == 0

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision.value, "precision_ci": self.precision.interval(),
                "recall": self.recall.value, "recall_ci": self.recall.interval(), "fpr": self.fpr, "f1": self.f1,
                "support": self.support, "average_precision": self.average_precision,
                "auc": self.auc.value, "auc_ci": self.auc.interval()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassResult:
        return cls(Estimate.of(d.get("precision"), d.get("precision_ci")),
                   Estimate.of(d.get("recall"), d.get("recall_ci")),
                   Estimate.of(d.get("auc"), d.get("auc_ci") or [d.get("ci_low"), d.get("ci_high")]),
                   _num(d.get("f1")), int(d.get("support") or 0), _num(d.get("fpr")),
                   _num(d.get("average_precision")))


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluation.json`` holds: a run's test-split classification results with 95% CIs.

    Multi-label and binary runs fill :attr:`per_label` (and micro AUC); multi-class runs fill
    :attr:`per_class`, :attr:`accuracy`, the confusion matrix and top-label calibration.
    """

    FORMAT_VERSION: ClassVar[int] = 2

    task: str
    n: int | None
    n_boot: int | None
    resampling: str
    macro_auc: Estimate
    per_label: dict[str, LabelResult] = field(default_factory=dict)
    micro_auc: Estimate | None = None
    per_class: dict[str, ClassResult] = field(default_factory=dict)
    accuracy: Estimate | None = None
    macro_f1: float = NAN
    confusion_matrix: list[list[int]] | None = None
    confusion_normalised: list[list[float]] | None = None
    calibration: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    # ---- what readers ask -------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.per_class or self.per_label)

    @property
    def aucs(self) -> dict[str, float]:
        """AUC per label (one-vs-rest per class for multi-class runs)."""
        per = self.per_class or self.per_label
        return {lab: r.auc.value for lab, r in per.items()}

    @property
    def single(self) -> tuple[str, LabelResult] | None:
        """(label, result) of a one-label binary or multi-label evaluation (macro and micro only repeat it)."""
        return next(iter(self.per_label.items())) if len(self.per_label) == 1 and not self.per_class else None

    @property
    def headline(self) -> tuple[str, Estimate]:
        """The one number of the run: accuracy (multi-class), the AUC (one label), else the macro AUC."""
        if self.task == "multiclass" and self.accuracy is not None:
            return "accuracy", self.accuracy
        one = self.single
        if one is not None:
            return "AUC", one[1].auc
        return "macro AUC", self.macro_auc

    @property
    def operating_point(self) -> OperatingPoint | None:
        """A binary run's decisions at its threshold (None for other tasks or files of an older format)."""
        one = self.single
        return one[1].operating_point if one and self.task == "binary" else None

    @property
    def thresholds(self) -> dict[str, float]:
        return {lab: r.threshold for lab, r in self.per_label.items()}

    @property
    def outdated(self) -> bool:
        """Written by an older cxrlab (a lower format): its figures and report may lack what cxrlab shows now."""
        return self.format_version < self.FORMAT_VERSION

    # ---- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``evaluation.json`` dict: the keys of format 1, plus ``format_version`` and ``task``."""
        head: dict[str, Any] = {"format_version": self.format_version, "task": self.task, "n": self.n,
                                "n_boot": self.n_boot, "resampling": self.resampling}
        if self.task == "multiclass":
            return {**head, "accuracy": (self.accuracy or Estimate(NAN)).to_dict("value"),
                    "confusion_matrix": self.confusion_matrix, "confusion_normalised": self.confusion_normalised,
                    "labels": self.labels, "per_class": {k: r.to_dict() for k, r in self.per_class.items()},
                    "macro_f1": self.macro_f1, "macro_auc": self.macro_auc.to_dict("auc"),
                    "calibration": self.calibration}
        return {**head, "per_label": {k: r.to_dict() for k, r in self.per_label.items()},
                "macro_auc": self.macro_auc.to_dict("auc"),
                "micro_auc": (self.micro_auc or Estimate(NAN)).to_dict("auc")}

    @classmethod
    def from_dict(cls, d: dict[str, Any], task: str | None = None) -> Evaluation:
        """Read an ``evaluation.json`` dict of any format (or the card's subset of it).

        Args:
            task: the run's task (``model.json``); files of format 1 do not store it.
        """
        multiclass = "per_class" in d and "per_label" not in d
        task = d.get("task") or task or ("multiclass" if multiclass else "multilabel")
        acc = d.get("accuracy")
        micro = d.get("micro_auc")
        return cls(task=task, n=_int(d.get("n")), n_boot=_int(d.get("n_boot")),
                   resampling=d.get("resampling") or "images", macro_auc=Estimate.from_dict(d.get("macro_auc"), "auc"),
                   per_label={k: LabelResult.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   micro_auc=Estimate.from_dict(micro, "auc") if micro is not None else None,
                   per_class={k: ClassResult.from_dict(v) for k, v in (d.get("per_class") or {}).items()},
                   accuracy=Estimate.from_dict(acc, "value") if acc is not None else None,
                   macro_f1=_num(d.get("macro_f1")), confusion_matrix=d.get("confusion_matrix"),
                   confusion_normalised=d.get("confusion_normalised"), calibration=d.get("calibration"),
                   format_version=_version(d))

    @classmethod
    def read(cls, path: str | Path, task: str | None = None) -> Evaluation | None:
        """``evaluation.json`` of any format (None before the run was evaluated)."""
        d = read_json(path)
        return None if d is None else cls.from_dict(d, task)

    def card_dict(self) -> dict[str, Any]:
        """The test metrics a model card stores (``metadata.json["metrics"]``): the same keys, fewer of them."""
        d = self.to_dict()
        out: dict[str, Any] = {"split": "test", "n": self.n, "n_boot": self.n_boot, "resampling": self.resampling,
                               "macro_auc": d["macro_auc"]}
        if self.task == "multiclass":
            keep = ("precision", "recall", "f1", "support", "auc", "average_precision")
            return {**out, "accuracy": d["accuracy"], "macro_f1": self.macro_f1,
                    "per_class": {k: {m: v[m] for m in keep} for k, v in d["per_class"].items()}}
        keep = ("auc", "ci_low", "ci_high", "sensitivity", "specificity", "threshold", "threshold_rule",
                "average_precision", "ece", "positives")
        return {**out, "micro_auc": d["micro_auc"],
                "per_label": {k: {m: v[m] for m in keep} for k, v in d["per_label"].items()}}


# ---- localization_<key>.json --------------------------------------------------------------

@dataclass(frozen=True)
class LocalizedClass:
    """CAM boxes of one class against true boxes and against random boxes of the same sizes."""

    n: int
    accuracy: float
    precision: float
    random_accuracy: float
    random_precision: float
    mean_box_area: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": self.accuracy, "precision": self.precision,
                "random_accuracy": self.random_accuracy, "random_precision": self.random_precision,
                "mean_box_area": self.mean_box_area}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LocalizedClass:
        return cls(int(d.get("n") or 0), _num(d.get("accuracy")), _num(d.get("precision")),
                   _num(d.get("random_accuracy")), _num(d.get("random_precision")), _num(d.get("mean_box_area")))


@dataclass(frozen=True)
class Localization:
    """A localisation result (Wollek et al., Tables 4/5): ``summary.json["localization"]`` or a
    ``cxrlab localize`` file.  ``key`` names the result (its figures and file); ``box_file`` is
    None for the dataset's own boxes."""

    FORMAT_VERSION: ClassVar[int] = 2

    method: str
    threshold: float
    iou: float
    cases: int
    per_class: dict[str, LocalizedClass]
    mean_accuracy: float = NAN
    mean_precision: float = NAN
    random_mean_accuracy: float = NAN
    random_mean_precision: float = NAN
    key: str | None = None
    box_file: str | None = None
    matching: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {"format_version": self.format_version, "method": self.method, "threshold": self.threshold,
               "iou": self.iou, "cases": self.cases, "per_class": {k: c.to_dict() for k, c in self.per_class.items()},
               "mean_accuracy": self.mean_accuracy, "mean_precision": self.mean_precision,
               "random_mean_accuracy": self.random_mean_accuracy, "random_mean_precision": self.random_mean_precision}
        if self.key is not None:
            out["key"] = self.key
        if self.box_file is not None or self.matching is not None:
            out["box_file"], out["matching"] = self.box_file, self.matching
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], key: str | None = None) -> Localization:
        """Args: key: the result's name where the file does not store it (format 1: from its file name)."""
        return cls(d.get("method") or "gradcam", _num(d.get("threshold")), _num(d.get("iou", 0.1)),
                   int(d.get("cases") or 0), {k: LocalizedClass.from_dict(v) for k, v in (d.get("per_class") or {}).items()},
                   _num(d.get("mean_accuracy")), _num(d.get("mean_precision")), _num(d.get("random_mean_accuracy")),
                   _num(d.get("random_mean_precision")), d.get("key") or key, d.get("box_file"), d.get("matching"),
                   _version(d))

    @classmethod
    def read(cls, path: str | Path, key: str | None = None) -> Localization | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d, key)


# ---- uncertainty.json ---------------------------------------------------------------------

@dataclass(frozen=True)
class UncertainLabel:
    """MC dropout on one label: the share flagged uncertain, and the AUC on all / confident / uncertain entries."""

    uncertain_fraction: float
    mean_std: float
    auc_all: float
    auc_confident: float
    auc_uncertain: float

    def to_dict(self) -> dict[str, Any]:
        return {"uncertain_fraction": self.uncertain_fraction, "mean_std": self.mean_std, "auc_all": self.auc_all,
                "auc_confident": self.auc_confident, "auc_uncertain": self.auc_uncertain}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UncertainLabel:
        return cls(*(_num(d.get(k)) for k in ("uncertain_fraction", "mean_std", "auc_all", "auc_confident",
                                              "auc_uncertain")))


@dataclass(frozen=True)
class Uncertainty:
    """What ``uncertainty.json`` holds: Monte-Carlo dropout over a run's test split."""

    FORMAT_VERSION: ClassVar[int] = 2

    threshold: float
    per_label: dict[str, UncertainLabel]
    uncertain_fraction: float = NAN
    passes: int | None = None
    images: int | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "threshold": self.threshold,
                "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
                "uncertain_fraction": self.uncertain_fraction, "passes": self.passes, "images": self.images}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Uncertainty:
        return cls(_num(d.get("threshold")), {k: UncertainLabel.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   _num(d.get("uncertain_fraction")), _int(d.get("passes")), _int(d.get("images")), _version(d))

    @classmethod
    def read(cls, path: str | Path) -> Uncertainty | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- summary.json -------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSummary:
    """What ``summary.json`` holds: the run's headline, training facts, split facts and localisation.

    ``macro_auc`` is the evaluation's macro AUC with its CI (computed once, in the evaluation);
    ``extra`` keeps keys this version does not know (e.g. the demo's ``report``).
    """

    FORMAT_VERSION: ClassVar[int] = 2

    name: str
    macro_auc: Estimate
    per_label_auc: dict[str, float]
    best_epoch: int | None = None
    epochs_run: int | None = None
    n_images: dict[str, int] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] | None = None
    pretrained: dict[str, Any] | None = None
    skipped_images: int | None = None
    localization: Localization | None = None
    wall_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    _KNOWN: ClassVar[tuple[str, ...]] = (
        "format_version", "name", "macro_auc", "macro_auc_ci", "per_label_auc", "best_epoch", "epochs_run",
        "n_images", "data", "device", "pretrained", "skipped_images", "localization", "wall_seconds")

    @classmethod
    def of(cls, name: str, evaluation: Evaluation, **facts: Any) -> RunSummary:
        """The summary of a run whose test split was evaluated as ``evaluation`` (its AUCs, not recomputed)."""
        return cls(name=name, macro_auc=evaluation.macro_auc, per_label_auc=evaluation.aucs, **facts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": self.format_version, "name": self.name,
                               "macro_auc": self.macro_auc.value, "per_label_auc": dict(self.per_label_auc),
                               "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                               "n_images": dict(self.n_images), "macro_auc_ci": [self.macro_auc.low, self.macro_auc.high],
                               "data": self.data, "device": self.device, "pretrained": self.pretrained}
        if self.skipped_images is not None:
            out["skipped_images"] = self.skipped_images
        if self.localization is not None:
            out["localization"] = self.localization.to_dict()
        out["wall_seconds"] = self.wall_seconds
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        ci = d.get("macro_auc_ci") or [None, None]
        loc = d.get("localization")
        wall = d.get("wall_seconds")
        return cls(name=d.get("name") or "run", macro_auc=Estimate.of(d.get("macro_auc"), ci),
                   per_label_auc={k: _num(v) for k, v in (d.get("per_label_auc") or {}).items()},
                   best_epoch=_int(d.get("best_epoch")), epochs_run=_int(d.get("epochs_run")),
                   n_images=dict(d.get("n_images") or {}), data=dict(d.get("data") or {}), device=d.get("device"),
                   pretrained=d.get("pretrained"), skipped_images=_int(d.get("skipped_images")),
                   localization=Localization.from_dict(loc) if loc else None,
                   wall_seconds=None if wall is None else float(wall),
                   extra={k: v for k, v in d.items() if k not in cls._KNOWN}, format_version=_version(d))

    @classmethod
    def read(cls, path: str | Path) -> RunSummary | None:
        """``summary.json`` of any format (None while training has not finished)."""
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- comparisons (cxrlab compare, the study's tests) -------------------------------------

Z95 = 1.959963984540054


@dataclass(frozen=True)
class LabelComparison:
    """DeLong's test of two models' AUCs on one label (``p_holm``: Holm-adjusted over the labels)."""

    auc_a: float
    auc_b: float
    diff: float
    se: float = NAN
    p: float = NAN
    p_holm: float = NAN

    @property
    def difference(self) -> Estimate:
        """A - B with DeLong's normal 95% interval."""
        return Estimate(self.diff, self.diff - Z95 * self.se, self.diff + Z95 * self.se)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelComparison:
        return cls(*(_num(d.get(k)) for k in ("auc_a", "auc_b", "diff", "se", "p", "p_holm")))


@dataclass(frozen=True)
class Comparison:
    """Two runs on the same test images (:func:`cxrlab.evaluate.compare.compare_tables`), read back.

    ``macro`` is the observed macro-AUC difference A - B with its paired-bootstrap interval;
    ``p_resolution`` is 1/B (a resampling p below it only says ``p < 1/B``).
    """

    run_a: str
    run_b: str
    n: int
    per_label: dict[str, LabelComparison]
    macro: Estimate
    p: float = NAN
    p_resolution: float = NAN
    note: str = ""
    accuracy: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        m = d.get("macro_auc_difference") or {}
        diff = m.get("diff", m.get("diff_mean"))  # format 1: only the bootstrap mean
        n_boot = _int(m.get("n_boot")) or _int(d.get("n_boot"))
        resolution = m.get("p_resolution") or (1 / n_boot if n_boot else None)  # 1/B, where not stored
        return cls(str(d.get("run_a", d.get("a", "A"))), str(d.get("run_b", d.get("b", "B"))), int(d.get("n") or 0),
                   {k: LabelComparison.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   Estimate(_num(diff), _num(m.get("ci_low")), _num(m.get("ci_high")), n_boot),
                   _num(m.get("p")), _num(resolution), d.get("note") or "", d.get("accuracy"))

    @property
    def significant(self) -> list[str]:
        """Labels whose Holm-adjusted DeLong p is below 0.05."""
        return [lab for lab, c in self.per_label.items() if finite(c.p_holm) and c.p_holm < 0.05]
