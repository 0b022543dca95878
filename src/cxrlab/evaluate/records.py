"""Typed, versioned result records: what ``evaluation.json``, ``summary.json``,
``localization_<key>.json`` and ``uncertainty.json`` hold, what a comparison returns, and a study's
``study.json`` (:class:`StudyResult`).

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


#: PPV and NPV at a deployment prevalence the user states (``evaluate.prevalence``).
ADJUSTED = ("ppv_at_prevalence", "npv_at_prevalence")


@dataclass(frozen=True)
class OperatingPoint:
    """A label's decisions at its validation-chosen threshold: rates with CIs, confusion counts.

    ``rule`` is the threshold rule (``youden``, ``sensitivity:0.9``...; None in older files) and
    ``validation`` the value its rate reached on validation (J, F1, or the targeted rate);
    ``prevalence`` and ``adjusted`` (:data:`ADJUSTED`: PPV and NPV there, with CIs) when the user
    stated a deployment prevalence.
    """

    threshold: float
    confusion: dict[str, int]
    normalised: list[list[float]]
    rates: dict[str, Estimate]
    n_boot: int | None = None
    rule: str | None = None
    validation: float = NAN
    prevalence: float | None = None
    adjusted: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"threshold": self.threshold, "confusion": dict(self.confusion), "n_boot": self.n_boot,
               "normalised": self.normalised, **{k: e.to_dict("value") for k, e in self.rates.items()}}
        if self.rule is not None:
            out.update(rule=self.rule, validation_value=self.validation)
        if self.prevalence is not None:
            out.update(prevalence=self.prevalence, **{k: e.to_dict("value") for k, e in self.adjusted.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> OperatingPoint | None:
        if not d:
            return None
        prev = d.get("prevalence")
        return cls(_num(d.get("threshold")), {k: int(v) for k, v in (d.get("confusion") or {}).items()},
                   d.get("normalised") or [[NAN, NAN], [NAN, NAN]],
                   {k: Estimate.from_dict(d.get(k), "value") for k in RATES if k in d}, _int(d.get("n_boot")),
                   d.get("rule"), _num(d.get("validation_value")), None if prev is None else float(prev),
                   {k: Estimate.from_dict(d.get(k), "value") for k in ADJUSTED if k in d})


# ---- calibration before and after (evaluation.json["calibration_effect"]) ----------------

@dataclass(frozen=True)
class CalibrationStats:
    """How well one label's probabilities match its outcomes on the test split.

    ``slope``/``intercept``: logistic recalibration (1 and 0 are perfect; a slope below 1 means
    overconfident); ``ece_width``/``ece_mass``: ECE over equal-width and equal-mass bins, with their
    reliability curves (``{"confidence", "observed", "count"}`` per non-empty bin).
    """

    n: int
    brier: float
    slope: float
    intercept: float
    ece_width: float
    ece_mass: float
    curve: dict[str, list[float]] = field(default_factory=dict)
    curve_mass: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "brier": self.brier, "slope": self.slope, "intercept": self.intercept,
                "ece_width": self.ece_width, "ece_mass": self.ece_mass, "curve": self.curve,
                "curve_mass": self.curve_mass}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationStats:
        return cls(int(d.get("n") or 0), *(_num(d.get(k)) for k in ("brier", "slope", "intercept", "ece_width",
                                                                      "ece_mass")),
                   dict(d.get("curve") or {}), dict(d.get("curve_mass") or {}))


@dataclass(frozen=True)
class CalibrationEffect:
    """The test split's calibration before (the model's activation) and after the fitted calibration.

    ``method`` is ``none`` for a run without one (``before`` and ``after`` then hold the same numbers);
    ``summary`` its parameters in words (``temperature scaling, T = 2.1``).
    """

    method: str
    before: dict[str, CalibrationStats]
    after: dict[str, CalibrationStats]
    summary: str = ""
    bins: int = 10

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "summary": self.summary, "bins": self.bins,
                "before": {k: v.to_dict() for k, v in self.before.items()},
                "after": {k: v.to_dict() for k, v in self.after.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CalibrationEffect | None:
        if not d:
            return None
        return cls(d.get("method") or "none", {k: CalibrationStats.from_dict(v) for k, v in (d.get("before") or {}).items()},
                   {k: CalibrationStats.from_dict(v) for k, v in (d.get("after") or {}).items()},
                   d.get("summary") or "", int(d.get("bins") or 10))


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
class SourceResult:
    """One source of a run over several sources (``evaluation.json["per_source"][name]``): its test images' AUCs.

    Attributes:
        n, patients: the source's test images and patients (the bootstrap resamples its patients).
        per_label: AUC with its 95% CI for each label the source has (NaN when its test images hold one class).
        positives: positives per label the source has.
        absent: labels the source does not have: "not in this source", never a number.
        macro_auc: the mean AUC over the labels this source can score, with its 95% CI.
    """

    n: int
    macro_auc: Estimate
    per_label: dict[str, Estimate] = field(default_factory=dict)
    positives: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    patients: int | None = None
    n_boot: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "patients": self.patients, "n_boot": self.n_boot,
                "per_label": {k: {**e.to_dict("auc"), "positives": self.positives.get(k)}
                              for k, e in self.per_label.items()},
                "absent": list(self.absent), "macro_auc": self.macro_auc.to_dict("auc")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceResult:
        per = d.get("per_label") or {}
        return cls(int(d.get("n") or 0), Estimate.from_dict(d.get("macro_auc"), "auc"),
                   {k: Estimate.from_dict(v, "auc") for k, v in per.items()},
                   {k: int(v["positives"]) for k, v in per.items() if v.get("positives") is not None},
                   list(d.get("absent") or []), _int(d.get("patients")), _int(d.get("n_boot")))


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
    calibration_effect: CalibrationEffect | None = None
    """Brier, slope, intercept and ECE before and after the run's fitted calibration (None in older files)."""
    per_source: dict[str, SourceResult] = field(default_factory=dict)
    """Test AUCs per source of a run over several sources, with CIs (empty: one source, or an older file)."""
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
        if self.calibration_effect is not None:
            head["calibration_effect"] = self.calibration_effect.to_dict()
        if self.per_source:
            head["per_source"] = {k: r.to_dict() for k, r in self.per_source.items()}
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
                   calibration_effect=CalibrationEffect.from_dict(d.get("calibration_effect")),
                   per_source={k: SourceResult.from_dict(v) for k, v in (d.get("per_source") or {}).items()},
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


# ---- audit_<method>.json (cxrlab audit: where the model looks) ---------------------------

def _est(d: Any) -> Estimate | None:
    return None if d is None else Estimate.from_dict(d, "value")


def _est_dict(e: Estimate | None) -> dict[str, Any] | None:
    return None if e is None else e.to_dict("value")


@dataclass(frozen=True)
class AuditTarget:
    """The CAM against a true box or finding mask of one label, with the two baselines' values.

    ``share``/``hit``/``iou``: energy share inside, pointing-game hit rate and IoU at the audit's level,
    on all positives with a box; ``*_tp``: on the true positives among them; ``uniform``/``gaussian``:
    ``{"share", "hit", "iou"}`` of a uniform map and a centred Gaussian on the same images."""

    n: int
    n_tp: int
    share: Estimate
    hit: Estimate
    iou: Estimate
    hit_tp: Estimate
    iou_tp: Estimate
    uniform: dict[str, Estimate] = field(default_factory=dict)
    gaussian: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_tp": self.n_tp, **{k: _est_dict(getattr(self, k)) for k in
                                                   ("share", "hit", "iou", "hit_tp", "iou_tp")},
                "uniform": {k: _est_dict(e) for k, e in self.uniform.items()},
                "gaussian": {k: _est_dict(e) for k, e in self.gaussian.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AuditTarget | None:
        if not d:
            return None
        e = {k: Estimate.from_dict(d.get(k), "value") for k in ("share", "hit", "iou", "hit_tp", "iou_tp")}
        return cls(int(d.get("n") or 0), int(d.get("n_tp") or 0), **e,
                   uniform={k: Estimate.from_dict(v, "value") for k, v in (d.get("uniform") or {}).items()},
                   gaussian={k: Estimate.from_dict(v, "value") for k, v in (d.get("gaussian") or {}).items()})


@dataclass(frozen=True)
class AuditLabel:
    """Where the model looks for one label, on the test images positive for it that have a lung mask.

    ``lung_share``: mean share of CAM energy inside the lungs (``*_tp``: true positives only), beside a
    uniform map's and a centred Gaussian's; ``flagged``: the CI of the share lies wholly below the uniform
    map's (the maps sit outside the lungs more than a map that ignores the image: a shortcut suspect)."""

    n: int
    n_tp: int
    lung_share: Estimate
    lung_share_tp: Estimate
    uniform_lung_share: Estimate
    gaussian_lung_share: Estimate
    heart_share: Estimate | None = None
    no_energy: int = 0
    flagged: bool = False
    target: AuditTarget | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_tp": self.n_tp, "lung_share": _est_dict(self.lung_share),
                "lung_share_tp": _est_dict(self.lung_share_tp),
                "uniform_lung_share": _est_dict(self.uniform_lung_share),
                "gaussian_lung_share": _est_dict(self.gaussian_lung_share),
                "heart_share": _est_dict(self.heart_share), "no_energy": self.no_energy, "flagged": self.flagged,
                "target": self.target.to_dict() if self.target else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditLabel:
        return cls(int(d.get("n") or 0), int(d.get("n_tp") or 0), Estimate.from_dict(d.get("lung_share"), "value"),
                   Estimate.from_dict(d.get("lung_share_tp"), "value"),
                   Estimate.from_dict(d.get("uniform_lung_share"), "value"),
                   Estimate.from_dict(d.get("gaussian_lung_share"), "value"), _est(d.get("heart_share")),
                   int(d.get("no_energy") or 0), bool(d.get("flagged")), AuditTarget.from_dict(d.get("target")))


@dataclass(frozen=True)
class AuditResult:
    """What ``audit_<method>.json`` holds (``cxrlab audit``): per label, where the CAMs of ``method`` put
    their energy, and the method's sanity (randomisation) and faithfulness (deletion) checks.

    ``level``/``level_rule``: the map threshold of the IoUs, chosen on the validation split;
    ``counts``: test images, with and without masks, and masks not in the test split;
    ``randomisation``: mean Spearman correlation of maps before/after re-initialising the top layers
    (``randomisation_edges``: the same for the input's edges, a map that ignores the weights);
    ``deletion``: random-order minus map-order deletion AUC (> 0: the map ranks pixels the model uses);
    ``suspects``: the test images with the most energy outside the lungs (``image, label, outside``)."""

    FORMAT_VERSION: ClassVar[int] = 1

    method: str
    per_label: dict[str, AuditLabel]
    level: float = NAN
    level_rule: str = ""
    mask_source: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    randomisation: Estimate | None = None
    randomisation_edges: Estimate | None = None
    deletion: Estimate | None = None
    suspects: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def flagged(self) -> list[str]:
        return [lab for lab, r in self.per_label.items() if r.flagged]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "method": self.method, "level": self.level,
                "level_rule": self.level_rule, "mask_source": self.mask_source, "counts": dict(self.counts),
                "n_boot": self.n_boot, "per_label": {k: r.to_dict() for k, r in self.per_label.items()},
                "flagged": self.flagged, "randomisation": _est_dict(self.randomisation),
                "randomisation_edges": _est_dict(self.randomisation_edges), "deletion": _est_dict(self.deletion),
                "suspects": list(self.suspects), "seconds": dict(self.seconds)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditResult:
        return cls(d.get("method") or "gradcam", {k: AuditLabel.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   _num(d.get("level")), d.get("level_rule") or "", d.get("mask_source") or "",
                   {k: int(v) for k, v in (d.get("counts") or {}).items()}, _est(d.get("randomisation")),
                   _est(d.get("randomisation_edges")), _est(d.get("deletion")), list(d.get("suspects") or []),
                   _int(d.get("n_boot")), {k: float(v) for k, v in (d.get("seconds") or {}).items()}, _version(d))

    @classmethod
    def read(cls, path: str | Path) -> AuditResult | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- subgroups.json -----------------------------------------------------------------------

#: The rates and scores shown per subgroup, in table order (``prevalence`` has no gap).
SUBGROUP_METRICS = ("prevalence", "auc", "tpr", "fpr", "ppv")
#: The metrics whose gap to the rest of the patients and to the median group is reported.
GAP_METRICS = ("auc", "tpr", "fpr", "ppv")


@dataclass(frozen=True)
class GroupGap:
    """A group's metric minus that of the rest (or of the median group): the difference, its 95% CI and
    the two-sided bootstrap p-value (resolution ``1/n_boot``; not adjusted for the many groups)."""

    diff: Estimate
    p: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return {**self.diff.to_dict("diff"), "p": self.p}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GroupGap:
        d = d or {}
        return cls(Estimate.from_dict(d, "diff"), _num(d.get("p")))


@dataclass(frozen=True)
class GroupLabel:
    """One label in one subgroup: counts, :data:`SUBGROUP_METRICS` with CIs, gaps to the rest and the median.

    ``flagged``: fewer than ``min_count`` positives or negatives; shown, never ranked (worst, median).
    """

    positives: int
    negatives: int
    flagged: bool
    metrics: dict[str, Estimate]
    vs_rest: dict[str, GroupGap] = field(default_factory=dict)
    vs_median: dict[str, GroupGap] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"positives": self.positives, "negatives": self.negatives, "flagged": self.flagged,
                **{k: e.to_dict("value") for k, e in self.metrics.items()},
                "vs_rest": {k: g.to_dict() for k, g in self.vs_rest.items()},
                "vs_median": {k: g.to_dict() for k, g in self.vs_median.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupLabel:
        return cls(int(d.get("positives") or 0), int(d.get("negatives") or 0), bool(d.get("flagged")),
                   {k: Estimate.from_dict(d.get(k), "value") for k in SUBGROUP_METRICS if k in d},
                   {k: GroupGap.from_dict(v) for k, v in (d.get("vs_rest") or {}).items()},
                   {k: GroupGap.from_dict(v) for k, v in (d.get("vs_median") or {}).items()})


@dataclass(frozen=True)
class Subgroup:
    """One group of patients (e.g. ``sex = F``, or ``F / 60-79`` of an intersection)."""

    images: int
    patients: int
    per_label: dict[str, GroupLabel]

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "patients": self.patients,
                "per_label": {k: v.to_dict() for k, v in self.per_label.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Subgroup:
        return cls(int(d.get("images") or 0), int(d.get("patients") or 0),
                   {k: GroupLabel.from_dict(v) for k, v in (d.get("per_label") or {}).items()})


@dataclass(frozen=True)
class Grouping:
    """The groups of one attribute (``sex``) or of a two-way intersection (``sex x age``).

    ``worst``: per label, the ranked group (not flagged) with the lowest AUC; None with fewer than two, or when
    the ranked groups tie (:data:`cxrlab.evaluate.subgroups.TIE`: the page and the CLI say "no gap").
    """

    attributes: list[str]
    groups: dict[str, Subgroup]
    worst: dict[str, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " x ".join(self.attributes)

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": list(self.attributes), "groups": {k: g.to_dict() for k, g in self.groups.items()},
                "worst": dict(self.worst)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grouping:
        return cls(list(d.get("attributes") or []), {k: Subgroup.from_dict(v) for k, v in (d.get("groups") or {}).items()},
                   dict(d.get("worst") or {}))


@dataclass(frozen=True)
class SubgroupResult:
    """What ``subgroups.json`` holds (``cxrlab subgroups RUN``): per-group performance at the run's
    validation-chosen thresholds (one per label, the same for every group), patient-bootstrap CIs."""

    FORMAT_VERSION: ClassVar[int] = 1

    labels: list[str]
    thresholds: dict[str, float]
    n: int
    patients: int
    n_boot: int
    groupings: dict[str, Grouping]
    threshold_rule: str = "rule not recorded"
    min_count: int = 30
    resampling: str = "patients"
    age_bins: list[float] | None = None
    score_bins: int | None = None
    format_version: int = FORMAT_VERSION

    @property
    def p_resolution(self) -> float:
        return 1 / self.n_boot if self.n_boot else NAN

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "labels": list(self.labels), "thresholds": dict(self.thresholds),
                "threshold_rule": self.threshold_rule, "n": self.n, "patients": self.patients,
                "n_boot": self.n_boot, "resampling": self.resampling, "min_count": self.min_count,
                "age_bins": self.age_bins, "score_bins": self.score_bins,
                "groupings": {k: g.to_dict() for k, g in self.groupings.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubgroupResult:
        return cls(list(d.get("labels") or []), {k: _num(v) for k, v in (d.get("thresholds") or {}).items()},
                   int(d.get("n") or 0), int(d.get("patients") or 0), int(d.get("n_boot") or 0),
                   {k: Grouping.from_dict(v) for k, v in (d.get("groupings") or {}).items()},
                   d.get("threshold_rule") or "rule not recorded", int(d.get("min_count") or 30),
                   d.get("resampling") or "patients", d.get("age_bins"), _int(d.get("score_bins")), _version(d))

    @classmethod
    def read(cls, path: str | Path) -> SubgroupResult | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- external/<name>/external.json (cxrlab evaluate RUN --on SOURCE) ----------------------

@dataclass(frozen=True)
class Decisions:
    """A threshold's decisions on some images: the share decided positive and the rates with CIs."""

    threshold: float
    predicted_positive: float
    operating_point: OperatingPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "predicted_positive": self.predicted_positive,
                "operating_point": self.operating_point.to_dict() if self.operating_point else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Decisions | None:
        if not d:
            return None
        return cls(_num(d.get("threshold")), _num(d.get("predicted_positive")),
                   OperatingPoint.from_dict(d.get("operating_point")))


@dataclass(frozen=True)
class ExternalLabel:
    """One model label on the external target: its map, prevalence on both sides, transported and
    recalibrated results (all NaN / None when the target lacks the finding: not evaluable)."""

    model_label: str
    target_column: str | None
    canonical: str | None
    kind: str
    run_prevalence: float = NAN
    prevalence: float = NAN
    n: int = 0
    positives: int = 0
    auc: Estimate = field(default_factory=lambda: Estimate(NAN))
    transported: Decisions | None = None
    run_auc: Estimate = field(default_factory=lambda: Estimate(NAN))
    held_out: dict[str, Any] | None = None
    """Recalibration: ``fit_images``, ``fit_threshold``, ``kept_run_threshold``, ``n``, ``prevalence``
    and ``auc`` of the held-out rest; ``transported`` / ``recalibrated`` as :class:`Decisions` dicts."""

    @property
    def evaluable(self) -> bool:
        return self.target_column is not None

    def decisions(self, which: str) -> Decisions | None:
        """``transported`` or ``recalibrated`` decisions on the held-out rest."""
        return Decisions.from_dict((self.held_out or {}).get(which))

    def to_dict(self) -> dict[str, Any]:
        return {"model_label": self.model_label, "target_column": self.target_column, "canonical": self.canonical,
                "kind": self.kind, "run_prevalence": self.run_prevalence, "prevalence": self.prevalence, "n": self.n,
                "positives": self.positives, "auc": self.auc.to_dict(), "run_auc": self.run_auc.to_dict(),
                "transported": self.transported.to_dict() if self.transported else None, "held_out": self.held_out}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExternalLabel:
        return cls(d["model_label"], d.get("target_column"), d.get("canonical"), d.get("kind") or "none",
                   _num(d.get("run_prevalence")), _num(d.get("prevalence")), int(d.get("n") or 0),
                   int(d.get("positives") or 0), Estimate.from_dict(d.get("auc")), Decisions.from_dict(d.get("transported")),
                   Estimate.from_dict(d.get("run_auc")), d.get("held_out"))


@dataclass(frozen=True)
class ExternalResult:
    """What ``RUN/external/<name>/external.json`` holds: a run scored on another dataset.

    ``macro_auc`` / ``run_macro_auc`` average the same labels on the target and on the run's own test
    split: ``macro_labels``, the evaluable labels with both classes on both sides (empty in files written
    before it was recorded); ``composition`` is ``{factor: {category: [run share, target share]}}``;
    ``ood`` the share the run's OOD check flags on each side (None without ``ood.json``);
    ``recalibration`` says how the slice was drawn and what was refitted; ``duplicates`` the scored
    images that copy a training image (a :class:`DuplicateResult`; None when the check did not run,
    ``duplicate_note`` says why), ``duplicates_excluded`` how many of them were dropped from scoring
    (``--exclude-duplicates``).  Format 2 added the duplicate check (format 1 reads as not checked).
    """

    FORMAT_VERSION: ClassVar[int] = 2

    run: str
    name: str
    source: str
    root: str
    options: dict[str, Any]
    scored: str
    n_images: int
    n_patients: int
    vocabulary: str
    labels: dict[str, ExternalLabel]
    target_only: list[str]
    macro_auc: Estimate
    run_macro_auc: Estimate
    composition: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    ood: dict[str, Any] | None = None
    recalibration: dict[str, Any] = field(default_factory=dict)
    n_boot: int | None = None
    duplicates: DuplicateResult | None = None
    duplicate_note: str = ""
    duplicates_excluded: int = 0
    format_version: int = FORMAT_VERSION
    macro_labels: list[str] = field(default_factory=list)

    @property
    def evaluable(self) -> list[str]:
        return [k for k, v in self.labels.items() if v.evaluable]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "run": self.run, "name": self.name, "source": self.source,
                "root": self.root, "options": self.options, "scored": self.scored, "n_images": self.n_images,
                "n_patients": self.n_patients, "vocabulary": self.vocabulary,
                "labels": {k: v.to_dict() for k, v in self.labels.items()}, "target_only": list(self.target_only),
                "macro_auc": self.macro_auc.to_dict(), "run_macro_auc": self.run_macro_auc.to_dict(),
                "composition": self.composition, "ood": self.ood, "recalibration": self.recalibration,
                "n_boot": self.n_boot, "duplicates": None if self.duplicates is None else self.duplicates.to_dict(),
                "duplicate_note": self.duplicate_note, "duplicates_excluded": self.duplicates_excluded,
                "macro_labels": list(self.macro_labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExternalResult:
        return cls(str(d.get("run", "")), str(d.get("name", "")), str(d.get("source", "")), str(d.get("root", "")),
                   dict(d.get("options") or {}), str(d.get("scored", "")), int(d.get("n_images") or 0),
                   int(d.get("n_patients") or 0), str(d.get("vocabulary", "")),
                   {k: ExternalLabel.from_dict(v) for k, v in (d.get("labels") or {}).items()},
                   list(d.get("target_only") or []), Estimate.from_dict(d.get("macro_auc")),
                   Estimate.from_dict(d.get("run_macro_auc")), dict(d.get("composition") or {}), d.get("ood"),
                   dict(d.get("recalibration") or {}), _int(d.get("n_boot")),
                   DuplicateResult.from_dict(d["duplicates"]) if d.get("duplicates") else None,
                   str(d.get("duplicate_note")
                       or ("" if d.get("duplicates") else "not checked (an external.json from before the check)")),
                   int(d.get("duplicates_excluded") or 0), _version(d), list(d.get("macro_labels") or []))

    @classmethod
    def read(cls, path: str | Path) -> ExternalResult | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- duplicates.json (the duplicate check of a target set against a run's training images) ----

@dataclass(frozen=True)
class DuplicateMatch:
    """One query image that copies a reference image: ``kind`` is ``exact`` (same pixels at the cache
    resolution) or ``near`` (``distance`` = 1 - correlation after undoing ``crop``, e.g. ``left 3.0%``)."""

    query: str
    reference: str
    kind: str
    distance: float = 0.0
    crop: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "reference": self.reference, "kind": self.kind, "distance": self.distance,
                "crop": self.crop}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DuplicateMatch:
        return cls(str(d["query"]), str(d["reference"]), str(d.get("kind") or "near"), _num(d.get("distance")),
                   str(d.get("crop") or "none"))


@dataclass(frozen=True)
class DuplicateResult:
    """What :func:`cxrlab.evaluate.duplicates.find_duplicates` returns: each copied query image named.

    ``method`` holds the check's settings (image size, thresholds), so a reader can say what
    "near" meant; ``matches`` has at most one entry per query image (its nearest reference).
    """

    FORMAT_VERSION: ClassVar[int] = 1

    n_reference: int
    n_query: int
    matches: list[DuplicateMatch] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def exact(self) -> list[DuplicateMatch]:
        return [m for m in self.matches if m.kind == "exact"]

    @property
    def near(self) -> list[DuplicateMatch]:
        return [m for m in self.matches if m.kind == "near"]

    @property
    def leaked(self) -> list[str]:
        """Query ids that copy a reference image (what ``exclude`` drops)."""
        return [m.query for m in self.matches]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "n_reference": self.n_reference, "n_query": self.n_query,
                "n_exact": len(self.exact), "n_near": len(self.near), "method": dict(self.method),
                "matches": [m.to_dict() for m in self.matches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DuplicateResult:
        return cls(int(d.get("n_reference") or 0), int(d.get("n_query") or 0),
                   [DuplicateMatch.from_dict(m) for m in d.get("matches") or []], dict(d.get("method") or {}),
                   _version(d))

    @classmethod
    def read(cls, path: str | Path) -> DuplicateResult | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)


# ---- studies/<name>/study.json (cxrlab study report) ----------------------------------------

@dataclass(frozen=True)
class CellLabel:
    """One label (or class) of a study cell: its AUC with CI and, for binary/multi-label cells, the
    validation-chosen threshold with the test sensitivity and specificity there."""

    auc: Estimate
    sensitivity: float = NAN
    specificity: float = NAN
    threshold: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return {**self.auc.to_dict("auc"), "sensitivity": self.sensitivity, "specificity": self.specificity,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CellLabel:
        d = d or {}
        return cls(Estimate.from_dict(d, "auc"), _num(d.get("sensitivity")), _num(d.get("specificity")),
                   _num(d.get("threshold")))


#: What a study cell carries besides its results, as written (drawn by the report, not computed on).
CELL_EXTRAS = ("epochs_run", "best_epoch", "history", "localization", "setup", "audit", "subgroups", "roc")


@dataclass(frozen=True)
class TransferEntry:
    """One model (a study cell) scored on one site's test split (``RUN/external/<site>/``).

    ``own``: the site is one the cell trained on (its own test split of that site); ``duplicates``: scored
    images that copy one of the cell's training images (None: not checked).
    """

    cell: str
    site: str
    own: bool
    n_images: int
    macro: Estimate
    per_label: dict[str, Estimate] = field(default_factory=dict)
    duplicates: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.cell, "site": self.site, "own": self.own, "n_images": self.n_images,
                "macro": self.macro.to_dict(), "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
                "duplicates": self.duplicates}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferEntry:
        return cls(str(d["cell"]), str(d["site"]), bool(d.get("own")), int(d.get("n_images") or 0),
                   Estimate.from_dict(d.get("macro")),
                   {k: Estimate.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   _int(d.get("duplicates")))


@dataclass(frozen=True)
class TransferResult:
    """A cross-site study's matrix (cells x sites) and its own-vs-other tests (``study.json["transfer"]``).

    ``trained_on``: cell -> the sites it trained on; ``comparisons``: per site, the model trained only there
    against each model that never saw it, on the same images (:func:`cxrlab.evaluate.transfer.own_vs_other`
    dicts with ``site``); ``missing``: ``cell@site`` entries not scored (a cell not finished).
    """

    FORMAT_VERSION: ClassVar[int] = 1

    sites: list[str]
    trained_on: dict[str, list[str]]
    entries: list[TransferEntry]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int | None = None
    missing: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def entry(self, cell: str, site: str) -> TransferEntry | None:
        return next((e for e in self.entries if e.cell == cell and e.site == site), None)

    @property
    def cells(self) -> list[str]:
        return list(self.trained_on)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "sites": self.sites, "trained_on": self.trained_on,
                "entries": [e.to_dict() for e in self.entries], "comparisons": self.comparisons,
                "n_boot": self.n_boot, "missing": self.missing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferResult:
        return cls(list(d.get("sites") or []), {k: list(v) for k, v in (d.get("trained_on") or {}).items()},
                   [TransferEntry.from_dict(e) for e in d.get("entries") or []], list(d.get("comparisons") or []),
                   _int(d.get("n_boot")), list(d.get("missing") or []), _version(d))


@dataclass(frozen=True)
class StudyCell:
    """One cell of ``study.json``: the results of one run at the study's B (``accuracy``: multi-class cells, and
    binary cells at their threshold), plus what ran and was audited (:data:`CELL_EXTRAS`, dicts as written)."""

    task: str
    labels: list[str]
    n: int | None
    n_boot: int | None
    resampling: str | None
    macro_auc: Estimate
    per_label: dict[str, CellLabel] = field(default_factory=dict)
    accuracy: Estimate | None = None
    operating_point: OperatingPoint | None = None
    confusion_matrix: list[list[float]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> tuple[str, Estimate]:
        """(name, estimate) of the cell's one number: accuracy for multi-class cells, the AUC of a cell with one
        label (a binary cell's macro over one label is that label's AUC: "macro" would misname it), else the
        macro AUC."""
        if self.task == "multiclass" and self.accuracy is not None:
            return "accuracy", self.accuracy
        if len(self.labels) == 1 and self.labels[0] in self.per_label:
            return "AUC", self.per_label[self.labels[0]].auc
        return "macro AUC", self.macro_auc

    @classmethod
    def of(cls, ev: Evaluation, labels: list[str], extras: dict[str, Any]) -> StudyCell:
        """A cell from its run's :class:`Evaluation` (binary: accuracy and confusion at the chosen threshold)."""
        if ev.task == "multiclass":
            per = {k: CellLabel(r.auc) for k, r in ev.per_class.items()}
            return cls(ev.task, labels, ev.n, ev.n_boot, ev.resampling, ev.macro_auc, per, ev.accuracy, None,
                       ev.confusion_matrix, extras)
        per = {k: CellLabel(r.auc, r.sensitivity, r.specificity, r.threshold) for k, r in ev.per_label.items()}
        op = ev.operating_point
        cm = None
        if op is not None:
            c = op.confusion
            cm = [[c.get("tn", 0), c.get("fp", 0)], [c.get("fn", 0), c.get("tp", 0)]]
        return cls(ev.task, labels, ev.n, ev.n_boot, ev.resampling, ev.macro_auc, per,
                   op.rates.get("accuracy") if op else None, op, cm, extras)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "labels": list(self.labels), "n": self.n, "n_boot": self.n_boot,
                               "resampling": self.resampling, **self.extras,
                               "macro_auc": self.macro_auc.to_dict("auc"),
                               "per_label": {k: v.to_dict() for k, v in self.per_label.items()}}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy.to_dict("value")
        if self.operating_point is not None:
            out["operating_point"] = self.operating_point.to_dict()
        if self.confusion_matrix is not None:
            out["confusion_matrix"] = self.confusion_matrix
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyCell:
        acc = d.get("accuracy")
        return cls(d.get("task") or "multilabel", list(d.get("labels") or []), _int(d.get("n")), _int(d.get("n_boot")),
                   d.get("resampling"), Estimate.from_dict(d.get("macro_auc"), "auc"),
                   {k: CellLabel.from_dict(v) for k, v in (d.get("per_label") or {}).items()},
                   Estimate.from_dict(acc, "value") if acc is not None else None,
                   OperatingPoint.from_dict(d.get("operating_point")), d.get("confusion_matrix"),
                   {k: d[k] for k in CELL_EXTRAS if k in d})


@dataclass(frozen=True)
class StudyResult:
    """What ``study.json`` holds (``cxrlab study report``): every cell's results at one B, the comparisons
    (:class:`Comparison` dicts, plus McNemar's ``accuracy``), the audit pairs, published numbers and what ran.

    Format 1 (no ``format_version``) is the unversioned dict of cxrlab 0.2; it reads the same.
    """

    FORMAT_VERSION: ClassVar[int] = 2

    name: str
    cells: dict[str, StudyCell]
    baseline: str
    n_boot: int | None = None
    title: str | None = None
    description: str | None = None
    axes: dict[str, list[Any]] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    published: dict[str, Any] = field(default_factory=dict)
    published_source: str | None = None
    phantom: bool = False
    missing: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    command_line: list[str] | None = None
    root: str | None = None
    base: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    transfer: TransferResult | None = None
    """A cross-site study's matrix and tests (None for other studies)."""

    @property
    def labels(self) -> list[str]:
        return next(iter(self.cells.values())).labels if self.cells else []

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        """The ``study.json`` dict (``curves=False``: without each cell's ROC points, as the file stores it)."""
        cells = {k: c.to_dict() for k, c in self.cells.items()}
        if not curves:
            for c in cells.values():
                c.pop("roc", None)
        return {"format_version": self.format_version, "name": self.name, "title": self.title,
                "description": self.description, "baseline": self.baseline, "axes": self.axes, "cells": cells,
                "comparisons": self.comparisons, "published": self.published,
                "published_source": self.published_source, "phantom": self.phantom, "missing": self.missing,
                "overrides": self.overrides, "command_line": self.command_line, "root": self.root,
                "base": self.base, "n_boot": self.n_boot, "audit": self.audit,
                "transfer": self.transfer.to_dict() if self.transfer is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyResult:
        return cls(d.get("name") or "", {k: StudyCell.from_dict(v) for k, v in (d.get("cells") or {}).items()},
                   d.get("baseline") or "", _int(d.get("n_boot")), d.get("title"), d.get("description"),
                   dict(d.get("axes") or {}), list(d.get("comparisons") or []), dict(d.get("published") or {}),
                   d.get("published_source"), bool(d.get("phantom")), list(d.get("missing") or []),
                   dict(d.get("overrides") or {}), d.get("command_line"), d.get("root"), d.get("base"),
                   dict(d.get("audit") or {}), _version(d),
                   TransferResult.from_dict(d["transfer"]) if d.get("transfer") else None)

    @classmethod
    def read(cls, path: str | Path) -> StudyResult | None:
        d = read_json(path)
        return None if d is None else cls.from_dict(d)
