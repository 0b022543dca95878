"""Atomic file writes: a crash never leaves a half-written result behind.

Every file written here is also reported to the :func:`recording` blocks around the call, so a
command can list what a workflow wrote without knowing its file names.

A full disk (or quota) while writing is a user's problem, not a bug: every writer here turns
it into one :class:`~cxrlab.errors.CxrlabError` line, "no space left on device writing FILE
(N MB free)", instead of an ``OSError`` without a file name, a safetensors I/O error, or
torch's ``unexpected pos`` (serialisers that hide the errno are recognised by their message
or by the free space left).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cxrlab.errors import CxrlabError

#: Errors that mean "the disk (or the user's quota) is full".
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left", "errno 28", "os error 28", "disk quota", "errno 122", "os error 122")
_LOW_FREE_BYTES = 1 << 20


def free_megabytes(path: str | Path) -> float | None:
    """Free space (MB) on the filesystem of ``path`` (its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 1e6
    except OSError:
        return None


def is_no_space(exc: BaseException, path: str | Path | None = None) -> bool:
    """True when ``exc`` says the disk is full: ENOSPC/EDQUOT, its text, or (for a serialiser's
    opaque error, such as torch's ``unexpected pos``) less than 1 MB left next to ``path``."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return True
    if any(t in str(exc).lower() for t in _NO_SPACE_TEXT):
        return True
    if path is None or not isinstance(exc, RuntimeError | OSError) or isinstance(exc, FileNotFoundError):
        return False
    free = free_megabytes(Path(path).parent)
    return free is not None and free * 1e6 < _LOW_FREE_BYTES


def no_space_error(path: str | Path) -> CxrlabError:
    """The one line for a full disk, naming the file and the space left."""
    free = free_megabytes(Path(path).parent)
    left = f"{free:.0f} MB free" if free is not None else "free space unknown"
    return CxrlabError(f"no space left on device writing {path} ({left}); free some space and run the "
                       "command again")


_SINKS: contextvars.ContextVar[tuple[list[Path], ...]] = contextvars.ContextVar("cxrlab_written", default=())


@contextlib.contextmanager
def recording() -> Iterator[list[Path]]:
    """Collect every path this module writes inside the block: in order of first write, each once.

    Blocks nest (an outer block sees what inner ones see).  Writes from other threads or processes
    (worker pools) are not seen: a context variable is per thread.
    """
    sink: list[Path] = []
    token = _SINKS.set((*_SINKS.get(), sink))
    try:
        yield sink
    finally:
        _SINKS.reset(token)


def _report(path: Path) -> None:
    for sink in _SINKS.get():
        if path not in sink:
            sink.append(path)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    Raises:
        CxrlabError: the disk is full (the temporary file is removed, ``path`` is untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
        _report(path)
    except BaseException as e:
        full = isinstance(e, Exception) and is_no_space(e, path)  # measured before the tmp file goes
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise no_space_error(path) from e
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (serialise in memory first: a full disk is then a plain ENOSPC)."""

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, _write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, _write)


def json_safe(obj: Any) -> Any:
    """Replace NaN and infinities by ``None`` (JSON has no NaN; readers get ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return json_safe(obj.item())
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Valid JSON (NaN -> null), written atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk (a crash keeps earlier lines).

    Raises:
        CxrlabError: the disk is full.
    """
    data = (json.dumps(obj) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        if is_no_space(e):
            raise no_space_error(path) from e
        raise
    try:
        end = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:  # unbuffered: nothing is left to flush (and fail) at close
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)  # no half line: a resumed run reads every line back
            if is_no_space(e):
                raise no_space_error(path) from e
            raise
    finally:
        os.close(fd)
    _report(Path(path))
