"""The decode cache never serves stale or damaged pixels: changed files, crash states, full disks, locks."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
import yaml

import cxrlab.data.cache as cache_mod
from cxrlab.data.cache import ROW, prepare_cache
from cxrlab.data.preprocess import Preprocess, load_image
from cxrlab.errors import CxrlabError

P = Preprocess(32)


def write_images(folder, n=12, shape=(80, 72), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 255, shape).astype(np.uint8), (0, 0), 2)
        p = folder / f"{i:02d}.png"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # size depends on the shape alone
        paths.append(p)
    return paths


def expected(paths, p=P):
    return np.stack([load_image(x, p) for x in paths])


@pytest.fixture
def spy(monkeypatch):
    """Rows decoded and lines said by the cache."""
    decoded, said = [], []
    real = cache_mod._work
    monkeypatch.setattr(cache_mod, "_work", lambda a: (decoded.append(a[0]), real(a))[1])
    monkeypatch.setattr(cache_mod, "say", said.append)
    return decoded, said


def prepare(paths, cache_dir, **kw):
    return prepare_cache(paths, [x.name for x in paths], kw.pop("p", P), cache_dir, "k", workers=1, **kw)


def replace_image(path, seed, keep_stamp=False):
    """Write other pixels to ``path``; its mtime moves on, or is put back with ``keep_stamp`` (an
    uncompressed PNG of the same shape has the same size, so only the content differs)."""
    st = path.stat()
    img = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 255, (80, 72)).astype(np.uint8), (0, 0), 2)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert path.stat().st_size == st.st_size
    shift = 0 if keep_stamp else 10**9
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + shift))


# ---- 22.2: changed data ---------------------------------------------------------------------

def test_image_replaced_in_place_is_redecoded_alone(tmp_path, spy):
    decoded, said = spy
    paths = write_images(tmp_path / "img")
    prepare(paths, tmp_path / "c")
    replace_image(paths[3], seed=7)
    replace_image(paths[8], seed=8)
    decoded.clear(), said.clear()
    cache = prepare(paths, tmp_path / "c")
    assert sorted(decoded) == [3, 8]
    assert np.array_equal(np.asarray(cache.images), expected(paths))
    assert said == ["cache: 2 of 12 images changed on disk since cached; re-decoded"]
    decoded.clear(), said.clear()
    prepare(paths, tmp_path / "c")
    assert decoded == [] and said == []  # fresh now: nothing decoded again


def test_image_deleted_after_caching_is_reported(tmp_path, spy):
    paths = write_images(tmp_path / "img", n=4)
    prepare(paths, tmp_path / "c")
    paths[2].unlink()
    with pytest.raises(CxrlabError, match="1 of 4 images could not be read.*02.png"):
        prepare(paths, tmp_path / "c")


def test_same_size_and_mtime_change_is_found_by_verify_only(tmp_path, spy):
    decoded, said = spy
    paths = write_images(tmp_path / "img")
    prepare(paths, tmp_path / "c")
    replace_image(paths[5], seed=9, keep_stamp=True)
    decoded.clear()
    stale = prepare(paths, tmp_path / "c")
    assert decoded == []  # size + mtime unchanged: the cheap check cannot see it (documented)
    assert not np.array_equal(stale.images[5], load_image(paths[5], P))
    cache = prepare(paths, tmp_path / "c", verify=True)
    assert decoded == [5] and np.array_equal(np.asarray(cache.images), expected(paths))


def test_touched_file_with_same_bytes_is_not_redecoded_under_verify(tmp_path, spy):
    decoded, _ = spy
    paths = write_images(tmp_path / "img")
    prepare(paths, tmp_path / "c")
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    decoded.clear()
    prepare(paths, tmp_path / "c", verify=True)
    assert decoded == []
    prepare(paths, tmp_path / "c")  # the new stamp was recorded: the cheap check agrees now
    assert decoded == []


# ---- 22.6: crash states ----------------------------------------------------------------------

def _truncate(path, frac):
    os.truncate(path, int(path.stat().st_size * frac))


def _zero_rows(folder, rows, size=32):
    m = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r+")
    for r in rows:
        m[r * size * size:(r + 1) * size * size] = 0
    m.flush()


def _format_1(folder):
    """What cxrlab 0.2 left: index.json version 1, no rows.bin."""
    (folder / "rows.bin").unlink()
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, "version": 1}))


def _interrupted_with_zeroed_done_rows(folder):
    """Records say decoded, but the pixels never reached the disk (no index.json yet)."""
    (folder / "index.json").unlink()
    _zero_rows(folder, range(4, 9))


CRASHES = {  # what is done to a complete 12-row cache -> rows that must be decoded again
    "images.u8 without rows.bin (killed while creating them)":
        (lambda f: [(f / "index.json").unlink(), (f / "rows.bin").unlink()], 12),
    "rows.bin missing, index.json present": (lambda f: (f / "rows.bin").unlink(), 12),
    "short rows.bin": (lambda f: [(f / "index.json").unlink(), _truncate(f / "rows.bin", 0.5)], 6),
    "short images.u8, index.json present": (lambda f: _truncate(f / "images.u8", 0.4), 8),
    "short images.u8, interrupted": (lambda f: [(f / "index.json").unlink(), _truncate(f / "images.u8", 0.6)], 5),
    "index.json without images": (lambda f: [(f / "images.u8").unlink(), (f / "rows.bin").unlink()], 12),
    "index.json without images.u8": (lambda f: (f / "images.u8").unlink(), 12),
    "corrupt index.json": (lambda f: (f / "index.json").write_text("{not json"), 0),
    "rows.bin only": (lambda f: [(f / "index.json").unlink(), (f / "images.u8").unlink()], 12),
    "zeroed rows in a complete cache": (lambda f: _zero_rows(f, [0, 5, 11]), 3),
    "decoded records for zeroed rows, interrupted": (_interrupted_with_zeroed_done_rows, 5),
    "format-1 cache": (_format_1, 12),
}


@pytest.mark.parametrize("state", list(CRASHES))
def test_every_partial_state_recovers_with_correct_pixels(tmp_path, spy, state):
    decoded, said = spy
    paths = write_images(tmp_path / "img")
    folder = tmp_path / "c" / "k"
    prepare(paths, tmp_path / "c")
    damage, redo = CRASHES[state]
    damage(folder)
    decoded.clear()
    cache = prepare(paths, tmp_path / "c")
    assert np.array_equal(np.asarray(cache.images), expected(paths))
    assert len(decoded) == redo  # the rows that proved themselves were kept
    assert len(said) == 1 and said[0].startswith("cache: ")  # one line saying what was rebuilt
    assert (folder / "index.json").is_file() and not (folder / "done.u8").exists()
    decoded.clear()
    prepare(paths, tmp_path / "c")
    assert decoded == []


def test_resume_keeps_verified_rows_and_redecodes_damaged_ones(tmp_path, spy):
    decoded, said = spy
    paths = write_images(tmp_path / "img")
    folder = tmp_path / "c" / "k"
    prepare(paths, tmp_path / "c")
    (folder / "index.json").unlink()  # as if killed before the end
    _zero_rows(folder, [2, 3])
    decoded.clear()
    prepare(paths, tmp_path / "c")
    assert sorted(decoded) == [2, 3]
    assert "10 of 12 rows kept (checksums verified), 2 to decode" in said[0]


def test_damage_in_the_spot_check_triggers_a_full_check(tmp_path, spy, monkeypatch):
    decoded, _ = spy
    paths = write_images(tmp_path / "img")
    prepare(paths, tmp_path / "c")
    monkeypatch.setattr(cache_mod, "SPOT_CHECK", 4)
    damaged = list(range(10))  # 4 rows drawn out of 12 cannot all miss them
    _zero_rows(tmp_path / "c" / "k", damaged)
    decoded.clear()
    cache = prepare(paths, tmp_path / "c")
    assert sorted(decoded) == damaged and np.array_equal(np.asarray(cache.images), expected(paths))


def test_verify_checks_every_row(tmp_path, spy, monkeypatch):
    decoded, said = spy
    paths = write_images(tmp_path / "img")
    prepare(paths, tmp_path / "c")
    monkeypatch.setattr(cache_mod, "SPOT_CHECK", 0)  # the cheap open checks no row ...
    _zero_rows(tmp_path / "c" / "k", [7])
    decoded.clear()
    prepare(paths, tmp_path / "c")
    assert decoded == []
    said.clear()
    prepare(paths, tmp_path / "c", verify=True)  # ... verify checks them all
    assert decoded == [7]
    assert said == ["cache: 1 of 12 cached rows failed their checksum (damaged on disk); re-decoded"]


def _folder_dataset(root, n, size):
    rng = np.random.default_rng(1)
    for i in range(n):
        d = root / ("A" if i % 2 else "B")
        d.mkdir(parents=True, exist_ok=True)
        img = cv2.GaussianBlur(rng.integers(0, 255, (size, size)).astype(np.uint8), (0, 0), 1.5)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)


def test_sigkill_of_a_real_prepare_then_prepare_again_equals_a_clean_prepare(tmp_path):
    _folder_dataset(tmp_path / "data", n=240, size=320)
    base = {"name": "k", "runs_dir": str(tmp_path / "runs"),
            "data": {"source": "folder", "root": str(tmp_path / "data"), "image_size": 48, "workers": 1}}
    for name in ("killed", "clean"):
        cfg = {**base, "data": {**base["data"], "cache_dir": str(tmp_path / name)}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CXRLAB_QUIET": "1"}

    proc = subprocess.Popen([sys.executable, "-m", "cxrlab", "prepare", "-c", str(tmp_path / "killed.yaml")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    rows = None
    while time.time() < deadline and proc.poll() is None:
        rows = next((tmp_path / "killed").glob("*/rows.bin"), None)
        if rows is not None and (np.fromfile(rows, dtype=ROW)["state"] == 1).sum() >= 40:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "prepare finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = rows.parent
    state = np.fromfile(rows, dtype=ROW)["state"]
    assert not (folder / "index.json").exists() and 40 <= (state == 1).sum() < 240

    from cxrlab.config import load_config
    from cxrlab.workflows.experiment import prepare_dataset

    again = prepare_dataset(load_config(tmp_path / "killed.yaml"))  # the next prepare, resumed
    clean = prepare_dataset(load_config(tmp_path / "clean.yaml"))
    assert again.folder == folder and clean.folder.name == folder.name
    assert (folder / "images.u8").read_bytes() == (clean.folder / "images.u8").read_bytes()


# ---- 22.5 (cache half): full disk -----------------------------------------------------------

def test_too_little_free_space_is_refused_before_the_memory_map(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 3000))
    with pytest.raises(CxrlabError) as e:
        prepare(paths, tmp_path / "c", p=Preprocess(64))
    msg = str(e.value)
    assert msg == f"no space left on device for the cache {tmp_path / 'c' / 'k' / 'images.u8'}: needs 0.0 MB, " \
                  "0.0 MB free"
    assert "\n" not in msg


def test_enospc_while_reserving_or_writing_names_the_file(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img")

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "posix_fallocate", full)
    with pytest.raises(CxrlabError, match=r"^no space left on device writing the cache .*images\.u8, [\d.]+ MB free$"):
        prepare(paths, tmp_path / "c")
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "atomic_write_json", full)
    with pytest.raises(CxrlabError, match=r"^no space left on device writing the cache .*index\.json"):
        prepare(paths, tmp_path / "c")


def test_a_real_full_disk_is_one_line_not_sigbus(tmp_path):
    """A 1 MB tmpfs as the cache disk (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        write_images(tmp_path / "img", n=12)
        code = textwrap.dedent(f"""
            from pathlib import Path
            from cxrlab.data.cache import prepare_cache
            from cxrlab.data.preprocess import Preprocess
            from cxrlab.errors import CxrlabError
            paths = sorted(Path({str(tmp_path / 'img')!r}).glob('*.png'))
            Path({str(mnt / 'filler')!r}).write_bytes(b'x' * 300_000)
            try:
                prepare_cache(paths, [p.name for p in paths], Preprocess(256), {str(mnt)!r}, 'k', workers=1)
            except CxrlabError as e:
                print(e)
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"died with {r.returncode}: {r.stderr[-500:]}"
        assert r.stdout.startswith(f"no space left on device for the cache {mnt}/k/images.u8: needs 0.8 MB")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ---- one builder per cache entry ------------------------------------------------------------

def test_prepare_waits_for_another_builder_of_the_same_entry(tmp_path, spy):
    _, said = spy
    paths = write_images(tmp_path / "img", n=4)
    folder = tmp_path / "c" / "k"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cxrlab.locks import FolderLock
        with FolderLock({str(folder)!r}, what="image cache"):
            print("held", flush=True)
            time.sleep(1.5)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    tic = time.perf_counter()
    cache = prepare(paths, tmp_path / "c")
    assert time.perf_counter() - tic >= 0.5
    holder.wait(timeout=30)
    assert "image cache in use by PID" in said[0] and "waiting for it to finish" in said[0]
    assert np.array_equal(np.asarray(cache.images), expected(paths))


def test_data_verify_cache_reaches_the_cache(tmp_path, monkeypatch):
    from cxrlab.config import load_config
    from cxrlab.workflows import experiment

    seen = {}
    monkeypatch.setattr(experiment, "prepare_cache", lambda *a, **kw: seen.update(kw))
    cfg = load_config(None, ["data.verify_cache=true"])
    experiment._prepare(cfg, type("M", (), {"root": tmp_path})(), ["a.png"])
    assert seen["verify"] is True and load_config(None, []).data.verify_cache is False
