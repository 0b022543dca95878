"""The planted shortcut: burned-in text outside the lungs, correlated with one label at a chosen rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import run_cli
from cxrlab.data.phantom import render
from cxrlab.data.phantom_layouts.shortcut import REGION, Shortcut
from cxrlab.errors import CxrlabError

N, SIZE = 160, 32


def _renders(shortcut: Shortcut | None):
    return [render(i, size=SIZE, seed=4, shortcut=shortcut, masks=True) for i in range(N)]


def _corner_brightness(pixels: np.ndarray) -> float:
    x0, y0, x1, y1 = (int(round(v * SIZE)) for v in REGION)
    return float(pixels[y0:y1, x0:x1].mean())


def test_the_text_is_the_only_change_lies_outside_the_lungs_and_follows_the_rule():
    rule = Shortcut("Effusion", 0.9, 0.1)
    clean, planted = _renders(None), _renders(rule)
    marked = {True: [], False: []}
    for c, p in zip(clean, planted, strict=True):
        assert c.labels == p.labels and c.boxes == p.boxes
        diff = c.pixels != p.pixels
        assert diff.any() == p.shortcut  # marked images change, the others are the clean ones
        lungs_or_heart = p.masks["left_lung"] | p.masks["right_lung"] | p.masks["heart"]
        assert not (diff & lungs_or_heart).any()
        marked[bool(p.labels["Effusion"])].append(p.shortcut)
    pos, neg = np.mean(marked[True]), np.mean(marked[False])
    n_pos, n_neg = len(marked[True]), len(marked[False])
    assert abs(pos - 0.9) < 4 * np.sqrt(0.09 / n_pos) and abs(neg - 0.1) < 4 * np.sqrt(0.09 / n_neg)


def test_the_corner_alone_predicts_the_label_only_when_planted():
    """The effect planted (a pixel cue that predicts Effusion) and not planted (it does not)."""
    y = np.array([r.labels["Effusion"] for r in _renders(None)])
    auc = {}
    for name, rule in (("clean", None), ("planted", Shortcut("Effusion", 0.9, 0.1))):
        score = np.array([_corner_brightness(r.pixels) for r in _renders(rule)])
        auc[name] = roc_auc_score(y, score)
    assert auc["planted"] > 0.8
    assert abs(auc["clean"] - 0.5) < 0.2


def test_phantom_json_records_the_rule_and_the_default_stays_without(tmp_path):
    from cxrlab.data.phantom_dataset import write_phantom

    write_phantom(tmp_path / "s", n=30, size=SIZE, seed=1, workers=1, shortcut="Mass:1:0")
    meta = json.loads((tmp_path / "s" / "phantom.json").read_text())["shortcut"]
    assert meta["label"] == "Mass" and meta["positive_rate"] == 1.0 and meta["negative_rate"] == 0.0
    got_pos, n_pos = meta["marked_positives"]
    assert got_pos == n_pos and meta["marked_negatives"][0] == 0
    assert len(meta["box"]) == 4
    write_phantom(tmp_path / "d", n=30, size=SIZE, seed=1, workers=1)
    assert "shortcut" not in json.loads((tmp_path / "d" / "phantom.json").read_text())


def test_cli_writes_masks_and_shortcut(tmp_path):
    r = run_cli("phantom", "--out", tmp_path, "--n", 12, "--size", SIZE, "--workers", 1, "--masks",
                "--shortcut", "Effusion:0.9:0.1")
    assert r.exit_code == 0, r.stdout
    assert len(list((tmp_path / "masks" / "heart").glob("*.png"))) == 12
    assert json.loads((tmp_path / "phantom.json").read_text())["shortcut"]["label"] == "Effusion"


@pytest.mark.parametrize(("args", "msg"), [
    (["--shortcut", "Foo:0.9:0.1"], "not a label"),
    (["--shortcut", "Effusion:1.5:0.1"], "must be in [0, 1]"),
    (["--shortcut", "Effusion:x"], "rates must be numbers"),
    (["--shortcut", "Effusion:0.9:0.1", "--kind", "kermany"], "nih14 only"),
    (["--masks", "--kind", "chexpert"], "--masks applies"),
])
def test_bad_shortcut_specs_are_one_line(tmp_path, args, msg):
    r = run_cli("phantom", "--out", tmp_path, "--n", 12, "--size", SIZE, *args)
    assert r.exit_code != 0
    assert msg in r.output and "Traceback" not in r.output
    with pytest.raises(CxrlabError):
        Shortcut("Effusion", -0.1, 0.1)
