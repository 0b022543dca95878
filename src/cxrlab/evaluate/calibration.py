"""Fitted calibration: temperature, Platt or isotonic scaling chosen on validation, and how well
probabilities are calibrated (Brier score, calibration slope and intercept, ECE in two binnings).

Why: a model trained to a low training loss is overconfident (Guo et al., "On Calibration of
Modern Neural Networks", ICML 2017), and a probability is only worth showing when it means what
it says; shifting the decision point to 0.5 (torchxrayvision's ``op_threshs``) leaves the
probabilities as they were.  The scaling is fitted on the validation split's probabilities (never
on test) and applied to the probabilities of the model's activation, so it works the same after a
PyTorch model, an ONNX graph or mirrored-image averaging:

- ``temperature``: ``sigmoid(logit(p) / T)`` per label (multi-label, binary), one ``T`` for all
  classes of a multi-class model (``softmax(log p / T)``); monotone, so AUC and ranks are kept;
- ``platt``: ``sigmoid(a logit(p) + b)`` per label (per class one-vs-rest for multi-class, rows
  renormalised); monotone for ``a > 0``;
- ``isotonic``: a non-decreasing step function per label (ties may change AUC a little).

Arrays in, records out: :class:`Calibration` is what ``model.json["calibration"]`` holds;
:meth:`Calibration.apply` is what :class:`cxrlab.inference.Predictor` calls on every probability
it returns (the one place calibration is applied to a model's outputs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize, minimize_scalar

#: ``evaluate.calibration`` values.
METHODS = ("none", "temperature", "platt", "isotonic")
#: Probabilities are clipped to [EPS, 1 - EPS] before taking logits (float32 saturates at 1.0).
EPS = 1e-7
#: Temperatures are searched in e^-4 .. e^4 (0.018 .. 55).
LOG_T_BOUND = 4.0
#: What a label keeps when its validation split is separable (every positive scored above every negative): the
#: log loss then falls without limit as the scores are sharpened, so the fit runs to its bound (T = e^-4, or a
#: Platt slope past e^4).  That is no estimate of calibration, and applying it saturates the probabilities to
#: exactly 0 and 1 in float32, which ties the ranks and destroys AUC (a run with validation AUC 1.0 for
#: Cardiomegaly went from test AUC 0.9999 to 0.997, and on another site from 0.966 to 0.500).
SEPARABLE = "validation separable (the fit runs to its bound): kept as it was"


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def has_both(y: np.ndarray) -> bool:
    """Both classes among the labelled entries (NaN: not labelled): an AUC, or a fit, is defined."""
    y = y[~np.isnan(y)]
    return bool(len(y)) and 0 < y.sum() < len(y)


def _separable(y: np.ndarray, p: np.ndarray) -> bool:
    """Every positive scored above every negative (or below): no finite sharpening minimises the log loss."""
    keep = ~np.isnan(y)
    pos, neg = p[keep][y[keep] == 1], p[keep][y[keep] == 0]
    return bool(len(pos) and len(neg)) and (pos.min() > neg.max() or pos.max() < neg.min())


def _binary_nll(y: np.ndarray, z: np.ndarray) -> float:
    # -[y log s(z) + (1-y) log(1 - s(z))] = log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature_binary(y: np.ndarray, p: np.ndarray) -> float:
    """The ``T`` minimising the validation log loss of ``sigmoid(logit(p) / T)`` (1.0 without both classes, and
    NaN where the fit runs to its lower bound: a separable split, :data:`SEPARABLE`)."""
    keep = ~np.isnan(y)
    if not has_both(y):
        return 1.0
    if _separable(y, p):
        return float("nan")
    z, t = logit(p[keep]), y[keep]
    res = minimize_scalar(lambda lt: _binary_nll(t, z * np.exp(-lt)), bounds=(-LOG_T_BOUND, LOG_T_BOUND),
                          method="bounded", options={"xatol": 1e-6})
    return float("nan") if res.x <= -LOG_T_BOUND + 1e-3 else float(np.exp(res.x))


def fit_temperature_multiclass(y: np.ndarray, p: np.ndarray) -> float:
    """One ``T`` for all classes: minimises the log loss of ``softmax(log p / T)`` on one-hot ``y`` (NaN where the
    fit runs to its lower bound: a separable split, :data:`SEPARABLE`)."""
    z = np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0))
    true = np.asarray(y).argmax(1)
    if (z.argmax(1) == true).all():  # every image's top class is right: the loss falls without limit as T -> 0
        return float("nan")

    def nll(lt: float) -> float:
        s = z * np.exp(-lt)
        s = s - s.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(1)) - s[np.arange(len(s)), true]))

    res = minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-6})
    return float("nan") if res.x <= -LOG_T_BOUND + 1e-3 else float(np.exp(res.x))


def fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``sigmoid(a logit(p) + b)`` by maximum likelihood ((1, 0) without both classes; (NaN, NaN)
    where the slope runs past e^4: a separable split, :data:`SEPARABLE`)."""
    keep = ~np.isnan(y)
    if not has_both(y):
        return 1.0, 0.0
    if _separable(y, p):
        return float("nan"), float("nan")
    a, b = _logistic(y[keep], logit(p[keep]))
    return (float("nan"), float("nan")) if not a < np.exp(LOG_T_BOUND) else (a, b)


def _logistic(y: np.ndarray, z: np.ndarray, slope: float | None = None) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``P(y=1) = sigmoid(a z + b)``; with ``slope`` fixed, ``b`` only."""
    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = (slope, w[0]) if slope is not None else (w[0], w[1])
        s = a * z + b
        r = sigmoid(s) - y
        grad = np.array([r.mean()]) if slope is not None else np.array([(r * z).mean(), r.mean()])
        return _binary_nll(y, s), grad

    x0 = np.array([0.0]) if slope is not None else np.array([1.0, 0.0])
    res = minimize(f, x0, jac=True, method="L-BFGS-B")
    return (float(slope), float(res.x[0])) if slope is not None else (float(res.x[0]), float(res.x[1]))


def fit_isotonic(y: np.ndarray, p: np.ndarray) -> tuple[list[float], list[float]]:
    """The knots ``(x, y)`` of a non-decreasing map p -> observed rate (identity without both classes)."""
    from sklearn.isotonic import IsotonicRegression

    keep = ~np.isnan(y)
    if not has_both(y):
        return [0.0, 1.0], [0.0, 1.0]
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[keep].astype(np.float64), y[keep])
    return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration (``model.json["calibration"]``).

    Attributes:
        method: one of :data:`METHODS` other than ``none``.
        task: ``multilabel`` | ``binary`` | ``multiclass`` (multi-class outputs are renormalised).
        labels: the model's labels, in output order.
        params: ``{"temperature": [T...]}`` (one per label; one for multi-class), ``{"a": [...], "b": [...]}``
            (Platt), or ``{"x": [[...]...], "y": [[...]...]}`` (isotonic knots per label).
        fitted_on: where it was fitted: ``{"split": "val", "images": n}``; ``kept``: label -> why its
            probabilities were kept as they are (:data:`SEPARABLE`), where a label's fit was refused.
    """

    FORMAT_VERSION: ClassVar[int] = 1

    method: str
    task: str
    labels: list[str]
    params: dict[str, Any]
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, L), float64, for the model's activation output ``probs`` (N, L)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.labels):
            raise ValueError(f"calibration of {len(self.labels)} labels got probabilities of shape {p.shape}")
        m, q = self.method, self.params
        if m == "temperature" and self.task == "multiclass":
            return _softmax(np.log(np.clip(p, EPS, 1.0)) / q["temperature"][0])
        if m == "temperature":
            out = sigmoid(logit(p) / np.asarray(q["temperature"], dtype=np.float64))
        elif m == "platt":
            out = sigmoid(np.asarray(q["a"]) * logit(p) + np.asarray(q["b"]))
        elif m == "isotonic":
            out = np.stack([np.interp(p[:, j], q["x"][j], q["y"][j]) for j in range(p.shape[1])], axis=1)
        else:
            raise ValueError(f"unknown calibration method {m!r}")
        if self.task == "multiclass":  # one-vs-rest maps do not sum to one
            out = out / np.maximum(out.sum(1, keepdims=True), 1e-12)
        return out

    def summary(self) -> str:
        """One line for reports and logs: the method and its parameters."""
        q = self.params
        kept = self.fitted_on.get("kept") or {}
        note = f" ({', '.join(kept)}: {SEPARABLE})" if kept else ""
        if self.method == "temperature":
            return "temperature scaling, T = " + ", ".join(f"{t:.3g}" for t in q["temperature"]) + note
        if self.method == "platt":
            return "Platt scaling, (a, b) = " + ", ".join(f"({a:.3g}, {b:.3g})" for a, b in zip(q["a"], q["b"],
                                                                                                strict=True)) + note
        return f"isotonic regression ({', '.join(str(len(x)) for x in q['x'])} knots)"

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.FORMAT_VERSION, "method": self.method, "task": self.task,
                "labels": list(self.labels), "params": self.params, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration | None:
        """The record of ``model.json["calibration"]``; None for a run without one (method ``none``, older runs)."""
        if not d or d.get("method", "none") == "none":
            return None
        if d["method"] not in METHODS:
            raise ValueError(f"unknown calibration method {d['method']!r}; known: {', '.join(METHODS)}")
        return cls(d["method"], d["task"], list(d["labels"]), dict(d["params"]), dict(d.get("fitted_on") or {}))


def fit_calibration(method: str, y: np.ndarray, probs: np.ndarray, labels: list[str], task: str,
                    split: str = "val") -> Calibration | None:
    """Fit ``method`` on validation targets ``y`` (N, L; NaN: not labelled) and probabilities (N, L).

    Returns None for ``none``.  A label without both classes in ``y`` keeps its probabilities
    (temperature 1, Platt (1, 0), identity knots).
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    if method == "none":
        return None
    y, p = np.asarray(y, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    cols = range(len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "temperature":
            t = ([fit_temperature_multiclass(y, p)] if task == "multiclass"
                 else [fit_temperature_binary(y[:, j], p[:, j]) for j in cols])
            kept = ([labels[j] for j, v in enumerate(t) if not np.isfinite(v)] if task != "multiclass"
                    else list(labels) if not np.isfinite(t[0]) else [])
            params: dict[str, Any] = {"temperature": [v if np.isfinite(v) else 1.0 for v in t]}
        elif method == "platt":
            ab = [fit_platt(y[:, j], p[:, j]) for j in cols]
            kept = [labels[j] for j, (a, _) in enumerate(ab) if not np.isfinite(a)]
            params = {"a": [a if np.isfinite(a) else 1.0 for a, _ in ab],
                      "b": [b if np.isfinite(b) else 0.0 for _, b in ab]}
        else:
            knots = [fit_isotonic(y[:, j], p[:, j]) for j in cols]
            params = {"x": [x for x, _ in knots], "y": [v for _, v in knots]}
            kept = []
    fitted_on: dict[str, Any] = {"split": split, "images": int(len(y))}
    if kept:
        fitted_on["kept"] = {lab: SEPARABLE for lab in kept}
    return Calibration(method, task, list(labels), params, fitted_on)


# ---- how well calibrated ------------------------------------------------------------------

def reliability_curve(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """Per non-empty bin of ``edges``: mean probability, observed rate and count (NaN targets left out)."""
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    idx = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, len(edges) - 2)
    conf, freq, count = [], [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.any():
            conf.append(float(p[sel].mean()))
            freq.append(float(y[sel].mean()))
            count.append(int(sel.sum()))
    return {"confidence": conf, "observed": freq, "count": count}


def _ece(curve: dict[str, list[float]]) -> float:
    n = np.asarray(curve["count"], dtype=float)
    if not n.sum():
        return float("nan")
    gap = np.abs(np.asarray(curve["observed"]) - np.asarray(curve["confidence"]))
    return float((n * gap).sum() / n.sum())


def calibration_stats(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """How well the probabilities ``p`` of one label match the 0/1 outcomes ``y`` (NaN: left out).

    Returns:
        ``{"n", "brier", "slope", "intercept", "ece_width", "ece_mass", "curve", "curve_mass"}``:
        the Brier score; the calibration slope (``b`` of ``logit P(y) = a + b logit(p)``) and the
        calibration intercept (``a`` with the slope fixed at 1: calibration-in-the-large; 0 and 1
        are perfect); ECE over ``bins`` equal-width bins and over ``bins`` equal-mass (quantile)
        bins; each binning's reliability curve with its counts.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    keep = ~np.isnan(y)
    yk, pk = y[keep], p[keep]
    nan = float("nan")
    out: dict[str, Any] = {"n": int(keep.sum()), "brier": float(np.mean((pk - yk) ** 2)) if len(yk) else nan,
                           "slope": nan, "intercept": nan}
    if has_both(yk):
        z = logit(pk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["slope"] = _logistic(yk, z)[0]
            out["intercept"] = _logistic(yk, z, slope=1.0)[1]
    width = reliability_curve(yk, pk, np.linspace(0, 1, bins + 1))
    mass_edges = np.quantile(pk, np.linspace(0, 1, bins + 1)) if len(pk) else np.linspace(0, 1, bins + 1)
    mass_edges[0], mass_edges[-1] = 0.0, 1.0
    mass = reliability_curve(yk, pk, mass_edges)
    out.update(ece_width=_ece(width), ece_mass=_ece(mass), curve=width, curve_mass=mass)
    return out


def calibration_effect(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, labels: list[str], task: str,
                       method: str, summary: str = "", bins: int = 10) -> dict[str, Any]:
    """:func:`calibration_stats` of each label before (``raw``) and after calibration, on one split.

    Multi-class runs get each class one-vs-rest and a ``top label`` entry (is the arg-max right as
    often as its probability says?).  The dict is what :class:`cxrlab.evaluate.records.CalibrationEffect`
    reads.
    """
    y = np.asarray(y, dtype=np.float64)
    before, after = {}, {}
    for j, lab in enumerate(labels):
        before[lab] = calibration_stats(y[:, j], raw[:, j], bins)
        after[lab] = calibration_stats(y[:, j], calibrated[:, j], bins)
    if task == "multiclass":
        for probs, into in ((raw, before), (calibrated, after)):
            correct = (y.argmax(1) == probs.argmax(1)).astype(float)
            into["top label"] = calibration_stats(correct, probs.max(1), bins)
    return {"method": method, "summary": summary, "bins": bins, "before": before, "after": after}


def calibrator(record: dict[str, Any] | None) -> Any:
    """The ``calibrate`` function of :class:`cxrlab.inference.Predictor` for ``model.json["calibration"]``
    (None for a run without one: its probabilities are the model's own)."""
    cal = Calibration.from_dict(record)
    return None if cal is None else cal.apply
