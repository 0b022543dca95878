"""/explain states the probability /predict gives: the run's calibrated one, not the model's own.

Before issue 19's fix the explain path took ``activation(logits)`` itself and skipped the fitted
calibration, so the overlay said one number and ``/predict`` another for the same image.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_fixtures import first_images, trained_run

from cxrlab.data.preprocess import load_image
from cxrlab.evaluate.calibration import Calibration
from cxrlab.serve.app import create_app
from cxrlab.workflows.service import ModelService


@pytest.fixture(scope="module")
def calibrated_run(tiny_phantom, tmp_path_factory):
    run = trained_run(tiny_phantom, tmp_path_factory)
    cal = Calibration.from_dict(run.read_model_record().calibration)
    assert cal is not None and cal.method == "temperature"  # the default evaluate.calibration
    return run


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_explain_probability_equals_predict_on_a_calibrated_run(calibrated_run, tiny_phantom, engine):
    service = ModelService(calibrated_run.path, engine)
    client = TestClient(create_app(service=service))
    labels, pre = service.labels, service.record.preprocess
    for path in first_images(tiny_phantom, 3):
        data = path.read_bytes()
        r = client.post("/predict", files=[("files", (path.name, data, "image/png"))])
        assert r.status_code == 200, r.text
        shown = r.json()["results"][0]["probabilities"]
        # the label whose probability the calibration moves most: where the old path was furthest off
        img = load_image(path, pre)[None]
        raw = service.opened.predictor.probabilities(img, calibrated=False)[0]
        cal = np.array([shown[k] for k in labels])
        k = int(np.argmax(np.abs(cal - raw)))
        assert abs(cal[k] - raw[k]) > 1e-3, "the calibration must change this probability for the test to bite"
        for label in (labels[k], None):  # a named label, and the default (the most probable)
            e = client.post("/explain", files={"file": (path.name, data, "image/png")},
                            params={} if label is None else {"label": label})
            assert e.status_code == 200, e.text
            said = e.headers["X-Label"]
            assert said == (label or labels[int(np.argmax(cal))])
            assert float(e.headers["X-Probability"]) == pytest.approx(shown[said], abs=2e-6)
