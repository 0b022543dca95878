"""Studies: a grid of runs that resumes after kill -9, re-runs changed cells, and runs through submitit."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import browser_page, needs_browser, run_cli, screenshots
from cxrlab.errors import ConfigError, CxrlabError
from cxrlab.studies.spec import list_presets, load_study
from cxrlab.workflows.study import plan_study, run_study

STUDY = {
    "name": "tiny_res",
    "title": "tiny resolution study",
    "recipe": {
        "seed": 0, "task": "multilabel",
        "data": {"source": "nih14", "workers": 1, "val_fraction": 0.2},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.003, "scheduler": "none"},
        "evaluate": {"n_boot": 50}, "explain": {"max_images": 10, "random_draws": 2},
    },
    "axes": {"data.image_size": [32, 48]},
    "baseline": "image_size=48",
    "published": {"image_size=48": {"macro": 0.8}},
    "phantom": {"kind": "nih14", "n": 120, "size": 64},
}


@pytest.fixture()
def study_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


def _table(folder):
    data = json.loads((folder / "study.json").read_text())
    return ({n: r["macro_auc"] for n, r in data["cells"].items()},
            [c["macro_auc_difference"] for c in data["comparisons"]])


def test_kill_9_in_second_cell_then_rerun_equals_uninterrupted(study_file, tmp_path):
    full = run_study(study_file, phantom=True, out=tmp_path / "a")
    env = {**os.environ, "CXRLAB_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cxrlab", "study", "run", str(study_file), "--phantom",
                             "--out", str(tmp_path / "b")], env=env, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "b" / "tiny_res-phantom"
    second = folder / "runs" / "image_size=48" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (second.is_file() and second.read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, f"the study ended before its second cell was killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first_weights = folder / "runs" / "image_size=32" / "checkpoints" / "best.safetensors"
    stamp = first_weights.stat().st_mtime_ns
    plan = plan_study(study_file, phantom=True, out=tmp_path / "b")
    assert [c.status for c in plan.cells] == ["done", "partial"]
    run_study(study_file, phantom=True, out=tmp_path / "b")
    assert first_weights.stat().st_mtime_ns == stamp  # the first cell was not retrained
    assert _table(folder) == _table(full.parent)
    html = (folder / "report.html").read_text()
    assert "Published vs ours" in html and "data:image/png;base64," in html and "src='figures" not in html
    linked = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", (folder / "report.md").read_text())
    assert len(linked) == 3 and all((folder / f).stat().st_size > 1000 for f in linked)  # ROC, axis, curves


def test_changed_cell_config_is_rerun_not_mixed(study_file, tmp_path):
    run_study(study_file, phantom=True, out=tmp_path)
    plan = plan_study(study_file, overrides=["train.lr=0.001"], phantom=True, out=tmp_path)
    assert {c.status for c in plan.cells} == {"changed"}
    plan = plan_study(study_file, phantom=True, out=tmp_path)
    assert {c.status for c in plan.cells} == {"done"}
    # a post step over several cells: `study run` makes their ensemble, a prediction-only cell of the report
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text(yaml.safe_dump({**STUDY, "post": [{"ensemble": {"groups": {
        "both_sizes": ["image_size=32", "image_size=48"]}}}]}))
    data = json.loads(run_study(grouped, phantom=True, out=tmp_path).with_name("study.json").read_text())
    assert data["cells"]["both_sizes"]["macro_auc"]["auc"] > 0
    members = json.loads((plan.folder / "runs" / "both_sizes" / "model.json").read_text())["members"]
    assert [m.rsplit("/", 1)[-1] for m in members] == ["image_size=32", "image_size=48"]


def test_phantom_cell_overrides_win_over_the_cells_own_keys(tmp_path):
    study = {**STUDY, "axes": {"model.name": ["simple_cnn", "densenet121"]}, "baseline": "name=simple_cnn",
             "published": {}, "phantom": {**STUDY["phantom"], "overrides": {"model.options": {"width": 4}},
                                          "cells": {"name=densenet121": {"model.options": {"growth_rate": 4}}}}}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(study))
    plan = {c.name: c.cfg for c in plan_study(path, phantom=True, out=tmp_path).cells}
    assert plan["name=densenet121"].model.name == "densenet121"
    assert plan["name=densenet121"].model.options == {"growth_rate": 4}
    assert plan["name=simple_cnn"].model.options == {"width": 4, "convs": 1}  # phantom.overrides merge
    full = {c.name: c.cfg for c in plan_study(path, root=str(tmp_path), out=tmp_path).cells}
    assert "growth_rate" not in full["name=densenet121"].model.options  # the real form: the paper's model
    path.write_text(yaml.safe_dump({**study, "phantom": {**study["phantom"], "cells": {"name=vgg": {}}}}))
    with pytest.raises(ConfigError, match="'name=vgg' is not a cell"):
        load_study(path)


def test_local_launcher_runs_one_cell_per_device_in_parallel_and_names_a_failed_cell(study_file, tmp_path):
    # two "devices" that hide every GPU (CUDA_VISIBLE_DEVICES=""): the parallel path, on a CPU
    report = run_study(study_file, overrides=["train.threads=1"], phantom=True, out=tmp_path,
                       launcher_options={"devices": ["", ""]})
    folder = report.parent
    data = json.loads((folder / "study.json").read_text())
    assert set(data["cells"]) == {"image_size=32", "image_size=48"} and not data["missing"]
    assert sorted(p.name for p in (folder / "logs").glob("*.log")) == ["image_size=32.log", "image_size=48.log"]
    with pytest.raises(CxrlabError, match=r"2 study cells failed .*image_size=32: error: unknown model"):
        run_study(study_file, overrides=["model.name=no_such_net"], phantom=True, out=tmp_path / "bad",
                  launcher_options={"devices": ["", ""]})


def test_submitit_local_executor_runs_a_two_cell_study(study_file, tmp_path):
    pytest.importorskip("submitit")
    report = run_study(study_file, phantom=True, out=tmp_path, launcher="submitit-local",
                       launcher_options={"timeout_min": 20})
    data = json.loads((report.parent / "study.json").read_text())
    assert set(data["cells"]) == {"image_size=32", "image_size=48"}
    assert any((report.parent / "submitit").rglob("*_result.pkl"))


def test_study_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**STUDY, "baseline": "image_size=99"}))
    with pytest.raises(ConfigError, match="image_size=99.*not a cell"):
        load_study(bad)
    bad.write_text(yaml.safe_dump({**STUDY, "post": [{"ensemble": {"groups": {"g": ["image_size=32", "x"]}}}]}))
    with pytest.raises(ConfigError, match="'x' is not a cell"):
        load_study(bad)
    r = run_cli("study", "run", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "no such study file or preset" in r.stderr


def test_presets_load_and_list():
    presets = list_presets()
    assert "wollek2023_resolution" in presets
    for path in presets.values():
        spec, base = load_study(path)
        assert spec.phantom is not None and spec.grid() and base
    r = run_cli("study", "presets")
    assert r.exit_code == 0 and "wollek2023_resolution" in r.stdout


@needs_browser
def test_study_report_opens_in_headless_chromium_with_every_image_and_no_error(study_file, tmp_path):
    from cxrlab.report.study import PHANTOM_BANNER

    overrides = ["train.epochs=2", "data.val_fraction=0.25"]
    report = run_study(study_file, overrides=overrides, phantom=True, out=tmp_path)
    shots = screenshots(tmp_path)
    with browser_page(report) as (page, errors):
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        headings = page.locator("h2").all_inner_texts()
        banner = page.get_by_text(PHANTOM_BANNER)
        banner_visible, banner_top = banner.is_visible(), banner.bounding_box()["y"]
        command_visible = page.locator("code", has_text=" ".join(overrides)).is_visible()
        setup_rows = page.locator("table").first.locator("tbody tr").count()
        page.screenshot(path=str(shots / "study_report.png"), full_page=True)
    assert errors == []
    assert banner_visible and banner_top < 300  # the phantom banner is seen before anything else
    assert command_visible and setup_rows == 2  # the overrides, verbatim; one setup row per cell
    assert [alt for alt, _, _ in images] == ["ROC curves", "Metric vs axis", "Training curves"]
    assert all(ok and width > 300 for _, ok, width in images), images
    assert headings[:3] == ["What ran", "Results per cell",
                            "Tests against the baseline (image_size=48) and requested pairs"]
    assert "Published vs ours" in headings
    assert (shots / "study_report.png").stat().st_size > 20_000
