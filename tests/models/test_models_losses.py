"""Architectures (1 and 3 channels), losses against hand computations, schedules, two-phase freezing."""

import math

import numpy as np
import pytest
import torch

from cxrlab.errors import CxrlabError
from cxrlab.models import build_model, cam_layer, head_parameters
from cxrlab.train.losses import (
    make_loss,
    masked_bce,
    masked_focal,
    onehot_cross_entropy,
    pos_weight_from,
)
from cxrlab.train.stopping import BestTracker

ARCHS = [("simple_cnn", 64), ("densenet121", 64), ("resnet18", 64), ("resnet50", 64), ("efficientnet_b0", 64),
         ("efficientnet_b3", 64), ("fusion", 64)]


@pytest.mark.parametrize("name,size", ARCHS)
@pytest.mark.parametrize("chans", [1, 3])
def test_forward_backward_each_architecture(name, size, chans):
    torch.manual_seed(0)
    m = build_model(name, 5, in_chans=chans, **({"width": 8} if name == "simple_cnn" else {}))
    x = torch.randn(2, chans, size, size)
    out = m(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in head_parameters(m))
    assert isinstance(cam_layer(m), torch.nn.Module)


def test_small_forms_of_the_paper_models_take_timm_options():
    """The phantom forms of model-comparison studies: a small DenseNet, a fusion of small backbones."""
    tiny = {"growth_rate": 8, "block_config": [2, 2, 2, 2]}
    dense = build_model("densenet121", 3, growth_rate=8, block_config=[2, 2, 2, 2])
    full = build_model("densenet121", 3)
    assert sum(p.numel() for p in dense.parameters()) < sum(p.numel() for p in full.parameters()) / 100
    fusion = build_model("fusion", 3, backbones=["densenet121", "tinynet_e"], backbone_options=[tiny, {}], dim=32)
    assert fusion(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    assert sum(p.numel() for p in fusion.backbone_a.parameters()) < 100_000
    with pytest.raises(CxrlabError, match="two backbones"):
        build_model("fusion", 3, backbones=["densenet121"])


def test_unknown_model_and_local_pretrained_weights(tmp_path):
    with pytest.raises(CxrlabError, match="unknown model"):
        build_model("densenet999", 3)
    from safetensors.torch import save_file

    src = build_model("resnet18", 1000, in_chans=1)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    dst = build_model("resnet18", 4, in_chans=1, pretrained=str(tmp_path / "w.safetensors"))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)  # backbone loaded
    assert dst.fc.weight.shape == (4, 512)  # head re-initialised for 4 labels
    with pytest.raises(CxrlabError, match="not found"):
        build_model("resnet18", 4, pretrained=str(tmp_path / "missing.pth"))


def test_simple_cnn_global_max_pool_sees_one_bright_pixel_that_averaging_dilutes():
    x = torch.zeros(2, 1, 128, 128)
    x[1, 0, 60, 60] = 50.0  # the second image: one bright pixel
    change, pooled = {}, {}
    for pool in ("avg", "max", "avgmax"):
        torch.manual_seed(0)  # the same weights for each pooling
        model = build_model("simple_cnn", 1, width=4, convs=1, global_pool=pool).eval()
        with torch.no_grad():
            pooled[pool] = model.forward_head(model.forward_features(x), pre_logits=True)
        change[pool] = float((pooled[pool][1] - pooled[pool][0]).abs().max())
    assert change["avg"] < change["max"] / 5  # a few of 16 x 16 positions: the mean dilutes it
    torch.testing.assert_close(pooled["avgmax"], 0.5 * (pooled["avg"] + pooled["max"]))
    with pytest.raises(CxrlabError, match="global_pool must be avg, max or avgmax"):
        build_model("simple_cnn", 1, global_pool="median")


def test_bce_and_masking_by_hand():
    z = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expect = np.mean([math.log(2), math.log(1 + math.e ** -1), math.log(1 + math.e ** -0.5)])
    assert masked_bce(z, y).item() == pytest.approx(expect, rel=1e-6)
    pw = torch.tensor([3.0, 2.0])
    weighted = np.mean([3 * math.log(2), math.log(1 + math.e ** -1), 2 * math.log(1 + math.e ** -0.5)])
    assert masked_bce(z, y, pw).item() == pytest.approx(weighted, rel=1e-6)


def test_focal_by_hand():
    z, y = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    expect = np.mean(0.25 * (1 - p) ** 2 * -np.log(p))
    assert masked_focal(z, y, 0.25, 2.0).item() == pytest.approx(expect, rel=1e-5)
    # gamma 0, alpha 0.5: half the BCE
    assert masked_focal(z, y, 0.5, 0.0).item() == pytest.approx(0.5 * masked_bce(z, y).item(), rel=1e-6)


def test_cross_entropy_with_smoothing_by_hand():
    z = torch.tensor([[1.0, 0.0, -1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    logp = z[0] - torch.logsumexp(z[0], 0)
    assert onehot_cross_entropy(z, y).item() == pytest.approx(-logp[0].item(), rel=1e-6)
    soft = torch.tensor([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert onehot_cross_entropy(z, y, 0.1).item() == pytest.approx(-(soft * logp).sum().item(), rel=1e-6)


def test_pos_weight_and_loss_choice():
    t = np.array([[1, 0], [0, 0], [0, np.nan], [0, 1]], dtype=float)
    assert pos_weight_from(t).tolist() == pytest.approx([3.0, 2.0])
    with pytest.raises(CxrlabError, match="multi-class"):
        make_loss("focal", "multiclass")
    with pytest.raises(CxrlabError, match="use bce"):
        make_loss("ce", "multilabel")


def test_best_tracker_on_a_scripted_sequence():
    tr = BestTracker(patience=2)
    scores = [0.70, 0.72, 0.71, 0.72, 0.70, 0.75]
    saved, stopped_before = [], None
    for epoch, s in enumerate(scores, start=1):
        if tr.should_stop(epoch):
            stopped_before = epoch
            break
        if tr.update(epoch, s):
            saved.append(epoch)
    assert saved == [1, 2] and stopped_before == 5 and tr.best == 0.72
    assert not BestTracker(2).update(1, float("nan"))


def test_plateau_divides_lr_by_ten_after_two_stalled_epochs():
    from cxrlab.config import load_config
    from cxrlab.train.optim import make_optimizer as _optimizer
    from cxrlab.train.optim import make_scheduler as _scheduler

    cfg = load_config(None, ["train.lr=0.001"])
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = _optimizer(p, cfg, cfg.train.lr)
    sched = _scheduler(opt, cfg, 10)
    lrs = []
    for val_loss in [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.92]:
        sched.step(val_loss)
        lrs.append(opt.param_groups[0]["lr"])
    # torch semantics (as seed 001's code): patience 2 = two stalled epochs tolerated, cut on the third
    assert lrs[:4] == pytest.approx([1e-3] * 4)
    assert lrs[4] == pytest.approx(1e-4)  # 0.95, 0.93, 0.92 did not beat 0.9
    assert lrs[6] == pytest.approx(1e-4)


def test_two_phase_freezes_the_backbone_then_trains_all(tiny_phantom, tmp_path):
    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.workflows import run_experiment

    cfg = load_config(None, base={
        "name": "two", "seed": 0, "runs_dir": str(tmp_path),
        "data": {"root": str(tiny_phantom), "labels": list(LABELS), "image_size": 32, "workers": 1},
        "model": {"name": "simple_cnn", "width": 4, "convs": 1},
        "train": {"epochs": 3, "freeze_epochs": 2, "head_lr": 1e-3, "finetune_lr": 1e-5, "scheduler": "none"},
        "explain": {"enabled": False}, "evaluate": {"n_boot": 10},
    })
    import json

    run_experiment(cfg)
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == [1, 1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3, 1e-5])


def test_frozen_phase_leaves_backbone_weights_unchanged(tiny_phantom, tmp_path):
    import copy

    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.run import RunFolder
    from cxrlab.train.loop import ArraySplit, fit

    cfg = load_config(None, base={
        "data": {"labels": list(LABELS)}, "model": {"name": "simple_cnn", "width": 4, "convs": 1},
        "train": {"epochs": 1, "freeze_epochs": 1, "scheduler": "none", "batch_size": 8}})
    torch.manual_seed(0)
    model = build_model("simple_cnn", 6, width=4, convs=1)
    before = copy.deepcopy(model.state_dict())
    imgs = np.random.default_rng(0).integers(0, 255, (16, 32, 32), dtype=np.uint8)
    y = torch.from_numpy((np.random.default_rng(1).random((16, 6)) < 0.3).astype(np.float32))
    fit(model, ArraySplit(imgs, y), ArraySplit(imgs, y), list(LABELS), cfg, RunFolder(tmp_path).create())
    after = model.state_dict()
    conv = "features.0.0.weight"
    assert torch.equal(before[conv], after[conv])
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_tensorboard_option_logs_or_says_what_is_missing(tiny_phantom, tmp_path):
    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.errors import CxrlabError
    from cxrlab.workflows import run_experiment

    cfg = load_config(None, base={
        "name": "tb", "runs_dir": str(tmp_path),
        "data": {"root": str(tiny_phantom), "labels": list(LABELS), "image_size": 32, "workers": 1},
        "model": {"name": "simple_cnn", "width": 4, "convs": 1},
        "train": {"epochs": 1, "tensorboard": True}, "explain": {"enabled": False}, "evaluate": {"n_boot": 10}})
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(CxrlabError, match="pip install tensorboard"):
            run_experiment(cfg)
        return
    run_experiment(cfg)
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
