"""The OOD threshold with few validation images (issue 16.6): a rule that accounts for n, says n, warns
below 200, and a self-test at fit time (noise and a constant image through the run's model) recorded in
ood.json, shown by the card and predict when it fails."""

import json

import numpy as np
import pytest

from conftest import run_cli, train_tiny
from cxrlab.evaluate.ood import (
    MIN_VAL,
    describe,
    fit_gaussian,
    fit_ood,
    mahalanobis,
    threshold_rule,
)


def _gauss(n, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.fixture(scope="module")
def gaussian():
    """A Gaussian summary and the 99th percentile of in-distribution scores (from 200k draws)."""
    g = fit_gaussian(_gauss(2000))
    truth = mahalanobis(_gauss(200_000, seed=1), g)
    return g, truth, float(np.quantile(truth, 0.99))


def test_small_validation_is_the_maximum_with_its_flag_rate_n_and_a_warning():
    train, val = _gauss(400), _gauss(47, seed=5)
    s = fit_ood(train, val)
    scores = mahalanobis(val, s)
    assert s["n_val"] == 47 and s["small_validation"] and 47 < MIN_VAL
    assert s["threshold"] == pytest.approx(scores.max()) and s["threshold_rank"] == 47
    assert s["expected_flag_rate"] == pytest.approx(1 / 48)  # not the 1% a percentile suggests
    assert s["percentile_upper"] is None  # 47 scores cannot bound the 99th percentile at 95%
    assert s["max_covers_percentile"] == pytest.approx(1 - 0.99**47)
    assert any("only 47 validation images" in w for w in s["warnings"])
    assert "47 validation images" in describe(s)["note"]
    json.dumps(s)  # the summary stays JSON
    big = fit_ood(train, _gauss(2 * MIN_VAL, seed=6))
    assert not big["small_validation"] and big["warnings"] == [] and describe(big)["note"] is None
    assert big["percentile_upper"] >= big["threshold"] >= big["percentile_estimate"] * 0.999


def test_threshold_keeps_the_flag_rate_at_most_nominal_where_a_plain_percentile_does_not(gaussian):
    g, truth, _ = gaussian
    new, old = [], []
    for rep in range(300):  # 300 validation sets of 120 in-distribution images
        scores = mahalanobis(_gauss(120, seed=100 + rep), g)
        rule = threshold_rule(scores, 99.0)
        new.append(np.mean(truth > rule["threshold"]))
        old.append(np.mean(truth > np.percentile(scores, 99.0)))
    assert np.mean(new) <= 0.0105  # conformal: at most (n + 1 - k) / (n + 1) = 1/121 in expectation
    assert np.mean(old) > 0.0125  # the plain percentile flags ~1.8% of in-distribution images at n = 120


def test_upper_bound_covers_the_true_percentile_at_its_confidence(gaussian):
    g, _, q99 = gaussian
    covered, est = [], []
    for rep in range(300):
        rule = threshold_rule(mahalanobis(_gauss(400, seed=1000 + rep), g), 99.0)
        covered.append(rule["percentile_upper"] >= q99)
        est.append(rule["percentile_estimate"] >= q99)
    assert np.mean(covered) >= 0.92  # nominal 0.95 (binomial sd over 300 sets ~0.013)
    assert np.mean(est) < 0.75  # the point estimate alone is below the truth about half the time


@pytest.fixture(scope="module")
def ood_run(tiny_phantom, tmp_path_factory):
    from cxrlab.run import RunFolder

    path = train_tiny(tiny_phantom, tmp_path_factory.mktemp("ood_runs"), "oodsmall", seed=4)
    return RunFolder(path)


def test_training_records_the_self_test_through_the_runs_preprocessing_and_model(ood_run):
    from cxrlab.workflows.common import open_model
    from cxrlab.workflows.ood import open_scorer, probe_images

    s = ood_run.read_json(ood_run.ood_file)
    probes = s["self_test"]["probes"]
    assert set(probes) == {"uniform noise", "constant grey image"}
    assert s["reliable"] == all(p["flagged"] for p in probes.values()) == s["self_test"]["passed"]
    assert s["n_val"] == len(ood_run.read_split()["val"]) and s["small_validation"]
    rec = open_model(ood_run).record
    scores, flags = open_scorer(ood_run).score(np.stack(list(probe_images(rec.preprocess, seed=4).values())))
    assert np.allclose(scores, [p["score"] for p in probes.values()], rtol=1e-4)  # the same path as predict
    assert list(flags) == [p["flagged"] for p in probes.values()]


def test_a_failed_self_test_marks_the_run_unreliable_in_ood_json_card_and_predict(ood_run, tiny_phantom):
    from cxrlab.workflows.card import write_card
    from cxrlab.workflows.common import open_model
    from cxrlab.workflows.ood import _images_of_run, fit_ood, probe_images

    opened = open_model(ood_run)
    train, val = _images_of_run(ood_run, seed=0)
    probes = np.stack(list(probe_images(opened.record.preprocess, seed=0).values()))
    # validation that holds the probes themselves: the threshold reaches them, so they pass as "in range"
    s = fit_ood(ood_run, opened.predictor, train, np.concatenate([val, probes]), seed=0)
    assert s["reliable"] is False and not all(p["flagged"] for p in s["self_test"]["probes"].values())
    assert json.loads(ood_run.ood_file.read_text())["reliable"] is False
    assert any("unreliable" in w for w in s["warnings"])
    write_card(ood_run.path, fit_missing_ood=False)
    card = ood_run.card_file.read_text()
    assert "the OOD check is unreliable for this run" in card and f"only {len(val) + 2} validation" in card
    assert json.loads(ood_run.metadata_file.read_text())["ood"]["reliable"] is False
    img = sorted((tiny_phantom / "images").glob("*.png"))[0]
    r = run_cli("predict", ood_run.path, "-i", img)
    assert r.exit_code == 0, r.output
    assert "unreliable for this run" in r.stdout
