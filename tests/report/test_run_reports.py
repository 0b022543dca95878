"""The run report a reviewer asked for: every section for each task, the leakage box, a page that
still renders after its run folder moved, ``data summary --run`` and the ``compare`` page."""

import base64
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.workflows.explain import known_truth, panel_title


@pytest.fixture(scope="module")
def report_runs(tiny_phantom, tmp_path_factory):
    from report_data import train_report_runs

    return train_report_runs(tiny_phantom, tmp_path_factory.mktemp("report_runs"))


SETUP_ROWS = ["model", "pretrained weights", "data", "split", "preprocessing", "augmentation", "optimiser",
              "learning rate", "batch size", "loss", "scheduler", "epochs", "checkpoint selection", "seed",
              "device", "wall time", "versions", "commit"]
EXPECTED = {
    "multilabel": ["AUC (95% CI)", "<td>macro</td>", "<td>micro</td>", "alt='precision-recall curves'",
                   "alt='calibration'", "binary cross-entropy (BCE)", "<h2>Localisation</h2>", "box ok",
                   "validation carved from train by patient"],
    "binary": ["Decisions at the threshold", "PPV (precision)", "NPV", "sensitivity (recall, TPR)",
               "specificity (TNR)", "Confusion matrix at that threshold", "alt='confusion matrix'",
               "alt='precision-recall curve'", "focal (alpha 0.25, gamma 2.0)", "best validation AUC", "box bad"],
    "multiclass": ["AUC one-vs-rest (95% CI)", "precision (95% CI)", "recall (95% CI)", "top-label ECE",
                   "alt='ROC curves, one-vs-rest'", "alt='top-label calibration'", "cross-entropy",
                   "best validation accuracy", "letterbox (padded to square", "CLAHE (clip limit 2.0, 4x4 tiles)",
                   "own train/val/test split"],
}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_each_task_report_has_its_sections(report_runs, task):
    html = report_runs[task].report_file.read_text()
    for heading in ("Setup", "Data and splits", "Classification (test split)", "Training"):
        assert f"<h2>{heading}</h2>" in html, heading
    for row in SETUP_ROWS:
        assert f"<td>{row}</td>" in html, row
    assert "Prevalence per split" in html and "alt='ROC curve" in html and "alt='training curves'" in html
    for text in EXPECTED[task]:
        assert text in html, (task, text)
    if task == "binary":  # one label: no macro and micro rows repeating it
        assert "<td>macro</td>" not in html and "<td>micro</td>" not in html


def test_kermany_patient_in_train_and_test_makes_the_leakage_box_red(report_runs):
    run = report_runs["binary"]
    data = json.loads(run.summary_file.read_text())["data"]
    assert data["patient_overlap"] == {"train-val": 0, "train-test": 1, "val-test": 0}
    assert data["overlap_examples"]["train-test"] == ["person1"]
    html = run.report_file.read_text()
    box = html[html.index("<div class='box bad'>"):]
    box = box[:box.index("</div>")]
    assert "train and test" in box and "person1" in box
    assert "box bad" not in report_runs["multiclass"].report_file.read_text()


def test_report_is_self_contained_after_the_run_folder_moves(report_runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(report_runs["multilabel"].path, copy)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(copy, moved)
    shutil.rmtree(moved / "figures")  # the page must not need them
    html = (moved / "report.html").read_text()
    srcs = re.findall(r"<img src='([^']*)'", html)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    render_report(RunFolder(moved))  # re-rendered without figures: a note, never a broken link
    again = (moved / "report.html").read_text()
    assert not re.findall(r"<img src='(?!data:)", again) and "not drawn" in again


def test_report_of_a_run_evaluated_by_an_older_cxrlab_says_how_to_complete_it(report_runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(report_runs["binary"].path, old)
    r = run_cli("report", old)
    assert r.exit_code == 0 and "older cxrlab" not in r.stdout  # current evaluation: no hint
    ev = json.loads((old / "evaluation.json").read_text())
    ev.pop("format_version")  # freshness is read from the version (format 1: no version, no task)
    ev.pop("task")
    for v in ev["per_label"].values():  # as evaluation.json was before PR curves and operating points
        v.pop("operating_point", None)
        v.pop("average_precision", None)
    (old / "evaluation.json").write_text(json.dumps(ev))
    r = run_cli("report", old)
    text = " ".join(r.stdout.split())
    assert r.exit_code == 0 and f"wrote {old / 'report.html'}" in text
    assert "older cxrlab" in text and f"cxrlab evaluate {old}" in text


def test_explain_panels_say_decision_and_truth(report_runs):
    run = report_runs["binary"]
    rec = run.read_model_record()
    truth = known_truth(run, rec.labels)
    leaked = next(k for k in truth if k.endswith("person1_virus_999.jpeg"))
    thr = rec.thresholds["Pneumonia"]
    title, colour = panel_title(rec, np.array([thr + 0.01]), 0, truth[leaked])
    assert "predicted (>= threshold" in title and "truth: positive" in title and colour == "darkgreen"
    title, colour = panel_title(rec, np.array([thr - 0.01]), 0, None)
    assert "not predicted (< threshold" in title and "truth: unknown" in title


def test_data_summary_of_a_run_shows_its_split_patients_and_prevalence(report_runs, tmp_path):
    out = tmp_path / "split.json"
    r = run_cli("data", "summary", "--run", report_runs["binary"].path, "--json", out)
    assert r.exit_code == 0, r.output
    s = json.loads(out.read_text())
    split = json.loads(report_runs["binary"].split_file.read_text())
    assert {k: s["splits"][k]["images"] for k in ("train", "val", "test")} == {k: len(split[k]) for k in
                                                                              ("train", "val", "test")}
    assert s["patient_overlap"]["train-test"] == 1 and "prevalence" in s["splits"]["test"]
    assert "person1" in r.stdout and "%" in r.stdout
    assert run_cli("data", "summary").exit_code == 2


def test_compare_writes_a_page_and_never_prints_p_zero(report_runs, tmp_path):
    a = report_runs["multilabel"].path
    good = tmp_path / "good"
    shutil.copytree(a, good)
    rng = np.random.default_rng(0)
    table = pd.read_csv(good / "predictions.csv")
    labels = json.loads((good / "model.json").read_text())["labels"]
    for lab in labels:  # a near-perfect "model": every bootstrap resample favours it
        table[f"prob_{lab}"] = np.clip(0.3 + 0.4 * table[lab].fillna(0) + rng.normal(0, 0.05, len(table)), 0, 1)
    table.to_csv(good / "predictions.csv", index=False)
    r = run_cli("compare", good, a, "--n-boot", 50, "--json", tmp_path / "c.json", "--out", tmp_path / "c.html")
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())  # rich wraps long lines
    assert "p < 0.02 (1/50)" in text and "p = 0 " not in text and f"wrote {tmp_path / 'c.html'}" in text
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["macro_auc_difference"]["p_resolution"] == pytest.approx(1 / 50)
    page = (tmp_path / "c.html").read_text()
    assert page.count("src='data:image/png;base64,") == 2 and "forest plot" in page and "p &lt; 0.02" in page


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
                    reason="needs the playwright package and /usr/bin/chromium (apt-get install chromium)")
def test_reports_open_in_headless_chromium_with_every_image_and_no_error(report_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("CXRLAB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for task, run in report_runs.items():
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.on("requestfailed", lambda r, e=errors: e.append(f"request failed: {r.url}"))
                page.goto(run.report_file.as_uri())
                page.wait_for_load_state("load")
                images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
                assert len(images) >= 4, (task, images)
                assert all(ok and width > 0 for _, ok, width in images), (task, images)
                assert errors == [], (task, errors)
                headings = page.locator("h2").all_inner_texts()
                assert headings[:2] == ["Setup", "Data and splits"], headings
                page.screenshot(path=str(shots / f"report_{task}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert all((shots / f"report_{t}.png").stat().st_size > 10_000 for t in report_runs)
