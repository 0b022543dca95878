"""The prediction-table schema: one row per image, true labels beside ``prob_<label>`` columns.

::

    image, patient[, study, view, source, age, sex, site], <label>..., prob_<label>...[, raw_<label>...]

``prob_`` is what predict and serve return (calibrated when the run has a fitted calibration);
``raw_`` the model's own (uncalibrated) probabilities, only in runs with a fitted calibration.

Training writes these tables (``predictions.csv``, ``predictions_val.csv``),
predict writes the same columns, and evaluation, comparison, ensembles and the
study report read them.  The schema lives here, below both :mod:`cxrlab.run`
and :mod:`cxrlab.evaluate`, so "arrays in, dicts out" evaluation can read a
table without importing the run folder (and with it torch and OpenCV).  It
imports nothing of cxrlab; ``cxrlab.run`` re-exports the names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

#: Optional columns a prediction table carries from the manifest when it has them (subgroup and
#: external analyses read source, age, sex and site from here, not from each dataset's CSV).
EXTRA_COLUMNS: tuple[str, ...] = ("study", "view", "source", "age", "sex", "site")

#: Column prefix of a probability in prediction tables (``prob_<label>``).
PROB_PREFIX = "prob_"


def prob_column(label: str) -> str:
    """The probability column of ``label``."""
    return f"{PROB_PREFIX}{label}"


def prob_columns(labels: list[str]) -> list[str]:
    """The probability columns of ``labels``, in their order."""
    return [prob_column(lab) for lab in labels]


#: Column prefix of the uncalibrated probability (the model's activation) of a run with a fitted
#: calibration: ``prob_<label>`` is then the calibrated one, as predict and serve return it.
RAW_PREFIX = "raw_"


def raw_columns(labels: list[str]) -> list[str]:
    """The uncalibrated probability columns of ``labels`` (``raw_<label>``), in their order."""
    return [f"{RAW_PREFIX}{lab}" for lab in labels]


def prob_labels(columns: Iterable[str]) -> list[str]:
    """The labels a table has probabilities for, in column order (the inverse of :func:`prob_columns`)."""
    return [c.removeprefix(PROB_PREFIX) for c in columns if c.startswith(PROB_PREFIX)]


def prediction_table(frame: pd.DataFrame, y: Any, probs: Any, labels: list[str], raw: Any = None) -> pd.DataFrame:
    """The predictions schema: image, patient (:data:`EXTRA_COLUMNS` present in ``frame``), true label columns,
    ``prob_<label>`` columns."""
    out = pd.DataFrame({"image": frame["image"].to_numpy(), "patient": frame["patient"].to_numpy()})
    for extra in EXTRA_COLUMNS:
        if extra in frame.columns:
            out[extra] = frame[extra].to_numpy()
    for i, lab in enumerate(labels):
        out[lab] = y[:, i]
    for i, lab in enumerate(labels):
        out[prob_column(lab)] = probs[:, i]
    if raw is not None:  # a fitted calibration: prob_ calibrated, raw_ the model's own probabilities
        for c, col in zip(raw_columns(labels), np.asarray(raw).T, strict=True):
            out[c] = col
    return out
