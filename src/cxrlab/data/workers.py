"""Process pools whose workers die with their parent.

A ``kill -9`` of ``cxrlab prepare`` (an OOM kill, a SLURM preemption) used to
leave its pool workers running with PPID 1, about 420 MB each, forever: the
parent never got to shut the pool down.  Every pool in cxrlab comes from
:func:`worker_pool`, whose initializer makes each worker exit when its parent
goes:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker
  the moment the parent thread that forked it dies;
- everywhere (and as a second line on Linux): a daemon thread that polls the
  parent's PID once a second and ends the worker when it has changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 1.0


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


#: Loaded in the parent, so a forked child (``preexec_fn``) calls prctl at once instead of first
#: spending milliseconds in dlopen while its parent may already be gone.
_LIBC = _load_libc()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only); True when set.

    A parent that dies between the fork and the prctl call sends no signal, so the parent is looked at
    again after it: a child that has already lost it sends ``sig`` to itself.
    """
    if _LIBC is None:
        return False
    parent = os.getppid()
    try:
        ok = _LIBC.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except AttributeError:
        return False
    if ok and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return ok


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _watch_parent(parent: int, direct: bool) -> None:
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if (direct and os.getppid() != parent) or not _exists(parent):  # re-parented, or gone
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` ends (death signal plus a watchdog thread).

    The death signal needs ``parent`` to be the direct parent (the ``fork`` start method);
    under ``forkserver``/``spawn`` the watchdog alone watches ``parent``'s PID.
    """
    direct = os.getppid() == parent
    if direct:
        set_parent_death_signal()
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent, direct), daemon=True,
                     name="cxrlab-parent-watchdog").start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that exit when this process dies.

    Use it from the thread that creates it: the kernel's death signal follows the thread that
    forked a worker (a worker outliving only that thread would be killed early).
    """
    return ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
