"""The shared test helpers of conftest.py that the reader tests lean on (one_line, copy_of, real_dicom)."""

from __future__ import annotations

import pytest

from conftest import REAL_DICOM, copy_of, needs_real, one_line, real_dicom
from cxrlab.errors import CxrlabError


def _raise(msg: str):
    def fn():
        raise CxrlabError(msg)
    return fn


def test_one_line_returns_the_message_and_refuses_two_lines_or_no_error():
    assert one_line(_raise("a.csv:3: bad")) == "a.csv:3: bad"
    with pytest.raises(AssertionError):
        one_line(_raise("a.csv:3: bad\nTraceback"))
    with pytest.raises(pytest.fail.Exception):
        one_line(lambda: None)
    with pytest.raises(ValueError):  # another error is not a user mistake: it goes through
        one_line(lambda: int("x"))


def test_copy_of_leaves_the_shared_tree_alone(tmp_path):
    src = tmp_path / "tree"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("x")
    dst = copy_of(src, tmp_path / "t")
    (dst / "a" / "f.txt").write_text("broken")
    assert dst == tmp_path / "t" / "copy" and (src / "a" / "f.txt").read_text() == "x"


@needs_real
def test_real_dicom_gives_the_path_and_its_header():
    path, head = real_dicom()
    assert path == REAL_DICOM and int(head.Rows) > 0 and "PixelData" not in head
