"""What is checked before a run folder is made: hub weights, the weights file, both classes in train.

Each case used to train (or retry for a minute) and then fail or mislead; each now stops in one
line before any run folder exists, or says in the run what the weights were.
"""

import json
import time

import pytest
import yaml

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder
from cxrlab.workflows import run_experiment

CNN = {"name": "simple_cnn", "options": {"width": 4, "convs": 1}}


def _base(root, runs, source="nih14", **over):
    tree = {"name": "t", "seed": 0, "runs_dir": str(runs),
            "data": {"source": source, "root": str(root), "image_size": 32, "workers": 1},
            "model": dict(CNN), "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
            "evaluate": {"n_boot": 10}, "explain": {"enabled": False}}
    if source == "nih14":
        tree["data"]["labels"] = list(LABELS)
    for k, v in over.items():
        tree[k] = {**tree.get(k, {}), **v} if isinstance(v, dict) else v
    return tree


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    """A Kermany tree (train/test x NORMAL/PNEUMONIA): NORMAL files come first in file order."""
    return write_phantom_dataset("kermany", tmp_path_factory.mktemp("kermany"), n=120, size=48, seed=1).root


def _cli_train(tmp_path, tree, *over):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return run_cli("train", "--config", cfg, *over)


def _one_line(r):
    err = r.stderr.strip()
    assert r.exit_code == 2 and "Traceback" not in r.output + r.stderr and len(err.splitlines()) == 1, err
    return err


def test_hub_weights_offline_stop_in_one_line_before_the_run_folder(tiny_phantom, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    tree = _base(tiny_phantom, tmp_path / "runs", model={"name": "densenet121", "pretrained": "hub", "options": {}})
    tic = time.perf_counter()
    err = _one_line(_cli_train(tmp_path, tree))
    assert time.perf_counter() - tic < 30  # no minute of download retries
    assert "densenet121" in err and "HF_HUB_OFFLINE" in err
    assert "model.pretrained=none" in err and "model.pretrained=/path/weights.safetensors" in err
    assert not (tmp_path / "runs" / "t").exists()  # nothing blocks a retry


def test_first_files_of_kermany_are_refused_before_training(kermany, tmp_path):
    tree = _base(kermany, tmp_path / "runs", source="kermany", task="binary", data={"limit": 10})
    with pytest.raises(CxrlabError, match=r"the train split \(10 images\) has no positive Pneumonia") as e:
        run_experiment(load_config(None, base=tree))
    assert "data.patient_fraction" in str(e.value) and "file order" in str(e.value)
    assert not (tmp_path / "runs" / "t").exists()
    err = _one_line(_cli_train(tmp_path, tree))
    assert "no positive Pneumonia" in err


def test_a_binary_test_split_without_positives_is_refused_too(kermany, tmp_path):
    from cxrlab.workflows.common import build_manifest
    from cxrlab.workflows.experiment import check_labels

    cfg = load_config(None, base=_base(kermany, tmp_path, source="kermany", task="binary"))
    manifest = build_manifest(cfg)
    check_labels(cfg, manifest)  # the whole tree has both classes everywhere
    frame = manifest.frame
    manifest.frame = frame[(frame["split"] != "test") | (frame["Pneumonia"] == 0)].reset_index(drop=True)
    with pytest.raises(CxrlabError, match=r"the test split \(\d+ images\) has no positive Pneumonia.*tested"):
        check_labels(cfg, manifest)


@pytest.fixture(scope="module")
def demo_run(tiny_phantom, tmp_path_factory):
    """A 6-label simple_cnn run (the demo's shape) to fine-tune from."""
    runs = tmp_path_factory.mktemp("demo_runs")
    run_experiment(load_config(None, base=_base(tiny_phantom, runs, name="demo")))
    return RunFolder(runs / "demo")


def test_fine_tuning_from_a_run_folder_says_what_loaded(demo_run, kermany, tmp_path):
    tree = _base(kermany, tmp_path / "runs", source="kermany", task="binary",
                 model={"pretrained": str(demo_run.path)})  # the folder, not the file
    summary = run_experiment(load_config(None, base=tree))
    rec = summary["pretrained"]
    n_model = rec["total"]
    assert rec["file"] == str(demo_run.weights_file("best"))
    assert rec["loaded"] == n_model - 2 and rec["head_reinitialised"] == ["head.weight", "head.bias"]
    run = RunFolder(tmp_path / "runs" / "t")
    assert json.loads(run.summary_file.read_text())["pretrained"]["loaded"] == rec["loaded"]
    assert f"loaded {rec['loaded']} of {n_model} tensors from {demo_run.weights_file('best')}" in (
        run.report_file.read_text())


def test_the_demo_weights_into_another_cnn_stop_in_one_line(demo_run, kermany, tmp_path, monkeypatch, caplog):
    tree = _base(kermany, tmp_path / "runs", source="kermany", task="binary",
                 model={"options": {"width": 8, "convs": 2}})  # the Kermany recipe's CNN is wider and deeper
    err = _one_line(_cli_train(tmp_path, tree, f"model.pretrained={demo_run.weights_file('best')}"))
    assert "only 0 of" in err and "model.pretrained_strict=false" in err
    assert not (tmp_path / "runs" / "t").exists()
    err = _one_line(_cli_train(tmp_path, tree, f"model.pretrained={tmp_path}"))  # a folder that is no run
    assert "checkpoints/best.safetensors" in err
    # strict off: it trains, says so, and stores the share
    monkeypatch.setenv("CXRLAB_QUIET", "0")
    r = _cli_train(tmp_path, tree, f"model.pretrained={demo_run.path}", "model.pretrained_strict=false")
    assert r.exit_code == 0, r.output + r.stderr
    assert "loaded 0 of" in r.stderr and "most of the model starts from random weights" in caplog.text
    assert json.loads(RunFolder(tmp_path / "runs" / "t").summary_file.read_text())["pretrained"]["share"] == 0


def test_a_multilabel_test_split_without_a_label_only_warns(tiny_phantom, tmp_path, caplog):
    from cxrlab.workflows.common import build_manifest
    from cxrlab.workflows.experiment import check_labels

    cfg = load_config(None, base=_base(tiny_phantom, tmp_path))
    manifest = build_manifest(cfg)
    frame = manifest.frame
    manifest.frame = frame[(frame["split"] != "test") | (frame["Nodule"] != 1)].reset_index(drop=True)
    check_labels(cfg, manifest)  # trains: rare labels may be absent from a small official test set
    assert "test split" in caplog.text and "no positive Nodule" in caplog.text
    frame = manifest.frame
    manifest.frame = frame[(frame["split"] != "train") | (frame["Mass"] != 1)].reset_index(drop=True)
    with pytest.raises(CxrlabError, match=r"train split \(\d+ images\) has no positive Mass.*data.labels"):
        check_labels(cfg, manifest)
