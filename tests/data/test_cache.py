"""The decode-once cache: pixels, CLAHE, keys, resume, bad files; batched augmentation."""

import cv2
import numpy as np
import pytest
import torch

from cxrlab.data.cache import RowView, cache_key, prepare_cache
from cxrlab.data.preprocess import Preprocess, letterbox, preprocess
from cxrlab.data.transforms import Augment, augment, to_float
from cxrlab.errors import CxrlabError


def images(tmp_path, n=12, shape=(300, 260)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 255, shape).astype(np.uint8), (0, 0), 3)
        img[20:60, 30:90] = 250
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def test_cached_pixels_equal_a_direct_decode_and_resize(tmp_path):
    paths = images(tmp_path)
    p = Preprocess(size=64)
    cache = prepare_cache(paths, [x.name for x in paths], p, tmp_path / "c", "k1", workers=1)
    assert cache.images.shape == (12, 64, 64) and cache.images.dtype == np.uint8
    for i, path in enumerate(paths):
        direct = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (64, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(cache.images[i].astype(int) - direct).max() <= 1


def test_clahe_equals_opencv_and_letterbox_keeps_aspect(tmp_path):
    paths = images(tmp_path, n=2)
    raw = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE)
    p = Preprocess(size=80, clahe=True, clahe_clip=3.0, clahe_tiles=4)
    expected = cv2.resize(cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(raw), (80, 80),
                          interpolation=cv2.INTER_AREA)
    assert np.array_equal(preprocess(raw, p), expected)
    lb = letterbox(raw)
    assert lb.shape == (300, 300) and np.array_equal(lb[:, 20:280], raw)


def test_cache_key_changes_with_every_pixel_setting():
    ids = ["a", "b"]
    keys = {cache_key("nih14", "/d", ids, p) for p in (
        Preprocess(224), Preprocess(256), Preprocess(224, resize="letterbox"), Preprocess(224, clahe=True),
        Preprocess(224, clahe=True, clahe_clip=4.0))}
    keys |= {cache_key("nih14", "/d", ["a"], Preprocess(224)), cache_key("csv", "/d", ids, Preprocess(224))}
    assert len(keys) == 7


def test_interrupted_prepare_resumes_and_reuses(tmp_path, monkeypatch):
    paths = images(tmp_path, n=10)
    ids = [x.name for x in paths]
    import cxrlab.data.cache as cache_mod

    calls = []
    real = cache_mod._work

    def flaky(args):
        calls.append(args[0])
        if len(calls) == 7:
            raise KeyboardInterrupt  # a crash mid-way
        return real(args)

    monkeypatch.setattr(cache_mod, "_work", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(paths, ids, Preprocess(32), tmp_path / "c", "k", workers=1, chunk=3)
    assert not (tmp_path / "c" / "k" / "index.json").exists()
    monkeypatch.setattr(cache_mod, "_work", lambda a: (calls.append(a[0]), real(a))[1])
    calls.clear()
    cache = prepare_cache(paths, ids, Preprocess(32), tmp_path / "c", "k", workers=1, chunk=3)
    assert sorted(calls) == [6, 7, 8, 9]  # the first two chunks (6 rows) were not decoded again
    direct = prepare_cache(paths, ids, Preprocess(32), tmp_path / "c2", "k", workers=1)
    assert np.array_equal(np.asarray(cache.images), np.asarray(direct.images))
    calls.clear()
    prepare_cache(paths, ids, Preprocess(32), tmp_path / "c", "k", workers=1)
    assert calls == []  # a finished cache is reused


def test_unreadable_images_are_all_reported(tmp_path):
    paths = images(tmp_path, n=5)
    paths[1].write_bytes(b"not a png")
    paths[3].write_bytes(b"")
    with pytest.raises(CxrlabError) as e:
        prepare_cache(paths, [x.name for x in paths], Preprocess(32), tmp_path / "c", "k", workers=1)
    msg = str(e.value)
    assert "2 of 5 images could not be read" in msg and "1.png" in msg and "3.png" in msg


def test_row_view_reads_any_order():
    data = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    v = RowView(data, np.array([4, 0, 2]))
    assert len(v) == 3 and np.array_equal(v[np.array([2, 0])], data[[2, 4]])
    assert np.array_equal(v[0:2], data[[4, 0]])


def test_same_seed_same_augmented_batch_and_switches():
    x = to_float(torch.randint(0, 255, (4, 32, 32), dtype=torch.uint8))
    a = augment(x, torch.Generator().manual_seed(3), Augment(hflip=True, crop_scale=0.7))
    b = augment(x, torch.Generator().manual_seed(3), Augment(hflip=True, crop_scale=0.7))
    c = augment(x, torch.Generator().manual_seed(4), Augment(hflip=True, crop_scale=0.7))
    assert torch.equal(a, b) and not torch.equal(a, c)
    off = Augment(rotate_deg=0, zoom=0, shift=0, brightness=0, contrast=0)
    assert torch.allclose(augment(x, torch.Generator().manual_seed(0), off), x, atol=1e-5)
    flip_only = Augment(hflip=True, rotate_deg=0, zoom=0, shift=0, brightness=0, contrast=0)
    y = augment(x, torch.Generator().manual_seed(0), flip_only)
    for i in range(4):
        assert torch.allclose(y[i], x[i], atol=1e-5) or torch.allclose(y[i], x[i].flip(-1), atol=1e-5)


def test_fast_affine_grid_equals_torch():
    import torch.nn.functional as F

    from cxrlab.data.transforms import affine_grid

    theta = torch.randn(5, 2, 3)
    assert torch.allclose(affine_grid(theta, 37, 29), F.affine_grid(theta, [5, 1, 37, 29], align_corners=False),
                          atol=1e-5)
