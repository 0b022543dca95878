"""What a new user read on the run page and found wrong: escaped arrows, "-0.000", a "worst" group among
ties, rows of n/a for one-value attributes, nested brackets, the localisation sentence, the reliability
figure's scales and labels, and jargon never spelled out (findings 5, 9 and 11 of the new-user pass)."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from cxrlab.evaluate.records import CalibrationEffect, Localization, LocalizedClass
from cxrlab.evaluate.subgroups import subgroup_analysis
from cxrlab.report import plots_eval, present
from cxrlab.report.classification import calibration_table
from cxrlab.report.run_report import localization_origin, terms_section
from cxrlab.report.subgroups_report import subgroups_section, threshold_sentence, worst_rows

matplotlib.use("Agg")

RULE = "youden on validation (fixed 0.5 where undefined)"


def _depth(text: str) -> int:
    """The deepest nesting of round brackets in ``text``."""
    depth = most = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        most = max(most, depth)
    return most


def test_a_value_that_rounds_to_zero_has_no_minus_sign():
    assert present.diff(-0.0001) == "+0.000" and present.value(-0.0004) == "0.000"
    assert present.diff_ci(-0.0001, -0.0002, 0.004) == "+0.000 [+0.000, +0.004]"
    assert present.interval(-0.0003, 0.2) == "[0.000, 0.200]" and present.ci(-0.0001, -0.0003, 0.1) == "0.000 [0.000, 0.100]"
    assert present.percent(-1e-5) == "0.0%"
    assert present.diff(-0.0006) == "-0.001" and present.value(-1.5) == "-1.500"  # a real negative keeps its sign


def test_calibration_cells_show_an_arrow_not_an_escaped_entity():
    stats = {"n": 50, "brier": 0.163, "slope": 1.2, "intercept": -0.1, "ece_width": 0.05, "ece_mass": 0.06}
    eff = CalibrationEffect.from_dict({"method": "temperature", "summary": "temperature scaling, T = 1.3",
                                       "before": {"A": stats}, "after": {"A": {**stats, "brier": 0.161}}})
    page = calibration_table(SimpleNamespace(calibration_effect=eff))
    assert "<td>0.163 \u2192 0.161</td>" in page
    assert "&amp;rarr;" not in page and "&rarr; 0.161" not in page


def _tied(n: int = 600, seed: int = 0):
    """Two labels: A separates perfectly in both sexes (every group ties at AUC 1), B has a real gap by sex.

    ``view`` has one value; ``age`` has one group with enough cases and one without.
    """
    rng = np.random.default_rng(seed)
    sex = np.where(np.arange(n) % 2 == 0, "F", "M")
    y = (rng.random((n, 2)) < 0.4).astype(float)
    pa = np.where(y[:, 0] == 1, 0.6 + 0.3 * rng.random(n), 0.1 + 0.3 * rng.random(n))
    strength = np.where(sex == "F", 0.3, 3.0)
    pb = 1 / (1 + np.exp(-(strength * (2 * y[:, 1] - 1) + rng.normal(size=n))))
    age = np.where(np.arange(n) < n - 40, "40-59", "80-119")
    return y, np.stack([pa, pb], axis=1), {"sex": sex, "age": age, "view": np.full(n, "PA")}


@pytest.fixture(scope="module")
def tied():
    y, p, attrs = _tied()
    return subgroup_analysis(y, p, ["A", "B"], {"A": 0.5, "B": 0.5}, attrs, None, n_boot=50, threshold_rule=RULE)


def test_tied_groups_have_no_worst_group_and_the_page_says_no_gap(tied):
    assert tied.groupings["sex"].worst["A"] is None  # both AUC 1.000: neither is worse
    assert tied.groupings["sex"].worst["B"] == "F"  # a real gap is still named
    rows = {(r[0], r[1].split(":")[0].split(" =")[0]): r for r in worst_rows(tied)}
    assert rows[("A", "sex")][1].startswith("sex: no gap")
    assert rows[("B", "sex")][1] == "sex = F"
    page = subgroups_section(tied, {})
    table_a = page[page.index("<h3>A</h3>"):page.index("<h3>B</h3>")]
    assert "(worst)" not in table_a and "-0.000" not in page


def test_one_value_attributes_are_one_line_and_a_missing_age_row_is_explained(tied):
    page = html.unescape(subgroups_section(tied, {}))
    assert "One value only in these images (nothing to compare, no rows): view (PA)." in page
    assert "view = PA" not in page and "x view" not in page  # no rows of n/a, no copies in the intersections
    assert not any(r[1].startswith("age") for r in worst_rows(tied))  # one age group ranked: nothing to rank
    assert "No worst-group row for age (every label): fewer than two of its groups had 30 positives" in page


@pytest.mark.parametrize("rule", [RULE, f"{RULE} (the run's, transported)", "max_f1, sensitivity:0.9 on validation"])
def test_the_threshold_rule_reads_with_one_level_of_brackets(rule):
    said = threshold_sentence(rule)
    assert _depth(said) <= 1 and "on validation (" not in said
    assert "chosen on" in said and "validation split by" in said
    if "transported" in rule:
        assert said.startswith("the run's") and said.endswith("transported unchanged")
    y, p, attrs = _tied(n=200)
    r = subgroup_analysis(y, p, ["A", "B"], {"A": 0.5, "B": 0.5}, {"sex": attrs["sex"]}, None, n_boot=20,
                          threshold_rule=rule)
    intro = re.search(r"<p>(.*?)</p>", subgroups_section(r, {})).group(1)
    assert _depth(intro) <= 1, intro


def _loc(cases: int, **kw) -> Localization:
    return Localization("gradcam", 0.5, 0.1, cases, {"Mass": LocalizedClass.from_dict({"n": cases})}, **kw)


def test_the_localisation_sentence_names_the_split_the_cases_and_the_boxes():
    said = html.unescape(localization_origin(_loc(300), "summary.json", "scored at the end of training"))
    assert "boxes from the dataset's boxes" not in said
    assert "Scored on the test split: 300 cases" in said and "the dataset's own boxes" in said
    assert "Result in <code>summary.json</code>, scored at the end of training." in said
    assert "the boxes of my_boxes.csv" in localization_origin(_loc(12, box_file="my_boxes.csv"), "localize.json")


def test_terms_spell_out_the_jargon_the_page_uses_and_only_that():
    sections = [("Audit", "<p>ECE 0.1, AP 0.4, OOD flagged 3%, mIoU 0.2 at the Otsu level, pointing hit 0.5</p>"),
                ("Figure", "<img src='data:image/png;base64,QUFDIEFQ'>")]
    terms = terms_section(sections)
    for term in ("ECE", "AP", "OOD", "mIoU", "Otsu", "pointing hit"):
        assert f"<b>{term}</b>:" in terms
    assert "<b>Brier</b>" not in terms and "<b>AUC</b>" not in terms  # not on this page: not explained
    assert terms_section([("x", "<p>nothing technical</p>")]) == ""
    assert "anteroposterior" in terms_section([("Subgroups", "<td>view = AP</td><th>AP</th>")])  # AP the view, too


@pytest.fixture
def capture(monkeypatch):
    """The figures the plot functions save (kept open for inspection)."""
    figs = []
    monkeypatch.setattr(plots_eval, "save", lambda fig, path: figs.append(fig) or path)
    return figs


def test_reliability_counts_sit_on_the_bars_panels_share_one_scale_and_each_gives_its_ece_before(capture, tmp_path):
    skewed = {"confidence": [0.095, 0.105, 0.55], "observed": [0.1, 0.12, 0.5], "count": [400, 380, 3],
              "before": {"confidence": [0.2, 0.6], "observed": [0.1, 0.5], "count": [780, 3]}}
    even = {"confidence": [0.2, 0.5, 0.8], "observed": [0.2, 0.5, 0.8], "count": [30, 35, 40],
            "before": {"confidence": [0.3, 0.7], "observed": [0.2, 0.8], "count": [60, 45]}}
    plots_eval.reliability({"Nodule": skewed, "Effusion": even}, tmp_path / "rel.png")
    fig = capture[-1]
    panels = [ax for ax in fig.axes if ax.get_title()]
    strips = [ax for ax in fig.axes if not ax.get_title()]
    assert all("before" in ax.get_title() for ax in panels)  # the before-calibration ECE in every panel
    assert {ax.get_yscale() for ax in strips} == {"log"}  # one panel needs log: every strip is log
    assert all(not ax.texts for ax in panels)  # no count next to a point
    assert sorted(t.get_text() for t in strips[0].texts) == ["3", "380", "400"]
    bars = sorted((p.get_x(), p.get_x() + p.get_width()) for p in strips[0].patches)
    assert all(a[1] <= b[0] for a, b in zip(bars, bars[1:], strict=False))  # 0.095 and 0.105: two bins, no overlap
