"""The OOD leaf: Mahalanobis distance from a compact Ledoit-Wolf summary, threshold at a validation percentile."""

import json

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.ood import describe, fit_gaussian, fit_ood, flags, mahalanobis


def _data(n, d=12, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(d, d))  # the same correlated Gaussian for every call
    return rng.normal(size=(n, d)) @ mix + shift


def test_compact_summary_equals_full_mahalanobis_and_survives_json():
    train, x = _data(400), _data(50, seed=1)
    s = json.loads(json.dumps(fit_gaussian(train)))
    lw = LedoitWolf().fit(train)
    d = x - lw.location_
    full = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(lw.covariance_), d))
    assert np.allclose(mahalanobis(x, s), full, rtol=1e-4)
    few = fit_gaussian(train, max_components=4)  # the rest of the spectrum shares one variance
    assert few["components"] == 4 and len(few["axes"]) == 4
    assert np.corrcoef(mahalanobis(x, few), full)[0, 1] > 0.7


def test_threshold_flags_about_one_percent_in_distribution_and_shifted_points():
    s = fit_ood(_data(2000), _data(2000, seed=1), percentile=99)
    assert s["val_flag_rate"] == pytest.approx(0.01, abs=0.002)
    same = flags(mahalanobis(_data(4000, seed=2), s), s).mean()
    far = flags(mahalanobis(_data(200, seed=3, shift=8.0), s), s).mean()
    assert 0.003 < same < 0.025 and far > 0.95
    assert "mean" not in describe(s) and describe(s)["threshold"] == s["threshold"]


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(CxrlabError, match="at least 2 training"):
        fit_ood(_data(1), _data(5))
    with pytest.raises(CxrlabError, match="NaN"):
        fit_ood(np.full((5, 3), np.nan), _data(5, d=3))
    s = fit_ood(_data(50), _data(20))
    with pytest.raises(CxrlabError, match="do not match"):
        mahalanobis(np.zeros((2, 5)), s)
    with pytest.raises(CxrlabError, match="percentile"):
        fit_ood(_data(50), _data(20), percentile=100)
