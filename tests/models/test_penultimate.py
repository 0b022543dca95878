"""Penultimate features through the one function (models.penultimate) and Predictor.features."""

import numpy as np
import pytest
import torch

from cxrlab.errors import CxrlabError
from cxrlab.inference import Predictor
from cxrlab.models import build_model, penultimate


@pytest.mark.parametrize(("name", "options", "dim"), [
    ("simple_cnn", {"width": 4, "convs": 1}, 16),
    ("test_resnet", {}, 96),  # a (tiny) timm model: forward_head(x, pre_logits=True)
    ("fusion", {"backbones": ["test_resnet", "test_efficientnet"], "dim": 8, "heads": 2}, 16),
])
def test_penultimate_is_what_the_classifier_reads(name, options, dim):
    model = build_model(name, 3, dropout=0.3, **options).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        feats = penultimate(model, x)
        assert feats.shape == (2, dim)
        assert torch.allclose(model.get_classifier()(feats), model(x), atol=1e-5)


def test_predictor_features_batches_uint8_images_and_needs_the_module():
    model = build_model("simple_cnn", 2, width=4, convs=1)
    pred = Predictor.for_model(model, "multilabel", batch_size=3)
    imgs = np.random.default_rng(0).integers(0, 256, (7, 32, 32), dtype=np.uint8)
    feats = pred.features(imgs)
    assert feats.shape == (7, 16) and np.allclose(feats[:3], pred.features(imgs[:3]), atol=1e-6)
    with pytest.raises(CxrlabError, match="PyTorch model"):
        Predictor(model, "multilabel").features(imgs)
    with pytest.raises(CxrlabError, match="forward_head"):
        penultimate(torch.nn.Linear(2, 2), torch.zeros(1, 2))


@pytest.mark.parametrize(("name", "options"), [("simple_cnn", {"width": 4, "convs": 1}), ("test_resnet", {}),
                                               ("fusion", {"backbones": ["test_resnet", "test_efficientnet"],
                                                           "dim": 8, "heads": 2})])
def test_one_pass_gives_the_same_probabilities_and_features_as_two(name, options):
    torch.manual_seed(0)
    model = build_model(name, 3, **options)
    pred = Predictor.for_model(model, "multilabel", batch_size=4)
    imgs = np.random.default_rng(1).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    for tta in (False, True):
        probs, feats = pred.probabilities_and_features(imgs, tta=tta)
        np.testing.assert_allclose(probs, pred.probabilities(imgs, tta=tta), atol=1e-5)
        np.testing.assert_allclose(feats, pred.features(imgs), atol=1e-5)


def test_onnx_export_gives_the_features_too_and_an_old_logits_only_export_says_so(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxrlab.models.onnx import OnnxEngine, export_model

    torch.manual_seed(0)
    model = build_model("simple_cnn", 3, width=4, convs=1).eval()
    imgs = np.random.default_rng(2).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    torch_pred = Predictor.for_model(model, "multilabel")
    onnx_pred = Predictor(OnnxEngine(export_model(model, 1, 32, tmp_path / "m.onnx")), "multilabel")
    assert onnx_pred.has_features
    probs, feats = onnx_pred.probabilities_and_features(imgs)
    np.testing.assert_allclose(probs, torch_pred.probabilities(imgs), atol=1e-5)
    np.testing.assert_allclose(feats, torch_pred.features(imgs), atol=1e-4)
    old = Predictor(OnnxEngine(export_model(torch.nn.Sequential(model), 1, 32, tmp_path / "old.onnx")), "multilabel")
    assert not old.has_features
    np.testing.assert_allclose(old.probabilities(imgs), probs, atol=1e-5)
    with pytest.raises(CxrlabError, match="re-export"):
        old.features(imgs)
