"""The subgroup analysis on synthetic scores: a known gap is found, none is not; the resamples are exact."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import SubgroupResult
from cxrlab.evaluate.stats import percentile_ci, weighted_auc
from cxrlab.evaluate.subgroups import age_groups, as_groups, subgroup_analysis


def _data(n: int = 2400, gap: bool = True, seed: int = 0):
    """Two labels; in group F the first label's signal is weak when ``gap``; 3 images per patient."""
    rng = np.random.default_rng(seed)
    patient = np.arange(n) // 3
    sex = np.where(rng.random(n // 3 + 1) < 0.5, "F", "M")[patient]
    view = np.where(rng.random(n) < 0.5, "PA", "AP")
    y = (rng.random((n, 2)) < 0.3).astype(float)
    strength = np.where((sex == "F") & gap, 0.4, 2.0)
    logits = np.stack([strength, np.full(n, 2.0)], axis=1) * y - 1 + rng.normal(size=(n, 2))
    return y, 1 / (1 + np.exp(-logits)), patient, {"sex": sex, "view": view}


def test_known_gap_is_found_and_none_is_not():
    y, p, pat, attrs = _data(gap=True)
    r = subgroup_analysis(y, p, ["A", "B"], {"A": 0.4, "B": 0.4}, attrs, pat, n_boot=300)
    f = r.groupings["sex"].groups["F"].per_label
    assert f["A"].vs_rest["auc"].diff.high < 0 and f["A"].vs_rest["auc"].p < 0.01
    assert f["A"].vs_rest["tpr"].diff.high < 0  # at the one shared threshold, F's positives are missed more
    assert f["B"].vs_rest["auc"].diff.low <= 0 <= f["B"].vs_rest["auc"].diff.high  # label B: no gap
    assert r.groupings["sex"].worst["A"] == "F"
    r0 = subgroup_analysis(*_data(gap=False)[:2], ["A", "B"], {"A": 0.4, "B": 0.4}, _data(gap=False)[3],
                           _data(gap=False)[2], n_boot=300)
    g0 = r0.groupings["sex"].groups["F"].per_label["A"].vs_rest["auc"].diff
    assert g0.low <= 0 <= g0.high
    assert set(r.groupings) == {"sex", "view", "sex x view"}
    assert set(r.groupings["sex x view"].groups) == {"F / AP", "F / PA", "M / AP", "M / PA"}


def test_point_values_and_the_one_threshold_per_group():
    y, p, pat, attrs = _data(n=600)
    r = subgroup_analysis(y, p, ["A", "B"], {"A": 0.37, "B": 0.52}, attrs, pat, n_boot=50)
    for name in ("F", "M"):
        m = attrs["sex"] == name
        gl = r.groupings["sex"].groups[name].per_label["A"]
        auc = weighted_auc(y[m, 0], p[m, 0], np.ones((1, int(m.sum()))))[0]
        assert gl.metrics["auc"].value == pytest.approx(auc, abs=1e-6)
        pos = y[m, 0] == 1
        assert gl.metrics["tpr"].value == pytest.approx(np.mean(p[m, 0][pos] >= 0.37))
        assert gl.metrics["fpr"].value == pytest.approx(np.mean(p[m, 0][~pos] >= 0.37))
        rest = weighted_auc(y[~m, 0], p[~m, 0], np.ones((1, int((~m).sum()))))[0]
        assert gl.vs_rest["auc"].diff.value == pytest.approx(auc - rest, abs=1e-6)
        assert r.groupings["sex"].groups[name].patients == len(np.unique(pat[m]))


@pytest.mark.parametrize("bins", [4096, 64])
def test_resampled_aucs_match_the_exact_patient_bootstrap(bins):
    """Same patient weights: the interval equals the exact weighted AUCs' (within 0.002 with 64 score bins)."""
    y, p, pat, attrs = _data(n=900)
    k = 200
    r = subgroup_analysis(y[:, :1], p[:, :1], ["A"], {"A": 0.4}, {"sex": attrs["sex"]}, pat, intersections=False,
                          n_boot=k, chunk=k, max_bins=bins)
    _, inv = np.unique(pat.astype(str), return_inverse=True)  # patients in the analysis' order
    n_pat = inv.max() + 1
    w = np.random.default_rng(0).multinomial(n_pat, np.full(n_pat, 1 / n_pat), size=k)[:, inv].astype(float)
    m = attrs["sex"] == "F"
    lo, hi = percentile_ci(weighted_auc(y[m, 0], p[m, 0], w[:, m]))
    est = r.groupings["sex"].groups["F"].per_label["A"].metrics["auc"]
    tol = 1e-5 if bins > 900 else 2e-3
    assert est.low == pytest.approx(lo, abs=tol) and est.high == pytest.approx(hi, abs=tol)


def test_small_groups_are_flagged_not_ranked_and_the_record_round_trips():
    y, p, pat, attrs = _data(n=900)
    attrs["site"] = np.where(np.arange(900) < 60, "tiny", "big")
    r = subgroup_analysis(y, p, ["A", "B"], {"A": 0.4, "B": 0.4}, attrs, pat, n_boot=40)
    tiny = r.groupings["site"].groups["tiny"].per_label["A"]
    assert tiny.flagged and tiny.positives < 30
    assert r.groupings["site"].worst["A"] is None  # one ranked group: nothing to rank
    assert "auc" not in tiny.vs_median  # fewer than two ranked groups: no median group
    back = SubgroupResult.from_dict(r.to_dict())
    assert back == r


def test_age_bins_and_missing_values():
    ages = np.array([5, 39.5, 40, 79, np.nan])
    assert list(age_groups(ages, [0, 40, 80])) == ["0-39", "0-39", "40-79", "40-79", "unknown"]
    with pytest.raises(CxrlabError, match=r"do not cover 1 images \(ages 95 to 95"):
        age_groups(np.array([20, 95]), [0, 40, 80])
    with pytest.raises(CxrlabError, match="increasing"):
        age_groups(ages, [40, 0])
    assert list(as_groups(["F", "", None, float("nan"), " M "])) == ["F", "unknown", "unknown", "unknown", "M"]


def test_phantom_subgroup_gap_fades_only_that_group(tmp_path):
    import pandas as pd

    from cxrlab.data.phantom_dataset import write_phantom
    from cxrlab.data.phantom_layouts.subgroup import SubgroupGap

    clean = write_phantom(tmp_path / "clean", n=30, size=32, seed=2, workers=1)
    faded = write_phantom(tmp_path / "faded", n=30, size=32, seed=2, workers=1, subgroup_gap="sex=F:0.5")
    entry = (clean / "Data_Entry_2017.csv").read_text()
    assert (faded / "Data_Entry_2017.csv").read_text() == entry  # same labels, ages and sexes
    table = pd.read_csv(clean / "Data_Entry_2017.csv", index_col=False)
    changed = {row["Image Index"]: (clean / "images" / row["Image Index"]).read_bytes()
               != (faded / "images" / row["Image Index"]).read_bytes() for _, row in table.iterrows()}
    lesion = table["Finding Labels"] != "No Finding"
    female = table["Patient Gender"] == "F"
    assert not any(changed[i] for i in table.loc[~female, "Image Index"])  # the other group: byte-identical
    assert all(changed[i] for i in table.loc[female & lesion, "Image Index"])  # the group's lesions: fainter
    for bad in ("sex=F", "sex=F:1.5", "race=x:0.5", "age=old:0.5"):
        with pytest.raises(CxrlabError, match="subgroup-gap"):
            SubgroupGap.parse(bad)
