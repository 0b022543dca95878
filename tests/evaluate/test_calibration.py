"""Fitted calibration (temperature, Platt, isotonic) and operating-point rules, on arrays.

The proof rule: an effect planted in synthetic scores (logits made overconfident by a known factor)
is found (the fitted temperature, slope below 1, ECE and Brier fall), and on scores calibrated by
construction it is not (temperature near 1, ECE not improved beyond noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import (
    Calibration,
    calibration_stats,
    fit_calibration,
    sigmoid,
)
from cxrlab.evaluate.evaluate import evaluation_of
from cxrlab.evaluate.operating import at_prevalence, choose_threshold, operating_point, parse_rule
from cxrlab.evaluate.records import CalibrationEffect, Evaluation, OperatingPoint
from cxrlab.evaluate.stats import weighted_auc
from cxrlab.tables import prediction_table


def _scores(n: int, sharpen: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from true logits z; scores sigmoid(sharpen * z): sharpen > 1 is overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < sigmoid(z)).astype(float)
    return y, sigmoid(sharpen * z)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(weighted_auc(y, p, np.ones((1, len(y))))[0])


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_overconfident_scores_are_calibrated_on_held_out_data(method):
    yv, pv = _scores(3000, 3.0, seed=0)  # planted: logits 3x too large
    yt, pt = _scores(3000, 3.0, seed=1)
    cal = fit_calibration(method, yv[:, None], pv[:, None], ["x"], "binary")
    after = cal.apply(pt[:, None])[:, 0]
    b, a = calibration_stats(yt, pt), calibration_stats(yt, after)
    assert b["slope"] < 0.5  # the planted overconfidence is seen
    assert a["ece_width"] < b["ece_width"] / 2 and a["ece_mass"] < b["ece_mass"] / 2
    assert a["brier"] < b["brier"]
    assert abs(a["slope"] - 1) < 0.15 and abs(a["intercept"]) < 0.15
    if method != "isotonic":  # monotone maps keep the ranking: the same AUC
        assert _auc(yt, after) == pytest.approx(_auc(yt, pt), abs=1e-12)
    if method == "temperature":
        assert cal.params["temperature"][0] == pytest.approx(3.0, rel=0.15)


def test_calibrated_scores_are_left_almost_alone():
    yv, pv = _scores(3000, 1.0, seed=2)  # no effect planted
    yt, pt = _scores(3000, 1.0, seed=3)
    cal = fit_calibration("temperature", yv[:, None], pv[:, None], ["x"], "binary")
    assert cal.params["temperature"][0] == pytest.approx(1.0, abs=0.1)
    after = cal.apply(pt[:, None])[:, 0]
    assert abs(calibration_stats(yt, after)["ece_width"] - calibration_stats(yt, pt)["ece_width"]) < 0.02


def test_multiclass_temperature_is_one_for_all_classes_and_rows_sum_to_one():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (2000, 3))
    true = np.array([rng.choice(3, p=r) for r in np.exp(logits) / np.exp(logits).sum(1, keepdims=True)])
    y = np.eye(3)[true]
    p = np.exp(2.5 * logits) / np.exp(2.5 * logits).sum(1, keepdims=True)  # overconfident
    cal = fit_calibration("temperature", y, p, ["a", "b", "c"], "multiclass")
    assert len(cal.params["temperature"]) == 1 and cal.params["temperature"][0] == pytest.approx(2.5, rel=0.2)
    out = cal.apply(p)
    assert np.allclose(out.sum(1), 1) and np.array_equal(out.argmax(1), p.argmax(1))
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_labels_without_both_classes_keep_their_probabilities():
    y = np.c_[np.zeros(50), np.r_[np.ones(25), np.zeros(25)]]
    p = np.random.default_rng(5).random((50, 2))
    for method in ("temperature", "platt", "isotonic"):
        out = fit_calibration(method, y, p, ["never", "some"], "multilabel").apply(p)
        assert np.allclose(out[:, 0], p[:, 0], atol=1e-6)
    assert fit_calibration("none", y, p, ["a", "b"], "multilabel") is None
    assert Calibration.from_dict(None) is None and Calibration.from_dict({"method": "none"}) is None


# ---- operating-point rules -----------------------------------------------------------------

@pytest.mark.parametrize("rule", ["sensitivity:0.9", "specificity:0.9", "ppv:0.8", "max_f1", "youden"])
def test_each_rule_reaches_its_target_on_validation(rule):
    yv, pv = _scores(1500, 1.0, seed=6)
    c = choose_threshold(yv, pv, rule)
    assert c.reached and 0 < c.threshold <= 1
    pred, pos = pv >= c.threshold, yv == 1
    sens, spec = pred[pos].mean(), (~pred[~pos]).mean()
    ppv = pos[pred].mean()
    name, target = parse_rule(rule)
    got = {"sensitivity": sens, "specificity": spec, "ppv": ppv}.get(name)
    if target is not None:
        assert got >= target and c.value == pytest.approx(got)
        # the most useful such point: one step further misses the target
        others = np.unique(pv)
        if name == "sensitivity":
            nxt = others[others > pv[pred].min()]  # the next stricter decision
            assert not len(nxt) or (pv[pos] >= nxt.min()).mean() < target
    if name == "youden":  # the best J of every threshold
        js = [(pv[pos] >= t).mean() + (pv[~pos] < t).mean() - 1 for t in np.unique(pv)]
        assert c.value == pytest.approx(max(js))
    if name == "max_f1":
        f1s = [2 * ((pv >= t) & pos).sum() / ((pv >= t).sum() + pos.sum()) for t in np.unique(pv)]
        assert c.value == pytest.approx(max(f1s))


def _tables(seed: int, n: int = 600) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = []
    for s in (seed, seed + 1):
        y, p = _scores(n, 1.0, seed=s)
        frame = pd.DataFrame({"image": [f"{s}_{i}" for i in range(n)], "patient": [f"{s}_{i // 2}" for i in range(n)]})
        out.append(prediction_table(frame, y[:, None], p[:, None], ["Effusion"]))
    return out[0], out[1]


def test_rule_test_value_is_reported_with_a_ci_and_the_validation_value():
    test, val = _tables(7)
    ev = evaluation_of(test, ["Effusion"], "binary", val, n_boot=200, rules="sensitivity:0.9")
    op = ev.per_label["Effusion"].operating_point
    assert op.rule == "sensitivity:0.9" and op.validation >= 0.9
    sens = op.rates["sensitivity"]
    assert sens.low <= sens.value <= sens.high and sens.high - sens.low > 0
    assert ev.per_label["Effusion"].threshold_rule == "sensitivity:0.9(val)"
    back = Evaluation.from_dict(ev.to_dict())
    assert back.per_label["Effusion"].operating_point == op


def test_unreachable_target_is_one_line_naming_label_and_best_value():
    test, val = _tables(9)
    top = val["prob_Effusion"].nlargest(5).index  # the five most confident are negatives: no PPV near 1
    val.loc[top, "Effusion"] = 0.0
    with pytest.raises(CxrlabError) as e:
        evaluation_of(test, ["Effusion"], "binary", val, n_boot=20, rules={"Effusion": "ppv:0.99"})
    msg = str(e.value)
    assert "\n" not in msg and "Effusion" in msg and "ppv 0.99" in msg and "best 0." in msg
    with pytest.raises(CxrlabError, match="not a label"):
        evaluation_of(test, ["Effusion"], "binary", val, n_boot=20, prevalence={"Mass": 0.1})


def test_ppv_and_npv_at_a_deployment_prevalence():
    # hand-computed: sens 0.8, spec 0.9 at prevalence 0.05 -> PPV 0.04/(0.04+0.095), NPV 0.855/(0.855+0.01)
    got = at_prevalence(0.8, 0.9, 0.05)
    assert float(got["ppv"]) == pytest.approx(0.04 / 0.135) and float(got["npv"]) == pytest.approx(0.855 / 0.865)
    y, p = _scores(800, 1.0, seed=11)
    op = operating_point(y, p, 0.5, n_boot=200, prevalence=0.05)
    direct = at_prevalence(op["sensitivity"]["value"], op["specificity"]["value"], 0.05)
    assert op["ppv_at_prevalence"]["value"] == pytest.approx(float(direct["ppv"]))
    lo, hi = op["ppv_at_prevalence"]["ci_low"], op["ppv_at_prevalence"]["ci_high"]
    assert lo < op["ppv_at_prevalence"]["value"] < hi
    assert op["ppv_at_prevalence"]["value"] < op["ppv"]["value"]  # the test split's prevalence is ~0.5
    rec = OperatingPoint.from_dict(op)
    assert rec.prevalence == 0.05 and rec.adjusted["npv_at_prevalence"].has_ci


def test_evaluation_reports_calibration_before_and_after():
    y, p = _scores(1000, 3.0, seed=12)
    frame = pd.DataFrame({"image": [str(i) for i in range(1000)], "patient": [str(i) for i in range(1000)]})
    cal = fit_calibration("temperature", y[:, None], p[:, None], ["x"], "binary")
    table = prediction_table(frame, y[:, None], cal.apply(p[:, None]), ["x"], raw=p[:, None])
    ev = evaluation_of(table, ["x"], "binary", table, n_boot=20, calibration=("temperature", cal.summary()))
    eff = ev.calibration_effect
    assert eff.method == "temperature" and eff.after["x"].ece_width < eff.before["x"].ece_width
    assert sum(eff.before["x"].curve["count"]) == 1000 and sum(eff.after["x"].curve_mass["count"]) == 1000
    assert CalibrationEffect.from_dict(eff.to_dict()) == eff
    plain = evaluation_of(table.drop(columns=["raw_x"]), ["x"], "binary", table, n_boot=20).calibration_effect
    assert plain.method == "none" and plain.before == plain.after


def test_a_separable_validation_split_keeps_its_probabilities_and_its_ranks():
    """Every positive above every negative: the log loss falls without limit as T shrinks, the fit ran to
    T = e^-4 and saturated the probabilities to 0 and 1 in float32 (ties: AUC 0.9999 -> 0.997 on the run's
    own test split, 0.966 -> 0.500 on another site).  Such a label is kept as it was, and says so."""
    from cxrlab.evaluate.calibration import SEPARABLE, fit_calibration
    from cxrlab.evaluate.metrics import roc_auc

    rng = np.random.default_rng(0)
    n = 400
    y_val = np.r_[np.zeros(n), np.ones(n)]
    sep = np.r_[rng.uniform(0.05, 0.45, n), rng.uniform(0.55, 0.95, n)]  # separable at 0.5
    mixed = np.clip(0.5 + 0.3 * (y_val - 0.5) + rng.normal(0, 0.15, 2 * n), 0.01, 0.99)
    for method in ("temperature", "platt"):
        cal = fit_calibration(method, np.c_[y_val, y_val], np.c_[sep, mixed], ["A", "B"], "multilabel")
        assert cal.fitted_on.get("kept") == {"A": SEPARABLE}, (method, cal)
        test = np.c_[rng.uniform(0.3, 0.7, 500), rng.uniform(0.3, 0.7, 500)]
        y_test = (test[:, 0] + rng.normal(0, 0.1, 500) > 0.5).astype(float)
        out = cal.apply(test).astype(np.float32)  # what the Predictor returns
        np.testing.assert_array_equal(out[:, 0], test[:, 0].astype(np.float32))  # label A untouched
        assert roc_auc(y_test, out[:, 0]) == pytest.approx(roc_auc(y_test, test[:, 0]), abs=1e-12)
        assert not np.allclose(out[:, 1], test[:, 1])  # label B is calibrated as before
        assert "A: validation separable" in cal.summary()
    multi = fit_calibration("temperature", np.eye(3)[np.repeat([0, 1, 2], 50)],
                            np.eye(3)[np.repeat([0, 1, 2], 50)] * 0.6 + 0.4 / 3, ["a", "b", "c"], "multiclass")
    assert multi.params["temperature"] == [1.0] and set(multi.fitted_on["kept"]) == {"a", "b", "c"}
