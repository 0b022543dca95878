import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrlab.evaluate.metrics import macro, per_label_auc, roc_auc


def test_auc_equals_sklearn_and_ignores_nan_targets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 3)).astype(float)
    s = y * 0.5 + rng.random((200, 3))
    aucs = per_label_auc(y, s, ["a", "b", "c"])
    for i, k in enumerate("abc"):
        assert aucs[k] == pytest.approx(roc_auc_score(y[:, i], s[:, i]))
    y2 = y.copy()
    y2[:50, 0] = np.nan
    assert roc_auc(y2[:, 0], s[:, 0]) == pytest.approx(roc_auc_score(y[50:, 0], s[50:, 0]))


def test_single_class_auc_is_nan_with_warning_and_macro_skips_it():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        v = roc_auc(np.ones(5), np.arange(5.0))
    assert np.isnan(v) and any("undefined" in str(x.message) for x in w)
    assert macro({"a": 0.8, "b": float("nan"), "c": 0.6}) == pytest.approx(0.7)
