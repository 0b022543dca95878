"""Every shipped study preset runs its phantom form end to end and writes a complete report."""

import json

import pytest

from cxrlab.studies.spec import list_presets, load_study
from cxrlab.workflows.study import run_study

PRESETS = sorted(list_presets())
# cross-site presets (sites:) run their phantom form in tests/workflows/test_cross_site.py, with the matrix checked
PRESETS = [p for p in PRESETS if not load_study(p)[0].sites]
# CI runs these shortened; their full phantom forms (Wollek 10.5 min, Witon 5 min) are measured in docs/studies.md
SHORT = {"wollek2023_resolution": ["train.epochs=2", "explain.max_images=20", "evaluate.n_boot=50"],
         "witon_cxr5": ["train.epochs=2", "evaluate.n_boot=50"]}


def test_the_paper_presets_ship():
    assert {"wollek2023_resolution", "sinha2025_chexpert", "kermany2025_pneumonia", "cxr14_fusion_project",
            "witon_cxr5"} <= set(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_phantom_form_runs_end_to_end(preset, tmp_path):
    spec, _ = load_study(preset)
    report = run_study(preset, overrides=SHORT.get(preset, []), phantom=True, out=tmp_path)
    folder = report.parent
    data = json.loads((folder / "study.json").read_text())
    expected = set(spec.phantom.only) or {c.name for c in spec.grid()}
    assert expected <= set(data["cells"]), f"cells missing: {expected - set(data['cells'])}"
    assert not data["missing"] and data["phantom"]
    assert data["comparisons"], "no test against the baseline"
    for name in expected:
        row = data["cells"][name]
        head = row["accuracy"] if row["task"] == "multiclass" else row["macro_auc"]
        assert head and head.get("auc", head.get("value")) is not None, name
    html = report.read_text()
    assert "Results per cell" in html and "Tests against the baseline" in html
    assert "data:image/png;base64," in html  # at least one embedded plot
    md = (folder / "report.md").read_text()
    assert "## Results per cell" in md and "## Tests against the baseline" in md
    if {row["task"] for row in data["cells"].values()} & {"binary", "multiclass"}:  # paired accuracy tests
        assert all(c.get("accuracy") and 0 <= c["accuracy"]["p"] <= 1 for c in data["comparisons"])
        assert "McNemar" in html and "Confusion matrices" in html
    if any(row["task"] == "binary" for row in data["cells"].values()):  # seed 002: val-chosen threshold
        assert "Operating point (binary cells)" in html and "TN / FP / FN / TP" in md
    if spec.post:  # e.g. the frontal + lateral study ensemble: one extra cell per trained cell
        assert any("+" in name for name in data["cells"])
    published = [c for c in spec.published if c in data["cells"]]
    if published:
        assert "Published vs ours" in html


def test_published_accuracy_sits_beside_our_accuracy():
    from cxrlab.report.study import published_table

    cell = {"task": "multiclass", "accuracy": {"value": 0.85, "ci_low": 0.8, "ci_high": 0.9},
            "macro_auc": {"auc": 0.9, "ci_low": 0.85, "ci_high": 0.95}, "per_label": {"TB": {"auc": 0.8}}}
    _, rows = published_table({"published": {"r18": {"accuracy": 0.9595, "macro": 0.97, "labels": {"TB": 0.75}}},
                               "cells": {"r18": cell}})
    assert rows == [["r18", "macro", "0.97", "0.900 [0.850, 0.950]", "-0.070"],
                    ["r18", "accuracy", "0.9595", "0.850 [0.800, 0.900]", "-0.110"],  # as published
                    ["r18", "TB", "0.75", "0.800", "+0.050"]]
