"""One writer per folder: an exclusive lock beside a run, a study or a cache entry.

Two ``cxrlab train`` on one run name used to interleave their files (the config
of one, the weights of the other).  :class:`FolderLock` takes ``fcntl.flock``
(non-blocking) on ``<parent>/.<name>.lock`` and writes a JSON record into it:
the holder's PID, host, start time and command, so the second writer is
refused in one line that says who holds the folder.  The file sits *beside* the
folder, so ``--overwrite`` (which deletes the folder) keeps the lock.

Rules:

- the kernel releases a ``flock`` when its holder dies (kill -9 included), so a
  record left by a dead process on this host is stale: it is taken over with a
  warning;
- a record from *another host* is never taken over automatically.  On NFS or
  Lustre ``flock`` may be node-local or a no-op (the mount decides), so a
  second node may get the ``flock`` while the first still runs; the record
  then refuses it, and names the holder so the user can check it and delete
  the lock file if that run is gone;
- re-entrant within one process (a study running cells in-process, the demo
  calling ``run_experiment``): taking a lock this process holds only counts;
- a forked child (a pool worker) closes its copy of the lock file, so an
  orphaned worker cannot keep a folder locked after its parent died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError
from cxrlab.runio import is_no_space, no_space_error

log = logging.getLogger(__name__)

_HELD: dict[str, list[int]] = {}
"""Lock files this process holds: path -> [fd, count]."""
_GUARD = threading.Lock()


def _forget_in_child() -> None:
    """After fork: the child holds no lock (its copy of the fd would keep the parent's lock alive)."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def lock_path(folder: str | Path) -> Path:
    """``<parent>/.<name>.lock``: beside the folder, so deleting the folder keeps the lock."""
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process exists
    now = _process_start(pid)
    return start is None or now is None or now == start


def _command() -> str:
    """``cxrlab train -c x.yaml`` (``python -m cxrlab`` shows ``.../cxrlab/__main__.py`` in argv)."""
    if not sys.argv or not sys.argv[0]:
        return ""
    first = Path(sys.argv[0])
    name = first.parent.name if first.name == "__main__.py" else first.name
    return " ".join([name, *sys.argv[1:]])[:200]


def _record() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": _process_start(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()}


def _read_record(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "another process (its record is not written yet)"
    text = f"PID {info['pid']} on {info.get('host', '?')}"
    if info.get("started"):
        text += f" since {info['started']}"
    if info.get("command"):
        text += f" ({info['command']})"
    return text


class FolderLock:
    """Exclusive lock on a folder (a run, a study, a cache entry), held for a `with` block."""

    def __init__(self, folder: str | Path, what: str = "run folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self.path = lock_path(folder)
        self._held = False

    def acquire(self) -> FolderLock:
        """Take the lock (or count once more if this process holds it).

        Raises:
            CxrlabError: another live process holds it, or its record names another host.
        """
        if self._held:
            return self
        key = str(self.path)
        with _GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
            else:
                _HELD[key] = [self._take(), 1]
        self._held = True
        return self

    def release(self) -> None:
        """Give the lock back (the last release in this process removes the lock file)."""
        if not self._held:
            return
        self._held = False
        key = str(self.path)
        with _GUARD:
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
            fd = entry[0]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a reader between unlink and close sees no holder
                self.path.unlink()
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- internals --------------------------------------------------------------------
    def _refuse(self, info: dict[str, Any], hint: str = "") -> CxrlabError:
        return CxrlabError(f"{self.folder}: {self.what} in use by {_holder(info)}{hint}; lock file {self.path}")

    def _take(self) -> int:
        """Open, flock and stamp the lock file; return its descriptor."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # the file may be unlinked by its releasing holder between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as e:
                raise CxrlabError(f"{self.path}: cannot create the lock file of {self.folder} ({e.strerror})") from None
            try:
                if self._flock(fd) and self._same_file(fd):
                    self._check_record(fd)
                    self._stamp(fd)
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise CxrlabError(f"{self.path}: the lock of {self.folder} keeps changing hands; try again")

    def _flock(self, fd: int) -> bool:
        """True when taken; a held lock raises; a filesystem without flock falls back to the record."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse(_read_record(fd)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            log.warning("%s: the filesystem does not support flock; relying on the PID+host record", self.path)
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _check_record(self, fd: int) -> None:
        """We hold the flock; a record left in the file is stale unless another host wrote it."""
        info = _read_record(fd)
        pid = info.get("pid")
        if not pid:
            return
        if info.get("host") != socket.gethostname():
            raise self._refuse(info, " (a lock taken on another host is never taken over: if that run has "
                                     "ended, delete the lock file)")
        if pid != os.getpid() and _alive(int(pid), info.get("pid_start")):
            raise self._refuse(info, " (flock had no effect here: is this a network filesystem?)")
        log.warning("%s: taking over the stale lock of %s, which is no longer running", self.folder, _holder(info))

    def _stamp(self, fd: int) -> None:
        data = (json.dumps(_record()) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as e:
            if is_no_space(e):
                raise no_space_error(self.path) from None
            raise
