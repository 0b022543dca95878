"""Every shipped study preset runs its phantom form end to end and writes a complete report."""

import json

import pytest

from cxrlab.studies.spec import list_presets, load_study
from cxrlab.workflows.study import run_study

PRESETS = sorted(list_presets())


def test_the_paper_presets_ship():
    assert {"wollek2023_resolution", "sinha2025_chexpert", "kermany2025_pneumonia", "cxr14_fusion_project",
            "witon_cxr5"} <= set(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_phantom_form_runs_end_to_end(preset, tmp_path):
    spec, _ = load_study(preset)
    report = run_study(preset, phantom=True, out=tmp_path)
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
    if spec.post:  # e.g. the frontal + lateral study ensemble: one extra cell per trained cell
        assert any("+" in name for name in data["cells"])
    published = [c for c in spec.published if c in data["cells"]]
    if published:
        assert "Published vs ours" in html
