"""One run-length parser, two conventions: CheXmask's absolute 1-based starts and SIIM's relative offsets.

The parser is shared (``cxrlab.data.masks.parse_runs``); each reader keeps its own error lines, which
users and tests grep for, so they are pinned here word for word."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cxrlab.data.masks import CHEXMASK_RUNS, RunCode, parse_runs, rle_decode, rle_encode
from cxrlab.data.sources.siim import SIIM_RUNS, rle_box, siim_rle_decode, siim_rle_encode
from cxrlab.errors import CxrlabError


def _pairs(rle: str, code: RunCode, h: int = 4, w: int = 4) -> list[tuple[int, int]]:
    starts, lengths = parse_runs(rle, h, w, "W", code)
    return list(zip(starts.tolist(), lengths.tolist(), strict=True))


def test_one_parser_reads_both_conventions_by_hand():
    # CheXmask: 1-based absolute starts -> 0-based starts as written minus one
    assert _pairs("3 2 8 4", CHEXMASK_RUNS) == [(2, 2), (7, 4)]
    # SIIM: each offset counts from the end of the run before (the first from pixel 0)
    assert _pairs("3 2 8 4", SIIM_RUNS, 8, 8) == [(3, 2), (13, 4)]
    assert _pairs("0 1 1 1", SIIM_RUNS) == [(0, 1), (2, 1)]
    for empty in ("", "  ", "nan", "NaN"):
        assert _pairs(empty, CHEXMASK_RUNS) == []
    for empty in ("", "-1", " -1 "):
        assert _pairs(empty, SIIM_RUNS) == []
    # a length of 0 is a CheXmask no-op but no SIIM run; a SIIM offset of 0 is no CheXmask start
    assert _pairs("2 0", CHEXMASK_RUNS) == [(1, 0)]
    with pytest.raises(CxrlabError, match="length below 1"):
        _pairs("2 0", SIIM_RUNS)
    assert _pairs("0 2", SIIM_RUNS) == [(0, 2)]
    with pytest.raises(CxrlabError, match="start below 1"):
        _pairs("0 2", CHEXMASK_RUNS)


def test_both_codes_round_trip_through_the_shared_parser():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((5, 7)) < 0.4
        assert np.array_equal(rle_decode(rle_encode(mask), 5, 7), mask)
        assert np.array_equal(siim_rle_decode(siim_rle_encode(mask), 5, 7), mask)


def test_the_convention_words_the_messages():
    """A convention is data: renaming the field renames it in every message, nothing else changes."""
    other = dataclasses.replace(SIIM_RUNS, name="Pixels")
    with pytest.raises(CxrlabError) as e:
        parse_runs("1 2 3", 4, 4, "f.csv:2", other)
    assert str(e.value) == "f.csv:2: Pixels has an odd number of values (3); expected 'offset length' pairs"
    assert _pairs("0 2", other) == _pairs("0 2", SIIM_RUNS)


CHEX = "W: run-length code"
SIIM = "W: EncodedPixels"


@pytest.mark.parametrize(("decode", "rle", "message"), [
    (rle_decode, "-1", f"{CHEX} has an odd number of values (1); expected 'start length' pairs"),
    (rle_decode, "None", f"{CHEX} is not a list of integers ('None'...)"),
    (rle_decode, "1 2 x", f"{CHEX} is not a list of integers ('1 2 x'...)"),
    (rle_decode, "1 2 3", f"{CHEX} has an odd number of values (3); expected 'start length' pairs"),
    (rle_decode, "0 2", f"{CHEX} has a start below 1 or a negative length"),
    (rle_decode, "1 -1", f"{CHEX} has a start below 1 or a negative length"),
    (rle_decode, "15 3", f"{CHEX} runs past the 4x4 image it is given for (a run ends at pixel 17 of 16): "
                         "wrong Height/Width?"),
    (siim_rle_decode, None, f"{SIIM} is not a list of integers ('None')"),
    (siim_rle_decode, "nan", f"{SIIM} is not a list of integers ('nan')"),
    (siim_rle_decode, "1 2 x", f"{SIIM} is not a list of integers ('1 2 x')"),
    (siim_rle_decode, "1 2 3", f"{SIIM} has an odd number of values (3); expected 'offset length' pairs"),
    (siim_rle_decode, "1 -1", f"{SIIM} has a negative offset or a length below 1"),
    (siim_rle_decode, "1 0", f"{SIIM} has a negative offset or a length below 1"),
    (siim_rle_decode, "16 1", f"{SIIM} does not fit the 4x4 image: its runs end at pixel 17 of 16"),
    (siim_rle_decode, "3 2 8 4", f"{SIIM} does not fit the 4x4 image: its runs end at pixel 17 of 16"),
    (rle_box, "15 3", f"{SIIM} does not fit the 4x4 image: its runs end at pixel 18 of 16"),
])
def test_each_reader_keeps_its_own_error_line(decode, rle, message):
    with pytest.raises(CxrlabError) as e:
        decode(rle, 4, 4, where="W")
    assert str(e.value) == message


def test_a_missing_chexmask_code_is_an_empty_mask_and_a_missing_siim_code_is_not():
    assert not rle_decode(None, 4, 4).any()
    with pytest.raises(CxrlabError, match="EncodedPixels is not a list of integers"):
        siim_rle_decode(None, 4, 4)
