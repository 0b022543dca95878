"""A run with a fitted calibration and a threshold rule: stored in model.json, applied in one place.

Training, ``predict`` (torch and ONNX Runtime) and the server's ``/predict`` return the same calibrated
probabilities; the rule reaches its target on validation and its test value has a CI; ``cxrlab
evaluate`` can refit (or remove) the calibration from the model's own ``raw_`` probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS as _LABELS
from cxrlab.evaluate.calibration import Calibration
from cxrlab.evaluate.records import Evaluation
from cxrlab.evaluate.stats import weighted_auc
from cxrlab.run import RunFolder, prob_columns, raw_columns
from cxrlab.serve.app import create_app
from cxrlab.workflows import evaluate_run, export_onnx, predict_images, run_experiment

RULE = "sensitivity:0.9"
LABELS = list(_LABELS)


@pytest.fixture(scope="module")
def calibrated_run(tiny_phantom, tmp_path_factory):
    runs = tmp_path_factory.mktemp("calibrated_runs")
    base = {"name": "cal", "seed": 1, "runs_dir": str(runs),
            "data": {"source": "nih14", "root": str(tiny_phantom), "labels": list(LABELS), "image_size": 32,
                     "val_fraction": 0.3, "workers": 1},
            "model": {"name": "simple_cnn", "options": {"width": 8, "convs": 1}},
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "scheduler": "none"},
            "evaluate": {"n_boot": 50, "calibration": "temperature", "threshold_rule": RULE,
                         "prevalence": {"Effusion": 0.05}},
            "explain": {"enabled": False}}
    run_experiment(load_config(None, [], base=base))
    export_onnx(runs / "cal")
    return RunFolder(runs / "cal")


def test_model_json_holds_the_calibration_and_the_tables_both_probabilities(calibrated_run):
    rec = calibrated_run.read_model_record()
    cal = Calibration.from_dict(rec.calibration)
    assert cal.method == "temperature" and len(cal.params["temperature"]) == len(LABELS)
    assert cal.fitted_on["split"] == "val"
    test = calibrated_run.read_predictions()
    raw, prob = test[raw_columns(LABELS)].to_numpy(), test[prob_columns(LABELS)].to_numpy()
    assert np.abs(cal.apply(raw) - prob).max() < 1e-6
    ev = Evaluation.read(calibrated_run.evaluation_file)
    assert ev.calibration_effect.method == "temperature"
    page = calibrated_run.report_file.read_text()
    assert "Calibration on test, before" in page and "temperature scaling, T = " in page
    assert "sensitivity &gt;= 0.9 on validation" in page or "sensitivity >= 0.9 on validation" in page
    y = test[LABELS].to_numpy()
    for j, lab in enumerate(LABELS):  # temperature scaling keeps each label's AUC
        auc_raw = weighted_auc(y[:, j], raw[:, j], np.ones((1, len(y))))[0]
        assert ev.per_label[lab].auc.value == pytest.approx(auc_raw, abs=1e-9)


def test_predict_torch_onnx_and_serve_give_the_calibrated_probabilities(calibrated_run, tiny_phantom):
    test = calibrated_run.read_predictions()
    files = [tiny_phantom / i for i in test["image"][:6]]
    expected = test[prob_columns(LABELS)].to_numpy()[:6]
    raw = test[raw_columns(LABELS)].to_numpy()[:6]
    assert np.abs(expected - raw).max() > 1e-3  # the calibration changes the probabilities
    got = {e: predict_images(calibrated_run.path, files, engine=e)[prob_columns(LABELS)].to_numpy()
           for e in ("torch", "onnx")}
    client = TestClient(create_app(calibrated_run.path, "onnx"))
    r = client.post("/predict", files=[("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files])
    assert r.status_code == 200, r.text
    got["serve"] = np.array([[res["probabilities"][k] for k in LABELS] for res in r.json()["results"]])
    for engine, probs in got.items():
        assert np.abs(probs - expected).max() < 1e-5, engine


def test_rule_reaches_its_target_on_validation_and_test_has_a_ci(calibrated_run):
    rec = calibrated_run.read_model_record()
    val = calibrated_run.read_predictions("val")
    ev = Evaluation.read(calibrated_run.evaluation_file)
    assert rec.threshold_rule.startswith(RULE)
    for lab in LABELS:
        y, p = val[lab].to_numpy(), val[f"prob_{lab}"].to_numpy()
        keep = ~np.isnan(y)
        if len(np.unique(y[keep])) < 2:
            continue
        sens = np.mean(p[keep][y[keep] == 1] >= rec.thresholds[lab])
        assert sens >= 0.9 and rec.operating[lab]["validation_value"] == pytest.approx(sens)
        op = ev.per_label[lab].operating_point
        assert op.rule == RULE and op.threshold == rec.thresholds[lab]
        s = op.rates["sensitivity"]
        assert s.defined and s.has_ci and s.low <= s.value <= s.high
    eff = ev.per_label["Effusion"].operating_point
    assert eff.prevalence == 0.05 and eff.adjusted["ppv_at_prevalence"].defined
    assert ev.per_label["Nodule"].operating_point.prevalence is None


def test_evaluate_refits_or_removes_the_calibration(calibrated_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(calibrated_run.path, copy)
    raw = RunFolder(copy).read_predictions()[raw_columns(LABELS)].to_numpy()
    evaluate_run(copy, n_boot=20, calibration="platt")
    run = RunFolder(copy)
    assert Calibration.from_dict(run.read_model_record().calibration).method == "platt"
    assert np.abs(run.read_predictions()[raw_columns(LABELS)].to_numpy() - raw).max() < 1e-6
    evaluate_run(copy, n_boot=20, calibration="none", threshold_rule="youden")
    table = run.read_predictions()
    assert run.read_model_record().calibration is None and not set(raw_columns(LABELS)) & set(table.columns)
    assert np.abs(table[prob_columns(LABELS)].to_numpy() - raw).max() < 1e-6  # back to the model's own
