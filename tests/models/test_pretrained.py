"""Local weights say what loaded (N of M), fold RGB to grey, and refuse a file of another model;
hub weights that are neither cached nor reachable stop at once, in one line."""

import time

import pytest
import torch
from safetensors.torch import save_file

from cxrlab.errors import CxrlabError
from cxrlab.models import build_model
from cxrlab.models.pretrained import check_hub_weights, load_local_weights


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_rgb_densenet_file_folds_into_a_grey_model_and_loads_727_of_727(tmp_path):
    import timm

    torch.manual_seed(0)
    rgb = timm.create_model("densenet121", in_chans=3, num_classes=2)
    rgb.features.norm0.num_batches_tracked.fill_(7)
    file = _save(rgb, tmp_path / "imagenet_style.safetensors")
    grey = build_model("densenet121", 2, in_chans=1)
    report = load_local_weights(grey, file)
    total = len(grey.state_dict())
    assert report.loaded == report.total == total  # 727 for timm's densenet121
    assert report.text.startswith(f"loaded {total} of {total} tensors from {file}")
    assert report.folded == ["features.conv0.weight"] and not report.head_reinitialised
    torch.testing.assert_close(grey.features.conv0.weight, rgb.features.conv0.weight.sum(dim=1, keepdim=True))
    assert int(grey.features.norm0.num_batches_tracked) == 7  # scalars follow their loaded module
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(grey.eval()(x), rgb.eval()(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_zero_dim_buffers_alone_never_count_as_a_match(tmp_path):
    """The demo's simple_cnn weights into the Kermany CNN (other width and depth): only the
    num_batches_tracked scalars have equal shapes; that used to "load" and train from random weights."""
    file = _save(build_model("simple_cnn", 6, width=4, convs=1), tmp_path / "demo_best.safetensors")
    kermany_cnn = build_model("simple_cnn", 1, width=8, convs=2)
    before = {k: v.clone() for k, v in kermany_cnn.state_dict().items()}
    with pytest.raises(CxrlabError, match=r"only 0 of \d+ tensors .*model.pretrained_strict=false") as err:
        load_local_weights(kermany_cnn, file)
    assert "\n" not in str(err.value) and str(file) in str(err.value)
    with pytest.raises(CxrlabError, match="only 0 of"):  # the same through build_model
        build_model("simple_cnn", 1, pretrained=str(file), width=8, convs=2)
    lenient = load_local_weights(kermany_cnn, file, strict=False)
    assert lenient.loaded == 0 and lenient.share == 0 and not lenient.strict
    assert all(torch.equal(before[k], v) for k, v in kermany_cnn.state_dict().items())


def test_head_of_another_label_set_is_reinitialised_and_counted_as_not_loaded(tmp_path):
    src = build_model("simple_cnn", 6, width=4, convs=1)
    file = _save(src, tmp_path / "nih.safetensors")
    dst = build_model("simple_cnn", 1, width=4, convs=1)
    report = load_local_weights(dst, file)
    assert report.total == len(dst.state_dict()) and report.loaded == report.total - 2 and report.share == 1
    assert report.head_reinitialised == ["head.weight", "head.bias"] and "re-initialised" in report.text
    torch.testing.assert_close(dst.features[0][0].weight, src.features[0][0].weight)
    record = report.to_record()
    assert record["loaded"] == report.loaded and record["text"] == report.text


def test_a_file_that_is_not_weights_is_one_line(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CxrlabError, match=r"w.safetensors: not a readable weights file"):
        load_local_weights(build_model("simple_cnn", 1, width=4, convs=1), bad)
    with pytest.raises(CxrlabError, match="not found"):
        load_local_weights(build_model("simple_cnn", 1, width=4, convs=1), tmp_path / "missing.pth")


def _offline_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def test_hub_weights_not_cached_and_offline_stop_at_once(monkeypatch, tmp_path):
    _offline_empty_cache(monkeypatch, tmp_path)
    tic = time.perf_counter()
    with pytest.raises(CxrlabError) as err:
        check_hub_weights("densenet121", {})
    msg = str(err.value)
    assert time.perf_counter() - tic < 5
    assert "\n" not in msg and "densenet121" in msg and "HF_HUB_OFFLINE" in msg
    assert "model.pretrained=none" in msg and "model.pretrained=/path/weights.safetensors" in msg
    with pytest.raises(CxrlabError, match="efficientnet_b3"):  # fusion: both backbones are checked
        check_hub_weights("fusion", {"backbones": ["efficientnet_b3", "densenet121"]})
    with pytest.raises(CxrlabError, match="simple_cnn has no hub weights"):
        check_hub_weights("simple_cnn", {})


def test_hub_weights_in_the_local_cache_pass_offline(monkeypatch, tmp_path):
    _offline_empty_cache(monkeypatch, tmp_path)
    snap = tmp_path / "hf" / "hub" / "models--timm--densenet121.ra_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"x")
    assert check_hub_weights("densenet121", {}) == [str(snap / "snapshots" / "abc123" / "model.safetensors")]
