"""A run over several sources gets test AUCs with patient-bootstrap CIs per source and label."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrlab.config import load_config
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.evaluate.metrics import roc_auc
from cxrlab.evaluate.per_source import per_source_aucs, source_aucs
from cxrlab.evaluate.records import Evaluation
from cxrlab.report.run_report import NOT_IN_SOURCE

LABELS = ["Cardiomegaly", "Effusion", "Mass"]  # the chexpert phantom has no Mass
CANONICAL = ["Cardiomegaly", "Pleural Effusion", "Mass"]


@pytest.fixture(scope="module")
def two_source_run(tiny_phantom, tmp_path_factory):
    """A simple_cnn trained on the nih14 phantom and a chexpert-layout phantom (which lacks Mass)."""
    from cxrlab.workflows import run_experiment

    tmp = tmp_path_factory.mktemp("per_source")
    b = write_phantom_dataset("chexpert", tmp / "chexpert", n=160, size=32, seed=5, workers=1, lateral=False)
    cfg = load_config(None, base={
        "name": "ps", "runs_dir": str(tmp / "runs"),
        "data": {"sources": [{"source": "nih14", "root": str(tiny_phantom)}, {"source": "chexpert", "root": str(b.root)}],
                 "labels": LABELS, "image_size": 32, "workers": 1, "val_fraction": 0.2},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 16}, "evaluate": {"n_boot": 100}, "explain": {"enabled": False}})
    run_experiment(cfg)
    return tmp / "runs" / "ps"


def test_each_source_has_cis_that_hold_its_own_point_auc(two_source_run):
    raw = json.loads((two_source_run / "evaluation.json").read_text())
    ev = Evaluation.from_dict(raw)
    pred = pd.read_csv(two_source_run / "predictions.csv")
    assert list(ev.per_source) == ["nih14", "chexpert"]
    for name, r in ev.per_source.items():
        own = pred[pred["source"] == name]
        assert r.n == len(own) and r.patients == own["patient"].nunique() and r.n_boot == 100
        scored = []
        for lab in r.per_label:
            y, p = own[lab].to_numpy(dtype=float), own[f"prob_{lab}"].to_numpy(dtype=float)
            keep = ~np.isnan(y)
            e = r.per_label[lab]
            assert e.value == pytest.approx(roc_auc(y[keep], p[keep]))  # this source's images only
            assert e.has_ci and e.low <= e.value <= e.high and e.high - e.low > 0
            assert r.positives[lab] == int((y == 1).sum())
            scored.append(e.value)
        assert r.macro_auc.value == pytest.approx(np.mean(scored))
        assert r.macro_auc.low <= r.macro_auc.value <= r.macro_auc.high
    assert ev.per_source["chexpert"].absent == ["Mass"] and "Mass" not in ev.per_source["chexpert"].per_label
    assert ev.per_source["nih14"].absent == [] and set(ev.per_source["nih14"].per_label) == set(CANONICAL)
    assert raw["per_source"]["chexpert"]["absent"] == ["Mass"]  # in the file as it is written
    assert Evaluation.from_dict(ev.to_dict()).per_source == ev.per_source


def test_run_page_shows_the_table_with_cis_and_not_in_this_source(two_source_run):
    ev = Evaluation.read(two_source_run / "evaluation.json")
    html = (two_source_run / "report.html").read_text()
    section = html[html.index("Test results per source"):]
    section = section[:section.index("</table>")]
    assert "95% CI, B=100" in section and section.count(NOT_IN_SOURCE) == 2  # the legend and chexpert's Mass
    chexpert_row = section[section.index("<td>chexpert</td>"):].split("</tr>")[0]
    assert NOT_IN_SOURCE in chexpert_row
    e = ev.per_source["nih14"].per_label["Mass"]
    assert f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" in section
    m = ev.per_source["chexpert"].macro_auc
    assert f"{m.value:.3f} [{m.low:.3f}, {m.high:.3f}]" in chexpert_row
    assert "all sources" in section


def test_an_older_evaluation_reads_and_cxrlab_evaluate_adds_the_cis(two_source_run, tmp_path):
    import shutil

    from cxrlab.report.run_report import render_report
    from cxrlab.run import RunFolder
    from cxrlab.workflows import evaluate_run

    run = shutil.copytree(two_source_run, tmp_path / "ps")
    path = run / "evaluation.json"
    old = json.loads(path.read_text())
    del old["per_source"]
    path.write_text(json.dumps(old))
    assert Evaluation.read(path).per_source == {}
    html = render_report(RunFolder(run)).read_text()
    assert "predates the per-source CIs" in html and NOT_IN_SOURCE in html  # point AUCs, said so
    out = evaluate_run(run, n_boot=20)
    assert set(out["per_source"]) == {"nih14", "chexpert"} and out["per_source"]["nih14"]["n_boot"] == 20
    assert "predates" not in (run / "report.html").read_text()


def _sample(n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views per patient; a score that separates the classes moderately (AUC about 0.76)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.random(n_patients) < 0.4, 2).astype(float)
    p = 1 / (1 + np.exp(-(1.0 * y + rng.normal(size=len(y)))))
    return y[:, None], p[:, None], np.repeat(np.arange(n_patients), 2).astype(str)


def test_ci_narrows_with_more_patients():
    widths = []
    for n in (30, 480):
        y, p, g = _sample(n, seed=n)
        r = source_aucs(y, p, ["A"], g, n_boot=300, seed=0)["per_label"]["A"]
        assert r["ci_low"] <= r["auc"] <= r["ci_high"]
        widths.append(r["ci_high"] - r["ci_low"])
    assert widths[1] < widths[0] / 2  # 16x the patients: about a quarter of the width


def test_patients_are_resampled_whole_and_a_one_class_label_is_undefined_not_absent():
    y, p, g = _sample(60, seed=1)
    frame = pd.DataFrame({"A": y[:, 0], "prob_A": p[:, 0], "B": 0.0, "prob_B": p[:, 0], "patient": g})
    two = pd.concat([frame.assign(source="s1"), frame.assign(source="s2", patient="x" + frame["patient"])])
    by_patient = per_source_aucs(two, ["A", "B"], n_boot=300)["s1"]
    by_image = per_source_aucs(two.drop(columns="patient"), ["A", "B"], n_boot=300)["s1"]
    width = {k: r["per_label"]["A"]["ci_high"] - r["per_label"]["A"]["ci_low"]
             for k, r in (("patient", by_patient), ("image", by_image))}
    assert width["patient"] > width["image"]  # two correlated views per patient: images alone look surer
    assert by_patient["patients"] == 60 and by_image["patients"] is None
    b = by_patient["per_label"]["B"]  # labelled, all negative: no AUC, but not "not in this source"
    assert np.isnan(b["auc"]) and np.isnan(b["ci_low"]) and by_patient["absent"] == []
    assert by_patient["macro_auc"]["auc"] == pytest.approx(by_patient["per_label"]["A"]["auc"])
    assert per_source_aucs(frame.assign(source="s1"), ["A"], n_boot=20) == {}  # one source: nothing per source


def test_cxrlab_evaluate_prints_the_per_source_table(two_source_run, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv("COLUMNS", "220")
    res = run_cli("evaluate", two_source_run, "--n-boot", 20)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "per source (test AUC, 95% CI)" in text and "not in this source" in text
