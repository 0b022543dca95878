"""One presentation layer: one spelling of a value, a CI and a p-value on every page; one CSS; figure names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cxrlab import cli_show
from cxrlab.evaluate.records import Estimate, Evaluation
from cxrlab.report import card, html, present, study
from cxrlab.report.classification import classification_section
from cxrlab.run import RunFolder

SRC = Path(__file__).resolve().parents[2] / "src" / "cxrlab"

#: A binary run's evaluation.json, as cxrlab writes it.
BINARY = {
    "format_version": 2, "task": "binary", "n": 40, "n_boot": 200, "resampling": "patients",
    "per_label": {"Pneumonia": {
        "auc": 0.8123, "ci_low": 0.7701, "ci_high": 0.8512, "positives": 20, "average_precision": 0.79,
        "threshold": 0.42, "threshold_rule": "youden(val)", "sensitivity": 0.8, "specificity": 0.7, "ppv": 0.73,
        "ece": 0.05, "operating_point": {
            "threshold": 0.42, "confusion": {"tp": 16, "fp": 6, "tn": 14, "fn": 4}, "n_boot": 200,
            "normalised": [[0.7, 0.3], [0.2, 0.8]],
            **{k: {"value": 0.75, "ci_low": 0.61, "ci_high": 0.86}
               for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv")}}}},
    "macro_auc": {"auc": 0.8123, "ci_low": 0.7701, "ci_high": 0.8512},
    "micro_auc": {"auc": 0.8123, "ci_low": 0.7701, "ci_high": 0.8512, "n_boot": 200},
}
CI = "0.812 [0.770, 0.851]"


def test_values_cis_pvalues_and_differences_have_one_spelling():
    assert present.value(0.81234) == "0.812" and present.value(None) == "n/a" and present.value(math.nan) == "n/a"
    assert present.value(12) == "12" and present.value("text") == "text"
    assert present.ci(0.8123, 0.7701, 0.8512) == CI == present.ci(Estimate(0.8123, 0.7701, 0.8512))
    assert present.ci(0.8123) == "0.812" and present.ci(math.nan, 0.1, 0.2) == "n/a"
    assert present.diff_ci(0.0123, -0.0101, 0.0345) == "+0.012 [-0.010, +0.035]"
    assert present.pvalue(0.0004) == "< 0.001" and present.pvalue(0.012345) == "0.0123"
    assert present.pvalue(0.5) == "0.5" and present.pvalue(None) == "n/a"
    assert present.pvalue(0.0, 1 / 50) == "< 0.02 (1/50)"  # a resampling p with no crossing: p < 1/B
    assert present.pvalue(0.0, 1 / 5000) == "< 0.001"  # below the floor, whatever B
    assert present.p_text(0.0004) == "p < 0.001" and present.p_text(0.0312) == "p = 0.0312"
    assert present.percent(0.125) == "12.5%" and present.count_share(3, 0.25) == "3 (25.0%)"


def test_the_run_page_the_card_the_study_page_and_the_terminal_write_a_ci_alike(tmp_path, capsys):
    ev = Evaluation.from_dict(BINARY)
    page = classification_section(ev, "binary", RunFolder(tmp_path))
    assert CI in page and "(0.770-0.851)" not in page
    assert "0.750 [0.610, 0.860]" in page  # the rates at the threshold: one cell, same spelling
    md = "\n".join(card._metrics({"task": "binary", "metrics": ev.card_dict()}))
    assert f"Pneumonia AUC {CI}" in md and "(0.770-0.851)" not in md
    _, rows = study.results_table({"labels": ["Pneumonia"], "baseline": "a", "cells": {"a": {
        "task": "binary", "labels": ["Pneumonia"], "per_label": BINARY["per_label"]}}})
    assert rows[0][-1] == CI  # the study page's cell, read through the StudyResult record
    cli_show.console.file = None  # rich writes to the current sys.stdout (captured)
    cli_show.evaluation(Path("runs/x"), BINARY, "binary")
    out = " ".join(capsys.readouterr().out.split())
    assert CI in out and "0.770-0.851" not in out and "accuracy 0.750 [0.610, 0.860]" in out


def test_p_values_follow_one_rule_on_the_study_page_and_the_terminal(capsys):
    assert study._p(0.0004) == "< 0.001" and study._p(0.0123) == "0.0123"  # was "4.0e-04" and "0.012"
    cli_show.comparison({"run_a": "a", "run_b": "b", "n": 10, "note": "",
                         "per_label": {"A": {"auc_a": 0.8, "auc_b": 0.7, "diff": 0.1, "se": 0.02, "p": 0.0004,
                                             "p_holm": 0.0004}},
                         "macro_auc_difference": {"diff": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p": 0.0,
                                                  "p_resolution": 0.02, "n_boot": 50}})
    out = " ".join(capsys.readouterr().out.split())
    assert "< 0.001" in out and "p < 0.02 (1/50)" in out and "+0.1000 [+0.0500, +0.1500]" in out


def test_one_stylesheet_for_every_page():
    css = (SRC / "report" / "page.css").read_text()
    assert html.CSS == css and "border-collapse" in css
    holders = [p for p in SRC.rglob("*.py") if "border-collapse" in p.read_text()]
    assert holders == []  # no page module carries its own CSS
    page = html.page("t", ["<p>x</p>"])
    assert f"<style>{css}</style>" in page
    assert "_CSS" not in (SRC / "report" / "study.py").read_text()  # the study page reads html.CSS too


def test_the_run_folder_names_every_figure(tmp_path):
    run = RunFolder(tmp_path)
    assert run.figure("roc") == tmp_path / "figures" / "roc.png"
    assert run.figure("cam_overlays", "gradcam_bbox") == tmp_path / "figures" / "cam_overlays_gradcam_bbox.png"
    with pytest.raises(ValueError, match="unknown figure"):
        run.figure("rocs")
    run.localization_file("gradcam++_my_boxes").write_text("{}")
    assert list(run.localization_results()) == ["gradcam++_my_boxes"]
    # no figure file name is spelt outside the run folder by the modules that draw or embed them
    for rel in ("report/run_report.py", "report/classification.py", "workflows/localize.py",
                "workflows/uncertainty.py"):
        text = (SRC / rel).read_text()
        assert not any(f'"{name}.png"' in text or f"{name}_{{key}}.png" in text for name in RunFolder.FIGURES), rel
