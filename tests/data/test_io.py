import cv2
import numpy as np
import pytest

from conftest import REAL, needs_real
from cxrlab.data.io import read_gray, to_uint8_resized
from cxrlab.errors import CxrlabError


def test_corrupt_empty_and_missing_files_name_the_file(tmp_path):
    good = tmp_path / "ok.png"
    cv2.imwrite(str(good), np.zeros((20, 20), np.uint8))
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:30])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for p, what in [(trunc, "truncated PNG"), (empty, "empty"), (tmp_path / "none.png", "not found")]:
        with pytest.raises(CxrlabError) as e:
            read_gray(p)
        assert str(p) in str(e.value) and what in str(e.value)


def test_truncated_jpeg_and_png_are_refused_not_decoded_partially(tmp_path):
    img = (np.random.default_rng(0).random((120, 120)) * 255).astype(np.uint8)
    for name in ("a.jpg", "b.png"):
        full = tmp_path / name
        cv2.imwrite(str(full), img)
        data = full.read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: int(len(data) * 0.7)])
        with pytest.raises(CxrlabError, match=f"cut_{name}: truncated"):
            read_gray(cut)
        assert read_gray(full).shape == (120, 120)


def test_rgb_to_grey_and_16_bit_kept_until_resize(tmp_path):
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 1] = 200
    p = tmp_path / "c.png"
    cv2.imwrite(str(p), rgb)
    g = read_gray(p)
    assert g.shape == (10, 10) and g.dtype == np.uint8
    ramp = (np.arange(64, dtype=np.uint16)[None, :].repeat(64, 0) * 1000).astype(np.uint16)
    p16 = tmp_path / "r.png"
    cv2.imwrite(str(p16), ramp)
    r = read_gray(p16)
    assert r.dtype == np.uint16
    small = to_uint8_resized(r, 16)
    assert small.dtype == np.uint8 and small.shape == (16, 16)
    assert small[0, 0] == 0 and small[0, -1] == 255 and np.all(np.diff(small[0].astype(int)) > 0)


@needs_real
def test_real_nih_png_reads():
    img = read_gray(REAL / "samples" / "00000001_000.png")
    assert img.shape == (512, 512) and img.dtype == np.uint8
