"""cxrlab subgroups on a trained tiny model: the planted subgroup gap is found, the clean phantom shows none."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import SubgroupResult
from cxrlab.workflows import run_experiment
from cxrlab.workflows.subgroups import subgroups_run

LABELS = ["Cardiomegaly", "Effusion"]


def _train(tmp_path, name: str, gap: str | None):
    root = write_phantom(tmp_path / f"ph_{name}", n=900, size=48, seed=11, test_fraction=0.5, workers=1,
                         subgroup_gap=gap)
    cfg = load_config(None, base={
        "name": name, "seed": 0, "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "nih14", "root": str(root), "labels": LABELS, "image_size": 48, "val_fraction": 0.2,
                 "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 8, "convs": 1}},
        "train": {"epochs": 6, "batch_size": 32, "lr": 3e-3, "scheduler": "cosine"},
        "evaluate": {"n_boot": 20}, "explain": {"enabled": False},
    })
    run_experiment(cfg)
    return tmp_path / "runs" / name, root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("subgroups")
    return {"planted": _train(tmp, "planted", "sex=F:0.35"), "clean": _train(tmp, "clean", None)}


def _gap(result: SubgroupResult, label: str):
    return result.groupings["sex"].groups["F"].per_label[label].vs_rest["auc"]


def test_planted_gap_found_and_clean_phantom_shows_none(runs):
    meta = json.loads((runs["planted"][1] / "phantom.json").read_text())
    assert meta["subgroup_gap"]["value"] == "F" and meta["subgroup_gap"]["images"] > 300
    planted = subgroups_run(runs["planted"][0], ["sex", "age"], n_boot=400)
    clean = subgroups_run(runs["clean"][0], ["sex", "age"], n_boot=400)
    for lab in LABELS:
        p, c = _gap(planted, lab), _gap(clean, lab)
        logging.getLogger(__name__).info(f"{lab}: planted F - M AUC {p.diff.value:+.3f} [{p.diff.low:+.3f}, {p.diff.high:+.3f}] p={p.p:.3g}; "
              f"clean {c.diff.value:+.3f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}] p={c.p:.3g}")
    # the planted effect: F's AUC below the rest's, CI excluding 0; on the clean phantom the same gap's CI holds 0
    p, c = _gap(planted, "Effusion"), _gap(clean, "Effusion")
    assert p.diff.high < 0, p
    assert c.diff.low <= 0 <= c.diff.high, c
    assert _gap(planted, "Cardiomegaly").diff.high < 0
    p = _gap(planted, "Cardiomegaly")
    assert planted.groupings["sex"].worst["Cardiomegaly"] == "F"
    # the file, the forest plot and the report section
    run = runs["planted"][0]
    back = SubgroupResult.read(run / "subgroups.json")
    assert _gap(back, "Cardiomegaly") == p
    assert (run / "figures" / "subgroups_Cardiomegaly.png").is_file()
    html = (run / "report.html").read_text()
    assert "Subgroups (cxrlab subgroups)" in html and "Worst group per label" in html and "sex = F" in html


def test_bad_input_is_one_line(runs):
    run = runs["clean"][0]
    r = run_cli("subgroups", run, "--age-bins", "30,50,70", "--n-boot", "20")
    assert r.exit_code == 2 and "do not cover" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("subgroups", run, "--by", "sex,race", "--n-boot", "20")
    assert r.exit_code == 2 and "'race'" in r.stderr, r.stderr
    r = run_cli("subgroups", run, "--by", "sex", "--n-boot", "20")
    assert r.exit_code == 0 and "worst group" in r.stdout, r.stdout


def test_column_the_data_lacks_is_one_line(runs, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(runs["clean"][0], run)
    table = pd.read_csv(run / "predictions.csv")
    table.drop(columns=[c for c in ("site",) if c in table.columns]).to_csv(run / "predictions.csv", index=False)
    try:
        subgroups_run(run, ["sex", "site"], n_boot=20)
    except CxrlabError as e:  # a manifest without a site column: one line naming it
        assert "site" in str(e) and "\n" not in str(e)
    else:  # a manifest that has a site column: the analysis reads it from there
        assert "site" in SubgroupResult.read(run / "subgroups.json").groupings
