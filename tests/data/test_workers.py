"""Pool workers die with their parent: kill -9 leaves no orphan behind (issue 22.3)."""

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from cxrlab.data.workers import worker_pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, uses prctl")

PR_GET_PDEATHSIG = 2

POOL = """
import sys, time
from cxrlab.data import workers
if sys.argv[1] == "watchdog-only":
    workers.set_parent_death_signal = lambda sig=None: False
with workers.worker_pool(2) as pool:
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    time.sleep(60)
"""


def _death_signal() -> int:
    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
    return sig.value


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def kill_9_and_wait_for_workers(proc: subprocess.Popen, n: int, seconds: float = 5.0) -> tuple[list[int], float]:
    """Wait for ``n`` workers, kill -9 their parent; return the workers still alive after ``seconds``."""
    deadline = time.time() + 120
    while len(kids := children(proc.pid)) < n and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(kids) >= n, f"no {n} workers appeared (exit {proc.poll()})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    tic = time.time()
    while any(map(alive, kids)) and time.time() - tic < seconds:
        time.sleep(0.05)
    left = [k for k in kids if alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    return left, time.time() - tic


def test_workers_carry_the_parent_death_signal():
    with worker_pool(2) as pool:
        assert pool.submit(_death_signal).result() == signal.SIGKILL
    assert _death_signal() == 0  # the parent itself is left alone


@pytest.mark.parametrize("mode", ["death-signal", "watchdog-only"])
def test_kill_9_of_a_pool_owner_leaves_no_worker(mode):
    proc = subprocess.Popen([sys.executable, "-c", POOL, mode])
    left, _ = kill_9_and_wait_for_workers(proc, 2, seconds=5.0)
    assert left == [], f"{mode}: workers {left} outlived their parent"


def test_kill_9_of_cxrlab_phantom_with_2_workers_leaves_no_process(tmp_path):
    env = {**os.environ, "CXRLAB_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cxrlab", "phantom", "--out", str(tmp_path / "p"), "--n", "20000",
                             "--size", "64", "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    left, _ = kill_9_and_wait_for_workers(proc, 2, seconds=5.0)
    assert left == [], f"phantom workers {left} still running 5 s after kill -9 of their parent"


SPAWN = """
import subprocess, sys, time
from cxrlab.data.workers import set_parent_death_signal
procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=set_parent_death_signal)
         for _ in range(2)]
time.sleep(60)
"""


def _running_their_program(pids: list[int]) -> bool:
    """True once every child has exec'd its command (so its preexec_fn, the prctl call, has run)."""
    try:
        return all("time.sleep(60)" in open(f"/proc/{k}/cmdline").read() for k in pids)
    except FileNotFoundError:
        return False


def test_subprocesses_started_with_the_death_signal_die_with_their_parent():
    # as the study launcher starts one cell process per GPU
    proc = subprocess.Popen([sys.executable, "-c", SPAWN])
    deadline = time.time() + 120
    while not (len(kids := children(proc.pid)) >= 2 and _running_their_program(kids)) and time.time() < deadline:
        time.sleep(0.05)
    left, _ = kill_9_and_wait_for_workers(proc, 2, seconds=5.0)
    assert left == []
