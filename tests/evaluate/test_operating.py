"""Decisions at a threshold (hand-computed), multi-class CIs, top-label calibration, and p-values
of resampling tests that never print "p = 0"."""

import numpy as np
import pandas as pd
import pytest

from cxrlab.evaluate.evaluate import evaluate_tables, top_label_calibration
from cxrlab.evaluate.operating import confusion_counts, multiclass_class_cis, operating_point, rates
from cxrlab.evaluate.stats import format_p, paired_bootstrap_macro


def test_confusion_and_rates_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, np.nan])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.0, 0.99])
    c = confusion_counts(y, s, 0.5)
    assert c == {"tp": 2, "fp": 1, "tn": 3, "fn": 1}  # the NaN target is left out
    r = rates(**c)
    assert r["accuracy"] == pytest.approx(5 / 7) and r["sensitivity"] == pytest.approx(2 / 3)
    assert r["specificity"] == pytest.approx(3 / 4) and r["ppv"] == pytest.approx(2 / 3)
    assert r["npv"] == pytest.approx(3 / 4)
    assert np.isnan(rates(0, 0, 5, 0)["ppv"])  # nothing predicted positive: PPV undefined, not 0


def test_operating_point_cis_bracket_the_value_and_resample_patients():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    s = np.clip(0.5 * y + rng.normal(0.25, 0.2, 300), 0, 1)
    groups = np.repeat(np.arange(100), 3)
    op = operating_point(y, s, 0.5, n_boot=200, rng=np.random.default_rng(1), groups=groups)
    assert op["confusion"] == confusion_counts(y, s, 0.5)
    for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        assert op[k]["ci_low"] <= op[k]["value"] <= op[k]["ci_high"], k
    n = op["normalised"]
    assert n[0][0] + n[0][1] == pytest.approx(1) and n[1][0] + n[1][1] == pytest.approx(1)
    again = operating_point(y, s, 0.5, n_boot=200, rng=np.random.default_rng(1), groups=groups)
    assert again["ppv"] == op["ppv"]  # the generator decides the resamples


def test_multiclass_cis_and_top_label_calibration():
    true = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    pred = np.array([0, 1, 1, 1, 2, 0, 2, 0])
    cis = multiclass_class_cis(true, pred, 3, n_boot=100, rng=np.random.default_rng(0))
    assert cis["precision"].shape == (3, 2) and (cis["recall"][:, 0] <= cis["recall"][:, 1]).all()
    assert cis["fpr"][1] == pytest.approx(1 / 6)  # class 1 predicted once among the 6 others
    y = np.eye(2)[[0, 0, 1, 1]]
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    ece, curve = top_label_calibration(y, p, bins=10)
    assert sum(curve["count"]) == 4 and 0 <= ece <= 1
    assert curve["observed"] == [1.0, 0.0, 1.0, 1.0]  # bins 0.6, 0.7 (the wrong one), 0.8, 0.9


def _table(y, p, labels):
    t = pd.DataFrame({"image": [f"i{k}" for k in range(len(y))], "patient": [f"p{k}" for k in range(len(y))]})
    for j, lab in enumerate(labels):
        t[lab] = y[:, j]
        t[f"prob_{lab}"] = p[:, j]
    return t


def test_evaluate_tables_binary_has_operating_point_and_multiclass_has_cis():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (80, 1)).astype(float)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, (80, 1)), 0, 1)
    ev = evaluate_tables(_table(y, p, ["A"]), ["A"], "binary", _table(y, p, ["A"]), n_boot=50)
    op = ev["per_label"]["A"]["operating_point"]
    assert op["threshold"] == ev["per_label"]["A"]["threshold"] and sum(op["confusion"].values()) == 80
    assert ev["per_label"]["A"]["ppv"] == pytest.approx(op["ppv"]["value"])
    yc = np.eye(3)[rng.integers(0, 3, 60)]
    pc = np.clip(yc + rng.uniform(0, 0.9, (60, 3)), 0, None)
    pc /= pc.sum(1, keepdims=True)
    mc = evaluate_tables(_table(yc, pc, ["a", "b", "c"]), ["a", "b", "c"], "multiclass", n_boot=50)
    d = mc["per_class"]["a"]
    assert d["auc_ci"][0] <= d["auc"] <= d["auc_ci"][1] and len(d["precision_ci"]) == 2
    assert mc["calibration"]["kind"] == "top-label" and mc["macro_auc"]["ci_low"] <= mc["macro_auc"]["auc"]


def test_bootstrap_p_without_a_crossing_is_below_its_resolution_never_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 2)).astype(float)
    good, bad = y + rng.normal(0, 0.1, y.shape), rng.normal(0, 1, y.shape)
    r = paired_bootstrap_macro(y, good, bad, n_boot=200)
    assert r["p"] == 0 and r["p_resolution"] == pytest.approx(1 / 200) and r["n_boot"] == 200
    text = format_p(r["p"], r["p_resolution"])
    assert text == "p < 0.005 (1/200)" and "p = 0" not in text
    assert format_p(0.0312) == "p = 0.0312" and format_p(float("nan")) == "p = n/a"
    assert format_p(0.0) == "p < 1e-300"
