"""A full disk is one line naming the file (22.5); an unfinished run says so when it predicts (22.7)."""

import errno
import json
import logging
import os
import shutil
import subprocess

import pandas as pd
import pytest
import torch

from conftest import run_cli
from cxrlab import runio
from cxrlab.data.phantom import LABELS
from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder
from cxrlab.runio import append_jsonl, atomic_write, atomic_write_bytes, atomic_write_text

LINE = r"no space left on device writing .*{name} \(\d+ MB free\)"


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(CxrlabError, match=LINE.format(name="summary.json")) as e:
        atomic_write(target, enospc)
    assert "\n" not in str(e.value)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    with pytest.raises(OSError, match="Permission"):  # other errors are not dressed up as a full disk
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))


def test_a_serialiser_error_without_errno_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 116288 vs 116184")

    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of space: a real bug, left as it is
        atomic_write(tmp_path / "last_state.pt", torch_like)
    monkeypatch.setattr(runio, "free_megabytes", lambda path: 0.2)
    with pytest.raises(CxrlabError, match="no space left on device writing .*last_state.pt"):
        atomic_write(tmp_path / "last_state.pt", torch_like)
    with pytest.raises(CxrlabError, match="best.safetensors"):  # safetensors' own wording
        atomic_write(tmp_path / "best.safetensors", lambda tmp: (_ for _ in ()).throw(
            RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")))


def test_append_jsonl_on_a_full_disk_leaves_no_half_line(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"epoch": 1})
    before = log.read_bytes()
    real_write, calls = os.write, []

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runio.os, "write", short_then_full)
    with pytest.raises(CxrlabError, match=LINE.format(name="metrics.jsonl")):
        append_jsonl(log, {"epoch": 2, "train_loss": 0.5})
    monkeypatch.undo()
    assert log.read_bytes() == before
    assert [json.loads(x) for x in log.read_text().splitlines()] == [{"epoch": 1}]


def test_weights_and_resume_state_on_a_full_disk_name_their_file(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "run").create()
    model = torch.nn.Linear(4, 2)
    monkeypatch.setattr(runio.os, "fsync", enospc)
    with pytest.raises(CxrlabError, match=LINE.format(name="best.safetensors")):
        run.save_weights(model, "best")
    with pytest.raises(CxrlabError, match=LINE.format(name="last_state.pt")):
        run.save_state({"epoch": 1, "model": model.state_dict()})
    monkeypatch.undo()
    assert list(run.checkpoints.iterdir()) == []
    run.save_weights(model, "best")  # and they still load when written
    run.load_weights(torch.nn.Linear(4, 2), "best")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MB filesystem (tmpfs, needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_tmpfs(small_tmpfs):
    big = small_tmpfs / "checkpoints" / "best.safetensors"
    with pytest.raises(CxrlabError, match=LINE.format(name="best.safetensors")):
        atomic_write_bytes(big, b"\0" * (2 << 20))
    assert list(big.parent.iterdir()) == []  # the partial temporary file is gone
    run = RunFolder(small_tmpfs / "run").create()
    with pytest.raises(CxrlabError, match=LINE.format(name="best.safetensors")):
        run.save_weights(torch.nn.Linear(1000, 300), "best")  # 1.2 MB of weights
    atomic_write_text(small_tmpfs / "filler", "x" * (shutil.disk_usage(small_tmpfs).free - 4096))
    with pytest.raises(CxrlabError, match=LINE.format(name="metrics.jsonl")):
        for epoch in range(1000):
            run.log_metrics({"epoch": epoch, "pad": "y" * 500})
    assert all(json.loads(x) for x in run.metrics_file.read_text().splitlines())  # whole lines only


# ---- a training stopped by a full disk, then predict / evaluate / report on it ----------------------

def _config(root, runs):
    return {
        "name": "full", "seed": 0, "runs_dir": str(runs),
        "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 32, "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 3, "batch_size": 16},
        "explain": {"enabled": False}, "evaluate": {"n_boot": 20},
    }


def fail_at(monkeypatch, name: str, nth: int) -> list[str]:
    """Make the ``nth`` flush of a file whose temporary name holds ``name`` fail with ENOSPC."""
    real, seen = os.fsync, []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if name in os.path.basename(path):
            seen.append(path)
            if len(seen) == nth:
                enospc()
        return real(fd)

    monkeypatch.setattr(runio.os, "fsync", fsync)
    return seen


@pytest.fixture(scope="module")
def stopped_run(tiny_phantom, tmp_path_factory):
    """A run whose 2nd resume state hit a full disk: best weights of epoch 1 or 2, nothing derived."""
    import yaml

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("full")
    (tmp / "c.yaml").write_text(yaml.safe_dump(_config(tiny_phantom, tmp / "runs")))
    fail_at(mp, "last_state.pt", 2)
    try:
        result = run_cli("train", "-c", tmp / "c.yaml")
    finally:
        mp.undo()
    return RunFolder(tmp / "runs" / "full"), result


def test_training_on_a_full_disk_ends_in_one_line(stopped_run):
    run, r = stopped_run
    assert r.exit_code == 2, r.output + r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.output + err
    assert "no space left on device writing" in err and "last_state.pt" in err and "MB free" in err
    assert run.weights_file("best").is_file() and not run.finished()
    assert "summary.json" in run.unfinished_reason()


def test_predict_on_an_unfinished_run_warns_and_marks_the_rows(stopped_run, tiny_phantom, tmp_path, caplog):
    from cxrlab.workflows import predict_images

    run, _ = stopped_run
    imgs = sorted((tiny_phantom / "images").glob("*.png"))[:3]
    with caplog.at_level(logging.WARNING, logger="cxrlab.workflows.predict"):
        out = predict_images(run.path, imgs)
    assert out["unfinished_run"].tolist() == [True] * 3
    warned = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert warned and "0.5" in warned[0] and str(run.path) in warned[0]
    r = run_cli("predict", run.path, "-i", imgs[0], "--out", tmp_path / "p.csv")
    assert r.exit_code == 0 and pd.read_csv(tmp_path / "p.csv")["unfinished_run"].tolist() == [True]


def test_evaluate_on_the_stopped_run_says_what_is_wrong_in_one_line(stopped_run):
    run, _ = stopped_run
    r = run_cli("evaluate", run.path)
    err = r.stderr.strip()
    assert r.exit_code == 2 and len(err.splitlines()) == 1 and "Traceback" not in r.output, r.output + err
    assert str(run.path) in err and "training did not finish" in err and "--resume" in err


def test_report_on_the_stopped_run_renders_what_there_is_and_says_why_it_is_partial(stopped_run):
    run, _ = stopped_run
    r = run_cli("report", run.path)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output + r.stderr
    text = " ".join(r.stdout.split())  # rich wraps long lines at the terminal width
    assert text.count("note:") == 1 and "training did not finish (no summary.json" in text
    assert run.report_file.is_file()


def test_a_finished_run_is_finished_and_predicts_unmarked(tiny_phantom, tmp_path):
    from cxrlab.config import build_config
    from cxrlab.workflows import predict_images, run_experiment

    cfg = build_config({**_config(tiny_phantom, tmp_path / "runs"), "train": {"epochs": 1, "batch_size": 16}})
    run_experiment(cfg)
    run = RunFolder(tmp_path / "runs" / "full")
    assert run.finished() and run.unfinished_reason() is None
    out = predict_images(run.path, sorted((tiny_phantom / "images").glob("*.png"))[:2])
    assert out["unfinished_run"].tolist() == [False, False]
    run.summary_file.unlink()  # as a killed --resume leaves it
    assert not run.finished()
