"""AUC statistics: weighted AUC, DeLong (against the slow definition and under the null), CIs."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from cxrlab.evaluate.evaluate import evaluate_tables, youden_threshold
from cxrlab.evaluate.stats import (
    bootstrap_aucs,
    delong_cov,
    delong_test,
    holm,
    paired_bootstrap_macro,
    percentile_ci,
    weighted_auc,
)


def test_weighted_auc_equals_sklearn_with_ties_and_repeats():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    s = np.round(y * 0.5 + rng.random(300), 1)  # many ties
    assert weighted_auc(y, s, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(y, s))
    w = rng.integers(0, 4, size=(3, 300)).astype(float)
    for k in range(3):
        rep = np.repeat(np.arange(300), w[k].astype(int))
        assert weighted_auc(y, s, w[k:k + 1])[0] == pytest.approx(roc_auc_score(y[rep], s[rep]))


def slow_delong_var(y, a, b):
    """Structural components by their definition (pairwise psi), O(m n)."""
    def comps(s):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(1), psi.mean(0), psi.mean()
    v10a, v01a, auc_a = comps(a)
    v10b, v01b, auc_b = comps(b)
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    return np.array([auc_a, auc_b]), s10 / m + s01 / n


def test_delong_matches_the_slow_structural_components():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80).astype(float)
    a = np.round(y + rng.normal(0, 1, 80), 1)
    b = np.round(0.5 * y + rng.normal(0, 1, 80), 1)
    aucs, cov = delong_cov(y, np.vstack([a, b]))
    slow_aucs, slow_cov = slow_delong_var(y, a, b)
    assert np.allclose(aucs, slow_aucs) and np.allclose(cov, slow_cov)
    r = delong_test(y, a, b)
    z = (slow_aucs[0] - slow_aucs[1]) / np.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert r["z"] == pytest.approx(z) and r["p"] == pytest.approx(2 * sps.norm.sf(abs(z)))


def test_delong_p_values_are_calibrated_under_the_null():
    rng = np.random.default_rng(2)
    ps = []
    for _ in range(400):
        y = (rng.random(150) < 0.4).astype(float)
        common = y * 0.8 + rng.normal(0, 1, 150)
        a = common + rng.normal(0, 0.7, 150)  # same distribution: equal true AUCs
        b = common + rng.normal(0, 0.7, 150)
        ps.append(delong_test(y, a, b)["p"])
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert sps.kstest(ps, "uniform").pvalue > 0.01


def test_bootstrap_ci_covers_the_true_auc_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    d = 1.0
    true_auc = sps.norm.cdf(d / np.sqrt(2))  # binormal, unit variances
    hits = 0
    sims = 150
    for k in range(sims):
        y = (rng.random(200) < 0.5).astype(float)
        s = rng.normal(0, 1, 200) + d * y
        lo, hi = percentile_ci(bootstrap_aucs(y[:, None], s[:, None], n_boot=300, seed=k)[:, 0])
        hits += lo <= true_auc <= hi
    assert 0.88 <= hits / sims <= 0.99


def test_patient_resampling_keeps_patients_together():
    from cxrlab.evaluate.stats import bootstrap_weights

    groups = np.array(["a", "a", "b", "c", "c", "c"])
    w = bootstrap_weights(6, 50, np.random.default_rng(0), groups)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    assert (w[:, [0, 2, 3]].sum(1) == 3).all()  # 3 patients drawn each time


def test_holm_and_paired_bootstrap():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, (200, 2)).astype(float)
    s = y + rng.normal(0, 1, (200, 2))
    same = paired_bootstrap_macro(y, s, s, n_boot=200)
    assert same["diff_mean"] == 0 and same["p"] == 1
    better = paired_bootstrap_macro(y, y + rng.normal(0, 0.3, (200, 2)), s, n_boot=200)
    assert better["ci_low"] > 0 and better["p"] < 0.05


def test_mcnemar_by_hand_and_paired_accuracy_of_two_tables():
    from cxrlab.evaluate.compare import compare_decisions
    from cxrlab.evaluate.stats import mcnemar

    a = np.array([1] * 50 + [1] * 12 + [0] * 3 + [0] * 35, bool)  # 12 a-only, 3 b-only discordant pairs
    b = np.array([1] * 50 + [0] * 12 + [1] * 3 + [0] * 35, bool)
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"], r["n"]) == (12, 3, 100)
    assert r["diff"] == pytest.approx(0.09)
    assert r["p"] == pytest.approx(2 * sps.binom.cdf(3, 15, 0.5))  # exact two-sided tail
    assert mcnemar(a, a)["p"] == 1.0
    # multi-class: arg-max decisions; binary: each model's own threshold
    y = np.eye(3)[[0, 1, 2, 0]]
    good, bad = y * 0.8 + 0.1, np.roll(y, 1, axis=1) * 0.8 + 0.1
    res = compare_decisions(table(y, good, ["x", "y", "z"]), table(y, bad, ["x", "y", "z"]), ["x", "y", "z"],
                            "multiclass")
    assert (res["accuracy_a"], res["accuracy_b"], res["a_only"]) == (1.0, 0.0, 4)
    yb = np.array([[1.0], [0.0], [1.0], [0.0]])
    sb = np.array([[0.6], [0.4], [0.55], [0.2]])
    res = compare_decisions(table(yb, sb, ["P"]), table(yb, sb, ["P"]), ["P"], "binary", 0.5, 0.58)
    assert (res["accuracy_a"], res["accuracy_b"]) == (1.0, 0.75) and res["threshold_b"] == 0.58


def table(y, p, labels):
    df = pd.DataFrame({"image": [f"{i}.png" for i in range(len(y))], "patient": [str(i // 2) for i in range(len(y))]})
    for j, lab in enumerate(labels):
        df[lab] = y[:, j]
        df[f"prob_{lab}"] = p[:, j]
    return df


def test_evaluate_multilabel_and_multiclass_tables():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (300, 2)).astype(float)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1, (300, 2)))))
    ev = evaluate_tables(table(y, p, ["A", "B"]), ["A", "B"], "multilabel", val=table(y, p, ["A", "B"]), n_boot=100)
    a = ev["per_label"]["A"]
    assert a["auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert a["ci_low"] < a["auc"] < a["ci_high"] and a["threshold_rule"] == "youden(val)"
    assert a["threshold"] == pytest.approx(youden_threshold(y[:, 0], p[:, 0]))
    assert 0 <= a["ece"] < 0.3 and ev["resampling"] == "patients"
    yc = np.eye(3)[rng.integers(0, 3, 90)]
    pc = 0.6 * yc + 0.4 * rng.dirichlet(np.ones(3), 90)
    mc = evaluate_tables(table(yc, pc, ["x", "y", "z"]), ["x", "y", "z"], "multiclass", n_boot=100)
    assert np.array(mc["confusion_matrix"]).sum() == 90
    acc = np.mean(yc.argmax(1) == pc.argmax(1))
    assert mc["accuracy"]["value"] == pytest.approx(acc)
