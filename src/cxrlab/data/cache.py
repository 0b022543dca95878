"""Decode once: a pre-resized uint8 image cache on disk (memory-mapped).

``prepare_cache`` decodes every manifest image once (all cores, progress bar),
optionally applies CLAHE (OpenCV) at full resolution, resizes with area
interpolation to the training size (square squash or letterbox), and stores
the result as one ``uint8`` memory map ``images.u8`` of shape (N, S, S) with an
``index.json`` (image ids in row order, written last: its presence means
"complete").  The folder name is a hash of everything that changes the pixels
(source, root, image ids, size, resize mode, CLAHE settings), so a config
change never reuses a stale cache.

Changed *data* must not either, and a crash must never leave rows that are
trained on silently.  ``rows.bin`` holds one record per row: its state
(pending, decoded, unreadable), the CRC-32 of the row's pixels, and the source
file's size, mtime (ns) and SHA-256 (first 16 bytes) as they were when it was
decoded.  Every open stats each file (one ``stat`` per image) and re-decodes the
rows whose file changed; ``verify=True`` (``data.verify_cache``) also hashes
every file and checks every row's CRC (O(N * S^2)); without it a random sample
of rows is checked, and any damage there triggers the full check.

Crash states (a kill at any point, a short or missing file, zeroed rows) are
resumed, not trusted: rows are written in chunks, their pixels flushed before
their records, and a resumed prepare keeps a row only when its record says
decoded, its CRC matches the pixels on disk and its file is unchanged.  Both
memory maps get their blocks reserved first (``posix_fallocate``), so a full
disk is one line, never a SIGBUS.  One builder per cache entry at a time
(:class:`cxrlab.locks.FolderLock`); another process preparing the same entry
waits for it, then reuses the result.

Unreadable images are collected and reported together (one line each) at the
end; nothing is silently dropped.  Reading a batch is a fancy-index of the
memory map (a few microseconds per row, against ~10 ms to decode a 1024-px
PNG), and memory stays flat however large the dataset is.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlab.data.preprocess import Preprocess, load_image
from cxrlab.data.workers import worker_pool
from cxrlab.errors import CxrlabError
from cxrlab.locks import FolderLock
from cxrlab.progress import make_progress, say
from cxrlab.runio import atomic_write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Part of the folder key; unchanged, so a cache keeps its folder when the layout changes."""
FORMAT = 2
"""The folder layout (``index.json`` ``version``).  2 added ``rows.bin``; a format-1 folder (no
records, so nothing to check it against) is rebuilt in place, once."""

ROW = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("digest", "u1", (16,)), ("crc", "<u4"),
                ("state", "u1"), ("pad", "u1", (3,))])
"""One ``rows.bin`` record (40 bytes): the file as decoded, and the CRC-32 of the row written."""
PENDING, DONE, FAILED = 0, 1, 2
SPOT_CHECK = 64
"""Rows whose CRC is checked on every open without ``verify`` (damage there: all are checked)."""
WAIT_S = 2 * 3600
"""How long a prepare waits for another process building the same cache entry."""


def cache_key(source: str, root: str, ids: list[str], p: Preprocess) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "source": source, "root": str(Path(root).resolve()),
                       "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(), **p.key()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- the file checks (also timed by benchmarks/cache_check.py) ----------------------------

def file_digest(path: str | Path) -> np.ndarray:
    """SHA-256 of the file's bytes, first 16 bytes (zeros when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return np.frombuffer(hashlib.file_digest(f, "sha256").digest()[:16], dtype=np.uint8)
    except OSError:
        return np.zeros(16, dtype=np.uint8)


def stamps(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(size, mtime_ns) of each file, -1 for a missing one: one ``stat`` each."""
    size, mtime = [], []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            size.append(-1), mtime.append(-1)
            continue
        size.append(st.st_size), mtime.append(st.st_mtime_ns)
    return np.array(size, dtype=np.int64), np.array(mtime, dtype=np.int64)


def digests(paths: list[Path], threads: int = 8) -> np.ndarray:
    """:func:`file_digest` of each file, (N, 16) uint8, read by a few threads (hashing frees the GIL)."""
    out = np.zeros((len(paths), 16), dtype=np.uint8)
    bounds = np.linspace(0, len(paths), threads + 1).astype(int)

    def part(k: int) -> None:
        for i in range(bounds[k], bounds[k + 1]):
            out[i] = file_digest(paths[i])

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(part, range(threads)))
    return out


def row_crcs(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """CRC-32 of the pixels of rows ``idx`` (as stored on disk)."""
    return np.fromiter((zlib.crc32(images[i]) for i in idx), dtype=np.uint32, count=len(idx))


# ---- decoding -----------------------------------------------------------------------------

def _work(args: tuple[int, str, Preprocess]) -> tuple[int, np.ndarray | None, str | None, tuple, np.ndarray]:
    """Decode one image; the file's stamp and digest are taken *before* it is read, so a file that
    changes while it is decoded looks changed on the next open."""
    i, path, p = args
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    digest = file_digest(path)
    try:
        return i, load_image(path, p), None, stamp, digest
    except CxrlabError as e:
        return i, None, str(e), stamp, digest


@dataclass
class ImageCache:
    folder: Path
    images: np.ndarray  # (N, S, S) uint8 memmap, read-only
    ids: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    """Images that could not be read (``data.bad_images: skip``): id -> one-line reason."""

    def rows(self, ids: list[str]) -> np.ndarray:
        pos = {k: i for i, k in enumerate(self.ids)}
        return np.array([pos[k] for k in ids], dtype=np.int64)


def open_cache(folder: Path) -> ImageCache:
    """A complete cache folder, read-only (``prepare_cache`` checks and repairs it first)."""
    meta = _read_index(folder / "index.json")
    if meta is None:
        raise CxrlabError(f"{folder / 'index.json'}: missing or unreadable; run `cxrlab prepare` to rebuild the cache")
    n, s = len(meta["ids"]), meta["size"]
    if _length(folder / "images.u8") != n * s * s:
        raise CxrlabError(f"{folder / 'images.u8'}: {_length(folder / 'images.u8')} bytes, expected {n * s * s} "
                          "(N x S x S); run `cxrlab prepare` to repair the cache")
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(n, s, s))
    return ImageCache(folder, images, meta["ids"], meta.get("failed", {}))


def _raise_unreadable(errors: list[str], n: int) -> None:
    shown = "; ".join(errors[:5]) + (f"; ... ({len(errors) - 5} more)" if len(errors) > 5 else "")
    raise CxrlabError(f"prepare: {len(errors)} of {n} images could not be read "
                      f"(data.bad_images=skip trains without them, listing each): {shown}")


def prepare_cache(paths: list[Path], ids: list[str], p: Preprocess, cache_dir: str | Path, key: str,
                  workers: int = 0, chunk: int = 0, bad_images: str = "error", verify: bool = False
                  ) -> ImageCache:
    """Build, resume, repair or reuse the cache for these images; return it opened read-only.

    Args:
        chunk: rows decoded between two flushes (0: about 5% of the rows, 16..256), the
            granularity a resumed prepare restarts at.
        bad_images: ``error`` stops with every unreadable file listed; ``skip``
            records them in ``ImageCache.failed`` (their rows stay zero) for the
            caller to drop and report.
        verify: also hash every source file and check every row's CRC (``data.verify_cache``).
    """
    folder = Path(cache_dir) / key
    if not paths:
        raise CxrlabError("prepare: no images to cache")
    plan = _survey(folder, paths, ids, p, verify)
    if not plan.ready:
        folder.mkdir(parents=True, exist_ok=True)
        with _build_lock(folder) as waited:
            if waited:  # another process built or repaired it meanwhile
                plan = _survey(folder, paths, ids, p, verify)
            if not plan.ready:
                _repair(folder, plan, paths, ids, p, workers, chunk, bad_images)
    cache = open_cache(folder)
    if cache.failed and bad_images == "error":
        _raise_unreadable(list(cache.failed.values()), len(cache.ids))
    return cache


# ---- what is on disk ----------------------------------------------------------------------

@dataclass
class _Plan:
    rows: np.ndarray  # (N,) ROW: the records to start from
    redo: np.ndarray  # row indices to decode
    restamp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Rows whose file was touched but has the same content (verify): new stamp, no decode."""
    now: tuple[np.ndarray, np.ndarray] | None = None  # current (size, mtime_ns) when stat'ed
    failed: dict[str, str] = field(default_factory=dict)  # unreadable rows kept as they are
    before: list[str] = field(default_factory=list)  # said before decoding
    after: list[str] = field(default_factory=list)  # said when done

    @property
    def ready(self) -> bool:
        return len(self.redo) == 0 and len(self.restamp) == 0 and not self.before


def _length(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _read_index(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("ids"), list) else None


def _read_rows(path: Path, n: int) -> tuple[np.ndarray, int]:
    """The records in ``rows.bin`` (pending where missing) and how many were on disk."""
    rows = np.zeros(n, dtype=ROW)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return rows, 0
    k = min(n, len(data) // ROW.itemsize)
    rows[:k] = data[:k * ROW.itemsize].view(ROW)
    return rows, k


def _survey(folder: Path, paths: list[Path], ids: list[str], p: Preprocess, verify: bool) -> _Plan:
    """Read-only: is the cache complete, fresh and intact; if not, which rows must be decoded."""
    n, s = len(paths), p.size
    index = _read_index(folder / "index.json")
    if index is None and not (folder / "images.u8").exists() and not (folder / "rows.bin").exists():
        return _Plan(np.zeros(n, dtype=ROW), np.arange(n))  # nothing there yet: a fresh build
    rows, on_disk = _read_rows(folder / "rows.bin", n)
    pixels = max(0, _length(folder / "images.u8")) // (s * s)  # whole rows in images.u8
    if index is not None and index.get("version") != FORMAT:
        return _Plan(np.zeros(n, dtype=ROW), np.arange(n), before=[
            f"cache: {folder} was written by an older cxrlab (format {index.get('version')}, no row records); "
            "rebuilding it once"])
    if index is not None and (index["ids"] != ids or index.get("size") != s):
        return _Plan(np.zeros(n, dtype=ROW), np.arange(n), before=[
            f"cache: {folder / 'index.json'} lists other images or another size than its key; rebuilding"])
    if index is not None and on_disk == n and pixels == n and np.isin(rows["state"], (DONE, FAILED)).all():
        return _check_complete(folder, paths, ids, index, rows, verify)
    # an interrupted or damaged build: keep the rows that prove themselves, decode the rest
    if index is not None:
        what = "index.json without a complete images.u8 and rows.bin"
    elif on_disk == 0:
        what = "images.u8 without rows.bin" if (folder / "images.u8").exists() else "rows.bin lost"
    elif (folder / "index.json").exists():
        what = "index.json unreadable"
    else:
        what = "interrupted"
    keep = np.flatnonzero((rows["state"] == DONE) & (np.arange(n) < pixels))
    if len(keep):
        now = stamps([paths[i] for i in keep])
        keep = keep[(now[0] == rows["size"][keep]) & (now[1] == rows["mtime_ns"][keep])]
        images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(pixels, s, s))
        keep = keep[row_crcs(images, keep) == rows["crc"][keep]]
        del images
    redo = np.setdiff1d(np.arange(n), keep)
    rows["state"][redo] = PENDING
    return _Plan(rows, redo, before=[f"cache: resuming {folder} ({what}): {len(keep)} of {n} rows kept "
                                     f"(checksums verified), {len(redo)} to decode"])


def _check_complete(folder: Path, paths: list[Path], ids: list[str], index: dict, rows: np.ndarray,
                    verify: bool) -> _Plan:
    """A complete cache: stat every file (and hash it when ``verify``), check row CRCs."""
    n, s = len(paths), index["size"]
    now = stamps(paths)
    changed = (now[0] != rows["size"]) | (now[1] != rows["mtime_ns"])
    restamp = np.zeros(0, dtype=np.int64)
    if verify:
        content = (digests(paths) != rows["digest"]).any(axis=1) | (now[0] != rows["size"])
        restamp = np.flatnonzero(changed & ~content)  # touched, same bytes: keep the pixels
        changed = content
    done = np.flatnonzero((rows["state"] == DONE) & ~changed)
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(n, s, s))
    sample = done if verify or len(done) <= SPOT_CHECK else np.random.default_rng().choice(done, SPOT_CHECK,
                                                                                          replace=False)
    bad = sample[row_crcs(images, sample) != rows["crc"][sample]]
    if len(bad) and len(sample) < len(done):  # damage in the sample: check them all
        bad = done[row_crcs(images, done) != rows["crc"][done]]
    del images
    redo = np.union1d(np.flatnonzero(changed), bad)
    failed = dict(index.get("failed") or {})
    for i in redo:
        failed.pop(ids[i], None)
    after = []
    if changed.any():
        after.append(f"cache: {int(changed.sum())} of {n} images changed on disk since cached; re-decoded")
    if len(bad):
        after.append(f"cache: {len(bad)} of {n} cached rows failed their checksum (damaged on disk); re-decoded")
    if len(restamp):
        log.info("cache: %d files were touched but hold the same bytes; kept their rows", len(restamp))
    return _Plan(rows, redo, restamp=restamp, now=now, failed=failed, after=after)


# ---- writing ------------------------------------------------------------------------------

@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[bool]:
    """Hold the cache entry's lock; yield whether another builder had to be waited for."""
    lock, waited, deadline = FolderLock(folder, what="image cache"), False, time.monotonic() + WAIT_S
    while True:
        try:
            lock.acquire()
            break
        except CxrlabError as e:
            if time.monotonic() > deadline:
                raise
            if not waited:
                say(f"{e}; waiting for it to finish (at most {WAIT_S // 60} min)")
                waited = True
            time.sleep(0.5)
    try:
        yield waited
    finally:
        lock.release()


def _mb(nbytes: int) -> str:
    mb = nbytes / 2**20
    return f"{mb:.1f}" if mb < 10 else f"{mb:.0f}"


def _write_error(path: Path, e: OSError) -> CxrlabError:
    """One line naming the file (a full disk says how much is free)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f", {_mb(shutil.disk_usage(path.parent).free)} MB free"
        except OSError:
            free = ""
        return CxrlabError(f"no space left on device writing the cache {path}{free}")
    return CxrlabError(f"cannot write the cache {path}: {e.strerror or e}")


def _reserve(path: Path, nbytes: int) -> None:
    """Give ``path`` exactly ``nbytes`` with its blocks allocated, so writes through a memory map of it
    cannot meet a full disk (the kernel's answer to that is SIGBUS, with no message)."""
    try:
        st = path.stat()
        allocated = min(st.st_blocks * 512, st.st_size)
    except OSError:
        allocated = 0
    free = shutil.disk_usage(path.parent).free
    if nbytes - allocated > free:
        raise CxrlabError(f"no space left on device for the cache {path}: needs {_mb(nbytes - allocated)} MB, "
                          f"{_mb(free)} MB free")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size != nbytes:
                os.ftruncate(fd, nbytes)
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as e:  # a filesystem without fallocate: the free-space check above is all
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        finally:
            os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None


def _flush(m: np.memmap, path: Path) -> None:
    try:
        m.flush()
    except OSError as e:
        raise _write_error(path, e) from None


def _repair(folder: Path, plan: _Plan, paths: list[Path], ids: list[str], p: Preprocess, workers: int,
            chunk: int, bad_images: str) -> None:
    """Decode ``plan.redo`` into the cache; write ``index.json`` last."""
    for line in plan.before:
        say(line)
    n, s = len(paths), p.size
    img_f, rows_f, index_f = folder / "images.u8", folder / "rows.bin", folder / "index.json"
    index_f.unlink(missing_ok=True)  # never "complete" while rows change
    (folder / "done.u8").unlink(missing_ok=True)  # format 1's progress map
    _reserve(img_f, n * s * s)
    _reserve(rows_f, n * ROW.itemsize)
    images = np.memmap(img_f, dtype=np.uint8, mode="r+", shape=(n, s, s))
    rows = np.memmap(rows_f, dtype=ROW, mode="r+", shape=(n,))
    try:
        rows[:] = plan.rows
        rows["state"][plan.redo] = PENDING
        if len(plan.restamp) and plan.now is not None:
            rows["size"][plan.restamp] = plan.now[0][plan.restamp]
            rows["mtime_ns"][plan.restamp] = plan.now[1][plan.restamp]
        _flush(rows, rows_f)
        errors = _decode(images, rows, plan.redo, paths, p, workers, chunk or min(256, max(16, n // 20)))
    finally:
        del images, rows
    if errors and (bad_images == "error" or len(errors) + len(plan.failed) == n):
        _raise_unreadable([errors[i] for i in sorted(errors)], n)
    failed = {**plan.failed, **{ids[i]: errors[i] for i in sorted(errors)}}
    failed = {k: failed[k] for k in ids if k in failed}  # row order
    try:
        atomic_write_json(index_f, {"version": FORMAT, "key_version": CACHE_VERSION, "size": s, **p.key(),
                                    "ids": ids, "failed": failed})
    except OSError as e:
        raise _write_error(index_f, e) from None
    for line in plan.after:
        say(line)


def _decode(images: np.ndarray, rows: np.ndarray, todo: np.ndarray, paths: list[Path], p: Preprocess,
            workers: int, chunk: int) -> dict[int, str]:
    """Decode rows ``todo`` chunk by chunk: pixels flushed, then their records (a crash never leaves a
    record for unwritten pixels); return row -> reason for the unreadable ones."""
    errors: dict[int, str] = {}
    workers = workers or os.cpu_count() or 1
    with make_progress() as bar:
        task = bar.add_task(f"prepare {p.size}px", total=len(rows), completed=len(rows) - len(todo), info="")
        pool = worker_pool(workers) if workers > 1 and len(todo) >= 64 else None
        try:
            for c0 in range(0, len(todo), chunk):
                idx = todo[c0:c0 + chunk]
                jobs = [(int(i), str(paths[i]), p) for i in idx]
                results = pool.map(_work, jobs, chunksize=16) if pool else map(_work, jobs)
                records = []
                for i, img, err, stamp, digest in results:
                    if err is not None:
                        errors[i] = err
                        records.append((i, stamp, digest, 0, FAILED))
                    else:
                        images[i] = img
                        records.append((i, stamp, digest, zlib.crc32(np.ascontiguousarray(img)), DONE))
                _flush(images, Path(images.filename))
                for i, stamp, digest, crc, state in records:
                    rows[i] = (stamp[0], stamp[1], digest, crc, state, 0)
                _flush(rows, Path(rows.filename))  # after the pixels: a resumed prepare never trusts unwritten rows
                bar.update(task, advance=len(idx), info=f"{len(errors)} unreadable" if errors else "")
        finally:
            if pool:
                pool.shutdown()
    return errors


class RowView:
    """A subset of cache rows that indexes like an array: ``view[i:j]``, ``view[idx]``."""

    def __init__(self, images: np.ndarray, rows: np.ndarray):
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *images.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        rows = self.rows[key]
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.images.shape[1:]), dtype=self.images.dtype)
        out[order] = self.images[rows[order]]  # read in file order
        return out

    def numpy(self) -> np.ndarray:
        return self[slice(None)]
