"""A study report says what ran: setup per cell, the command line, leakage, the phantom banner, B per CI.

One Kermany phantom study (the preset's small form at 32 px, 1 epoch: a few seconds) is shared by the
tests of this module; each test that changes its folder puts it back.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from conftest import run_cli
from cxrlab.evaluate.stats import paired_bootstrap_macro
from cxrlab.locks import lock_path
from cxrlab.report.study import PHANTOM_BANNER
from cxrlab.run import RunFolder, prob_column
from cxrlab.workflows.study import plan_study, run_study
from cxrlab.workflows.study_report import study_report

PRESET = "kermany2025_pneumonia"
OVERRIDES = ["data.image_size=32", "train.epochs=1", "train.batch_size=32"]


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    report = run_study(PRESET, overrides=OVERRIDES, phantom=True, out=out)
    return out, report.parent


def _summary(folder, cell):
    return json.loads((folder / "runs" / cell / "summary.json").read_text())


def test_the_report_and_the_folder_say_what_ran(kermany):
    _, folder = kermany
    html, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()
    data = json.loads((folder / "study.json").read_text())
    assert data["command_line"] == OVERRIDES  # verbatim, in study.json ...
    for text in (html, md):  # ... and in both reports, with the phantom banner
        assert " ".join(OVERRIDES) in text
        assert PHANTOM_BANNER in text
    # the resolved values, not the preset's 224 px / hub weights / 20 epochs
    resolved = yaml.safe_load((folder / "study.yaml").read_text())
    assert resolved["command_line"] == OVERRIDES and resolved["phantom"] is True
    common = resolved["common"]
    assert (common["data.image_size"], common["train.epochs"], common["model.pretrained"]) == (32, 1, "none")
    assert resolved["cells"]["densenet121"]["model.name"] == "densenet121"
    preset = (folder / "preset.yaml").read_text()  # the study file as given, kept apart ...
    assert "base: kermany_densenet121.yaml" in preset and resolved["base"].endswith("kermany_densenet121.yaml")
    recipe = (folder / "recipe.yaml").read_text()  # ... with the paper's recipe it builds on
    assert "image_size: 224" in recipe and "pretrained: hub" in recipe
    # one setup row per cell: model, size, weights, epochs run / cap, images / patients per split, data root
    for cell in ("baseline_cnn", "densenet121"):
        s = _summary(folder, cell)
        sp = s["data"]["splits"]
        row = next(line for line in md.splitlines() if line.startswith(f"| {cell} |") and " px |" in line)
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[3:6] == ["32 px", "none (random)", f"{s['epochs_run']} / 1 ({s['best_epoch']})"]
        assert cols[6:9] == [f"{sp[x]['images']} / {sp[x]['patients']}" for x in ("train", "val", "test")]
        assert s["data"]["root"] in cols[9]
    assert "model.name=simple_cnn" in md  # the cell's own settings (from the study file)
    # the leakage box: the patient the phantom puts in train and test, as the run report has it
    shared = _summary(folder, "baseline_cnn")["data"]["overlap_examples"]["train-test"]
    assert shared and all(p in html and p in md for p in shared)
    assert "Patient leakage" in html and "data.options.resplit=patient" in html
    assert "ROC curves" in html and "count and row %" not in html  # ROC section; the suptitle is in the PNG
    # `study report` alone (another process, no plan) keeps all of it
    r = run_cli("study", "report", folder)
    assert r.exit_code == 0, r.stderr
    again = (folder / "report.md").read_text()
    assert " ".join(OVERRIDES) in again and PHANTOM_BANNER in again


def test_every_ci_names_its_b_and_n_boot_recomputes_the_cells_cis(kermany):
    _, folder = kermany
    cell = RunFolder(folder / "runs" / "densenet121")
    own = json.loads(cell.evaluation_file.read_text())
    assert own["n_boot"] == 50  # the phantom form evaluates each cell with 50 resamples
    try:
        study_report(folder, n_boot=200)
        data = json.loads((folder / "study.json").read_text())
        row = data["cells"]["densenet121"]
        assert row["n_boot"] == 200 and data["n_boot"] == 200
        assert row["macro_auc"]["ci_low"] != own["macro_auc"]["ci_low"]  # recomputed, not the cell's B=50
        md = (folder / "report.md").read_text()
        assert "95% CI, B=200" in md and "B=50" not in md
        assert json.loads(cell.evaluation_file.read_text()) == own  # the cell's own evaluation is untouched
        r = run_cli("study", "report", folder, "--n-boot", "5")
        assert r.exit_code == 2 and "--n-boot must be >= 10" in r.stderr
    finally:
        study_report(folder)
    assert "95% CI, B=1000" in (folder / "report.md").read_text()


def test_paired_bootstrap_reports_the_observed_difference_here_and_in_compare(kermany, tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (60, 2)).astype(float)
    y[0, 1] = np.nan
    a, b = y + rng.normal(0, 0.8, y.shape), y + rng.normal(0, 1.5, y.shape)
    keep = ~np.isnan(y[:, 1])
    observed = (np.mean([roc_auc_score(y[:, 0], a[:, 0]), roc_auc_score(y[keep, 1], a[keep, 1])])
                - np.mean([roc_auc_score(y[:, 0], b[:, 0]), roc_auc_score(y[keep, 1], b[keep, 1])]))
    r = paired_bootstrap_macro(y, a, b, n_boot=200)
    assert r["diff"] == pytest.approx(observed, abs=1e-12) and r["diff_mean"] == r["diff"]
    assert r["boot_mean"] != pytest.approx(observed, abs=1e-6)  # the resamples' mean is another number
    assert r["ci_low"] < r["diff"] < r["ci_high"]
    # `cxrlab compare` prints the observed difference of the two cells' test predictions
    _, folder = kermany
    runs = [folder / "runs" / c for c in ("densenet121", "baseline_cnn")]
    pa, pb = (RunFolder(x).read_predictions() for x in runs)
    pb = pb.set_index("image").loc[pa["image"]].reset_index()
    diff = (roc_auc_score(pa["Pneumonia"], pa[prob_column("Pneumonia")])
            - roc_auc_score(pb["Pneumonia"], pb[prob_column("Pneumonia")]))
    out = run_cli("compare", *runs, "--n-boot", "100", "--out", tmp_path / "compare.html")
    assert out.exit_code == 0, out.stderr
    assert f"macro AUC difference {diff:+.4f}" in " ".join(out.stdout.split())
    table = json.loads((folder / "study.json").read_text())["comparisons"][0]["macro_auc_difference"]
    assert table["diff"] == pytest.approx(diff) and f"{diff:+.4f} [" in (folder / "report.md").read_text()


def test_a_cell_with_summary_json_but_not_the_rest_is_not_done(kermany):
    out, folder = kermany
    run = RunFolder(folder / "runs" / "densenet121")
    assert [c.status for c in plan_study(PRESET, overrides=OVERRIDES, phantom=True, out=out).cells] == ["done"] * 2
    for lost in (run.weights_file("best"), run.predictions_file("test")):  # what a full disk can leave out
        lost.rename(lost.with_name(lost.name + ".away"))
        try:
            assert run.summary_file.is_file()
            statuses = {c.name: c.status for c in plan_study(PRESET, overrides=OVERRIDES, phantom=True, out=out).cells}
            assert statuses == {"baseline_cnn": "done", "densenet121": "partial"}, lost.name
        finally:
            lost.with_name(lost.name + ".away").rename(lost)


def test_a_second_study_run_is_refused_in_one_line_while_the_study_is_locked(kermany):
    out, folder = kermany
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom cxrlab.locks import FolderLock\n"
        f"with FolderLock({str(folder)!r}, what='study'):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "CXRLAB_QUIET": "1"})
    try:
        assert holder.stdout.readline().strip() == "held"
        tic = time.perf_counter()
        r = run_cli("study", "run", PRESET, "--phantom", "--out", out, *OVERRIDES)
        assert time.perf_counter() - tic < 10
        assert r.exit_code == 2 and "study in use by" in r.stderr and str(holder.pid) in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(folder).is_file()  # the killed holder's record stays; it is stale now, so it is taken over
    study_report(folder)
    assert not lock_path(folder).exists()


def test_confusion_matrices_show_counts_and_row_shares_on_one_scale_and_rocs_overlay(monkeypatch):
    import cxrlab.report.study as rs

    drawn = []
    monkeypatch.setattr(rs, "as_base64", lambda fig: drawn.append(fig) or "png")
    cells = {"a": {"task": "binary", "labels": ["P"], "confusion_matrix": [[30, 10], [5, 55]], "per_label": {},
                   "roc": {"P": {"fpr": [0, 0.2, 1], "tpr": [0, 0.8, 1]}}},
             "b": {"task": "binary", "labels": ["P"], "confusion_matrix": [[20, 20], [1, 59]], "per_label": {},
                   "roc": {"P": {"fpr": [0, 0.5, 1], "tpr": [0, 0.6, 1]}}}}
    assert rs.confusion_plot({"cells": cells}) == "png" and rs.roc_plot({"cells": cells}) == "png"
    confusion, roc = drawn
    texts = [t.get_text() for ax in confusion.axes for t in ax.texts]
    for m in (c["confusion_matrix"] for c in cells.values()):  # count and row share in every square
        for row in m:
            assert all(f"{v}\n{v / sum(row):.0%}" in texts for v in row)
    images = [im for ax in confusion.axes for im in ax.get_images()]
    assert len(images) == 2 and {im.get_clim() for im in images} == {(0, 1)}
    assert len(confusion.axes) == 3  # two matrices and one shared colour bar
    curves = [line for line in roc.axes[0].get_lines() if line.get_linestyle() == "-"]
    assert len(curves) == 2  # both cells on one panel, named once in the figure's legend
    assert [t.get_text().split()[0] for t in roc.legends[0].get_texts()] == ["a", "b"]
