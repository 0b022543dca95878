"""What users read: the card's leakage and binary wording, the leakage advice and Kermany's re-split,
the preprocessing line, figures titled by their method, the compare ROC title, calibration as small
multiples, ``predict``'s table and binary negative, and the docs' wording."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from cxrlab.data.sources import load_source
from cxrlab.data.splits import shared_patients
from cxrlab.data.summary import summarize
from cxrlab.errors import CxrlabError
from cxrlab.explain.localize import Case
from cxrlab.report import plots, plots_eval
from cxrlab.report.run_report import localization_section
from cxrlab.run import RunFolder
from cxrlab.workflows import run_experiment
from cxrlab.workflows.card import card_metadata, write_card

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tiny_phantom, tmp_path_factory):
    from report_data import train_report_runs

    tmp = tmp_path_factory.mktemp("wording_runs")
    out = train_report_runs(tiny_phantom, tmp)
    for run in out.values():
        write_card(run.path, fit_missing_ood=False)
    return out


@pytest.fixture
def capture(monkeypatch):
    """The figures the plot functions save (still written), to read their titles and panels."""
    figs = []

    def keep(save):
        def wrapped(fig, path):
            fig.canvas.draw()
            fig.cx_renderer = fig.canvas.get_renderer()  # closed after saving: keep the renderer
            figs.append(fig)
            return save(fig, path)
        return wrapped

    monkeypatch.setattr(plots, "save", keep(plots.save))
    monkeypatch.setattr(plots_eval, "save", keep(plots_eval.save))
    return figs


def _box(html: str, kind: str) -> str:
    part = html[html.index(f"<div class='box {kind}'>"):]
    return part[:part.index("</div>")]


# --- the card ------------------------------------------------------------------------------------------

def test_card_counts_the_patients_shared_by_train_and_test_as_the_report_does(runs):
    run = runs["binary"]
    stored = shared_patients(json.loads(run.summary_file.read_text())["data"])
    meta = json.loads(run.metadata_file.read_text())
    assert meta["data"]["leakage"]["shared"] == stored and stored["train-test"]["patients"] >= 1
    card = run.card_file.read_text()
    n, example = stored["train-test"]["patients"], stored["train-test"]["examples"][0]
    assert f"train and test share **{n}** patient(s), e.g. {example}" in card
    assert "data.options.resplit=patient" in card
    assert any("shared between splits" in x and example in x for x in meta["limitations"])  # the served card too
    box = _box(run.report_file.read_text(), "bad")
    assert f"<b>{n}</b>" in box and example in box
    clean = runs["multiclass"].card_file.read_text()
    assert "- no patient is in two splits" in clean and "leakage" not in clean.lower()


def test_binary_card_says_auc_of_its_label_and_never_1_labels(runs):
    run = runs["binary"]
    card = run.card_file.read_text()
    auc = json.loads(run.evaluation_file.read_text())["per_label"]["Pneumonia"]["auc"]
    assert f"Pneumonia AUC {auc:.3f}" in card
    assert "macro" not in card.lower() and "micro" not in card.lower() and "1 labels" not in card
    assert card_metadata(run.path)["description"].startswith("simple_cnn detecting Pneumonia")
    multi = runs["multilabel"].card_file.read_text()
    assert "Macro AUC" in multi and "micro AUC" in multi and "classifying 6 labels" in multi


# --- leakage advice and Kermany's patient re-split -----------------------------------------------------

def test_leakage_box_names_what_removes_the_overlap_for_kermany(runs):
    box = _box(runs["binary"].report_file.read_text(), "bad")
    assert "<code>data.options.resplit=patient</code>" in box and "split_file" not in box


def test_kermany_resplit_by_patient_removes_the_overlap(tmp_path):
    from report_data import make_kermany

    root = make_kermany(tmp_path / "kermany")
    official = load_source("kermany", str(root), val_fraction=0.3)
    assert shared_patients(summarize(official))["train-test"]["patients"] == 1
    m = load_source("kermany", str(root), options={"resplit": "patient"},
                    fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    assert shared_patients(summarize(m)) == {} and m.split_method.startswith("made by cxrlab")
    assert set(m.frame["split"]) == {"train", "val", "test"}
    with pytest.raises(CxrlabError, match=r"data\.options\.resplit: 'folds' for source 'kermany'"):
        load_source("kermany", str(root), options={"resplit": "folds"})


def test_a_resplit_kermany_run_reports_no_leakage(runs, tmp_path):
    from report_data import _config

    src = Path(runs["binary"].read_config().data.root)
    cfg = _config("resplit", tmp_path / "runs", tmp_path / "cache",
                  {"source": "kermany", "root": str(src), "options": {"resplit": "patient"}})
    run_experiment(cfg)
    run = RunFolder(tmp_path / "runs" / "resplit")
    html = run.report_file.read_text()
    assert "box ok" in html and "box bad" not in html and "made by cxrlab" in html


# --- preprocessing line ----------------------------------------------------------------------------------

def _preprocessing_row(html: str) -> str:
    return re.search(r"<td>preprocessing</td><td>([^<]*)</td>", html).group(1)


def test_preprocessing_lists_only_the_steps_applied_in_order(runs):
    squash = _preprocessing_row(runs["binary"].report_file.read_text())
    assert "letterbox" not in squash and "clahe" not in squash.lower() and "resize to 32x32" in squash
    both = _preprocessing_row(runs["multiclass"].report_file.read_text())
    order = [both.index(w) for w in ("decode", "letterbox", "CLAHE", "resize to 32x32")]
    assert order == sorted(order)
    card = runs["binary"].card_file.read_text()
    line = card[card.index("## Preprocessing"):].splitlines()[2]
    assert "letterbox" not in line and "clahe" not in line.lower() and "resize to 32x32" in line


# --- figures ---------------------------------------------------------------------------------------------

def test_cam_figures_and_section_are_titled_by_their_method(capture, tmp_path):
    img = np.zeros((1, 32, 32), np.uint8)
    case = Case(row=0, image="a.png", label="Mass", truth=[(2, 2, 8, 8)], truth_model=[(2, 2, 8, 8)],
                pred_model=[(3, 3, 8, 8)], cam=np.random.default_rng(0).random((32, 32)), hit=True)
    plots.cam_overlays([case], img, tmp_path / "o.png", method="gradcam++", iou=0.3)
    assert capture[-1]._suptitle.get_text().startswith("Grad-CAM++: ") and "IoU >= 0.3" in capture[-1]._suptitle.get_text()
    summary = {"method": "gradcam++", "threshold": 0.5, "iou": 0.1, "cases": 1, "mean_accuracy": 1.0,
               "random_mean_accuracy": 0.0, "mean_precision": 1.0, "random_mean_precision": 0.0,
               "per_class": {"Mass": {"n": 1, "accuracy": 1.0, "random_accuracy": 0.0, "precision": 1.0,
                                      "random_precision": 0.0}}}
    plots.localization_bars(summary, tmp_path / "b.png")
    ax = capture[-1].axes[0]
    assert ax.get_title().startswith("Grad-CAM++") and "Grad-CAM++ boxes" in ax.get_legend_handles_labels()[1]
    html = localization_section(summary, tmp_path / "b.png", tmp_path / "o.png")
    assert "Grad-CAM++ on the last conv block" in html and "alt='Grad-CAM++ overlays'" in html
    assert "gradcam++" not in html


def test_compare_roc_title_fits_a_one_label_figure(capture, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 1)).astype(float)
    plots_eval.compare_rocs(y, {"A: a_long_run_name": rng.random((40, 1)), "B: b": rng.random((40, 1))},
                            ["Pneumonia"], tmp_path / "roc.png")
    fig = capture[-1]
    title = fig._suptitle.get_window_extent(fig.cx_renderer)
    page = fig.bbox
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1
    panel = fig.axes[0].get_tightbbox(fig.cx_renderer)
    assert title.y0 > panel.y1  # above the panel, not over it


def test_calibration_is_one_panel_per_label_with_counts(runs, capture, tmp_path):
    labels = runs["multilabel"].read_model_record().labels
    rng = np.random.default_rng(0)
    curves = {lab: {"confidence": [0.15, 0.5, 0.85], "observed": [0.1, 0.55, 0.8],
                    "count": [int(c) for c in rng.integers(1, 40, 3)]} for lab in labels}
    plots_eval.reliability(curves, tmp_path / "rel.png")
    fig = capture[-1]
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("  ")[0] for ax in titled] == labels  # one reliability panel per label
    assert len(fig.axes) == 2 * len(labels)  # each with its images-per-bin strip
    for ax, lab in zip(titled, labels, strict=True):
        assert f"n {sum(curves[lab]['count'])}" in ax.get_title()
        strip = fig.axes[fig.axes.index(ax) + 1]  # the counts sit on the bars below the panel, not by the points
        assert sorted(t.get_text() for t in strip.texts) == sorted(map(str, curves[lab]["count"]))


# --- predict ---------------------------------------------------------------------------------------------

def _with_threshold(run: RunFolder, tmp_path: Path, thr: float) -> Path:
    copy = tmp_path / f"thr{thr}"
    shutil.copytree(run.path, copy)
    rec = json.loads((copy / "model.json").read_text())
    rec["thresholds"] = {k: thr for k in rec["thresholds"]}
    (copy / "model.json").write_text(json.dumps(rec))
    return copy


def test_predict_prints_each_probability_and_says_normal_for_a_binary_negative(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run = runs["binary"]
    images = sorted((Path(run.read_config().data.root) / "test" / "NORMAL").glob("*.jpeg"))[:2]
    args = [a for f in images for a in ("-i", f)]
    for thr, decision in ((1.01, "Normal (no Pneumonia)"), (0.0, "Pneumonia")):
        folder = _with_threshold(run, tmp_path, thr)
        out = tmp_path / f"p{thr}.csv"
        r = run_cli("predict", folder, *args, "--out", out)
        assert r.exit_code == 0, r.output
        table = pd.read_csv(out)
        assert (table["prediction"] == decision).all()
        assert "P(Pneumonia)" in r.stdout and "decision" in r.stdout
        for _, row in table.iterrows():
            line = next(x for x in r.stdout.splitlines() if Path(row["image"]).name in x)
            assert f"{row['prob_Pneumonia']:.3f}" in line and decision in line
        assert "none" not in r.stdout


def test_predict_prints_one_column_per_label_for_a_multilabel_run(runs, tiny_phantom, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    run = runs["multilabel"]
    image = sorted((tiny_phantom / "images").glob("*.png"))[0]
    r = run_cli("predict", run.path, "-i", image)
    assert r.exit_code == 0, r.output
    for lab in run.read_model_record().labels:
        assert f"P({lab})" in r.stdout


# --- docs --------------------------------------------------------------------------------------------------

def test_docs_name_papers_not_seeds_and_point_at_nothing_a_clone_lacks():
    pattern = re.compile(r"seed 00[0-4]|seed text", re.IGNORECASE)
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "recipes").glob("*.yaml"),
             *(p for p in (ROOT / "src").rglob("*") if p.suffix in (".py", ".yaml", ".md", ".js", ".html"))]
    hits = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files for m in pattern.finditer(f.read_text())]
    assert hits == []
    docs = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    assert [str(f.relative_to(ROOT)) for f in docs if "../shared" in f.read_text()] == []
    data = (ROOT / "docs" / "data.md").read_text()
    assert "No patient is ever in two splits" not in data and "resplit" in data
