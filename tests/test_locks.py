"""One writer per folder: FolderLock, and two `cxrlab train` on one run name (issue 22.1)."""

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from cxrlab.data.phantom import LABELS
from cxrlab.errors import CxrlabError
from cxrlab.locks import FolderLock, lock_path
from cxrlab.run import RunFolder

HOLD = """
import os, sys, time
from cxrlab.locks import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
if len(sys.argv) > 2 and os.fork() == 0:   # a child that outlives its parent (an orphaned pool worker)
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


def holder(folder, fork=False):
    """A process holding ``folder``'s lock (and, with ``fork``, a forked child of it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *(["fork"] if fork else [])],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def flock_free(folder) -> bool:
    """Whether a new open file description could flock the lock file now (the kernel's view)."""
    path = lock_path(folder)
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_second_writer_is_refused_in_one_line_naming_pid_and_host(tmp_path):
    folder = tmp_path / "runs" / "twin"
    proc = holder(folder)
    try:
        with pytest.raises(CxrlabError) as e:
            FolderLock(folder).acquire()
        msg = str(e.value)
        assert f"PID {proc.pid} on {socket.gethostname()}" in msg and "run folder" in msg and "\n" not in msg
        assert str(folder) in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_reentrant_in_one_process_and_beside_the_folder(tmp_path):
    folder = tmp_path / "run"
    outer = FolderLock(folder).acquire()
    inner = FolderLock(folder, "study").acquire()  # e.g. a study running a cell in-process: no deadlock
    assert lock_path(folder).parent == tmp_path and not flock_free(folder)
    RunFolder(folder).create().clear()  # --overwrite deletes the folder, not the lock
    inner.release()
    assert not flock_free(folder), "the outer holder lost the lock when the inner one was released"
    outer.release()
    assert flock_free(folder) and not lock_path(folder).exists()
    with FolderLock(folder):  # taken again after release
        assert not flock_free(folder)


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(folder).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                             "started": "2024-01-01 00:00:00"}))
    with caplog.at_level(logging.WARNING, logger="cxrlab.locks"), FolderLock(folder):
        record = json.loads(lock_path(folder).read_text())
        assert record["pid"] == os.getpid()
    assert any("stale" in r.getMessage() and str(dead.pid) in r.getMessage() for r in caplog.records)


def test_lock_taken_on_another_host_is_never_taken_over(tmp_path):
    folder = tmp_path / "run"
    lock_path(folder).write_text(json.dumps({"pid": 4242, "host": "gpu-node-17", "started": "2024-01-01"}))
    with pytest.raises(CxrlabError, match="PID 4242 on gpu-node-17.*another host.*delete the lock file"):
        FolderLock(folder).acquire()
    assert json.loads(lock_path(folder).read_text())["host"] == "gpu-node-17"  # left as it was


def test_kill_9_of_the_holder_frees_the_lock_even_with_a_forked_child_alive(tmp_path, caplog):
    folder = tmp_path / "run"
    proc = holder(folder, fork=True)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        assert children and all(os.path.exists(f"/proc/{c}") for c in children)  # the child still runs
        with caplog.at_level(logging.WARNING, logger="cxrlab.locks"), FolderLock(folder):
            pass
        assert any("stale" in r.getMessage() for r in caplog.records)
    finally:
        for c in children:
            os.kill(int(c), signal.SIGKILL)


def _config(root, runs, seed, epochs):
    return {
        "name": "twin", "seed": seed, "runs_dir": str(runs),
        "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": 32, "workers": 1},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": epochs, "batch_size": 16, "early_stop": 100},
        "explain": {"enabled": False}, "evaluate": {"n_boot": 20},
    }


def _cli(*args):
    env = {**os.environ, "CXRLAB_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cxrlab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_trainers_on_one_run_name_exactly_one_runs(tiny_phantom, tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        (tmp_path / f"s{seed}.yaml").write_text(yaml.safe_dump(_config(tiny_phantom, runs, seed, 20)))
    first = _cli("train", "-c", tmp_path / "s0.yaml")
    deadline = time.time() + 120
    while not lock_path(runs / "twin").is_file() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    assert first.poll() is None, first.stderr.read()
    tic = time.perf_counter()  # a plain second trainer, and --overwrite / --resume of the same run, at once
    others = {flag or "plain": _cli("train", "-c", tmp_path / "s1.yaml", *([flag] if flag else []))
              for flag in ("", "--overwrite", "--resume")}
    refused = {}
    for k, p in others.items():
        _, err = p.communicate(timeout=120)
        refused[k] = (p.returncode, err.strip(), time.perf_counter() - tic)
    assert first.poll() is None, "the first trainer ended before the others were refused: make it longer"
    assert first.wait(timeout=600) == 0, first.stderr.read()
    for rc, err, _ in refused.values():
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert f"in use by PID {first.pid} on {socket.gethostname()}" in err
    run = RunFolder(runs / "twin")
    assert yaml.safe_load(run.config_file.read_text())["seed"] == 0
    assert [r["epoch"] for r in run.read_metrics()] == list(range(1, 21))  # no interleaved lines
    assert run.finished() and not lock_path(run.path).exists()
    # wall time of each refused process (torch's import dominates it; the check itself: see below)
    assert all(t < 120 for _, _, t in refused.values())


def test_second_trainer_in_process_is_refused_in_under_a_second(tiny_phantom, tmp_path):
    from cxrlab.config import build_config
    from cxrlab.workflows import run_experiment

    runs = tmp_path / "runs"
    proc = holder(runs / "twin")
    try:
        cfg = build_config(_config(tiny_phantom, runs, 1, 1), "test")
        tic = time.perf_counter()
        with pytest.raises(CxrlabError, match=f"in use by PID {proc.pid}"):
            run_experiment(cfg, overwrite=True)
        took = time.perf_counter() - tic
    finally:
        proc.kill()
        proc.wait()
    assert took < 1.0, f"refused after {took:.2f} s"
    assert not (runs / "twin").exists()  # nothing written by the refused trainer
