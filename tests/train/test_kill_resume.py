"""kill -9 in the middle of training, then --resume: it ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from cxrlab.data.phantom import LABELS


def config(root, runs, name):
    return {
        "name": name, "seed": 2, "runs_dir": str(runs),
        "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 64, "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 8, "convs": 1}},
        "train": {"epochs": 6, "batch_size": 8, "scheduler": "plateau"},
        "explain": {"enabled": False}, "evaluate": {"n_boot": 20},
    }


def cli(*args, **kw):
    env = {**os.environ, "CXRLAB_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "cxrlab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def metrics(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def test_kill_9_then_resume_matches_uninterrupted(tiny_phantom, tmp_path):
    for name in ("full", "killed"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config(tiny_phantom, tmp_path / "runs", name)))
    full = cli("train", "-c", str(tmp_path / "full.yaml"))
    assert full.wait(timeout=600) == 0, full.stderr.read()

    proc = cli("train", "-c", str(tmp_path / "killed.yaml"))
    log = tmp_path / "runs" / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while len(metrics(log)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(metrics(log))
    assert 2 <= done < 6
    assert not (tmp_path / "runs" / "killed" / "predictions.csv").exists()

    resumed = cli("train", "-c", str(tmp_path / "killed.yaml"), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a = metrics(tmp_path / "runs" / "full" / "metrics.jsonl")
    b = metrics(log)
    assert [r["epoch"] for r in b] == [r["epoch"] for r in a]
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-4 and abs(ra["val_loss"] - rb["val_loss"]) < 1e-4
    sa = json.loads((tmp_path / "runs" / "full" / "summary.json").read_text())
    sb = json.loads((tmp_path / "runs" / "killed" / "summary.json").read_text())
    assert abs(sa["macro_auc"] - sb["macro_auc"]) < 1e-6


def test_resume_killed_after_a_new_best_leaves_no_file_that_disagrees_with_best(tiny_phantom, tmp_path):
    cfg = config(tiny_phantom, tmp_path / "runs", "r")
    cfg["train"].update({"epochs": 2, "lr": 3e-3})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("train", "-c", str(tmp_path / "r.yaml")).wait(timeout=600) == 0
    run = tmp_path / "runs" / "r"
    assert cli("export", str(run)).wait(timeout=300) == 0
    derived = ["predictions.csv", "predictions_val.csv", "evaluation.json", "summary.json", "report.html",
               "model.onnx"]
    assert all((run / f).is_file() for f in derived)

    proc = cli("train", "-c", str(tmp_path / "r.yaml"), "--resume", "train.epochs=30")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(r["epoch"] > 2 and r["best"] for r in metrics(run / "metrics.jsonl")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the resumed run ended before a new best epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [f for f in derived if (run / f).exists()]
    assert left == [], f"files derived from the earlier best weights survived: {left}"
    info = json.loads((run / "model.json").read_text())
    assert "not finished" in info["threshold_rule"]
    assert (run / "checkpoints" / "best.safetensors").is_file()
