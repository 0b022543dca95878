"""Benchmark: what the decode cache's freshness check costs on 100,000 index entries.

Every use of a cache stats each source file (size + mtime) and checks the CRC of
a sample of rows; ``data.verify_cache`` also hashes every file (SHA-256) and
checks every row's CRC.  This writes ``--n`` small PNGs (``--px`` px, a few
hundred bytes each, in 100 folders), builds their cache once with
``prepare_cache``, then times the open of the complete cache (best of
``--repeat``, warm page cache): the cheap check, the verified one, and each
part alone (stat, hash, row CRCs).  Row CRCs grow with the image size, so their
throughput at 224 and 1024 px is measured on a few rows and scaled to ``--n``.
Finally 3 files are rewritten and the re-decode of just those rows is timed.
Prints the figures and writes JSON.

    python benchmarks/cache_check.py [--n 100000] [--px 16] [--repeat 3] [--out bench_cache_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import cxrlab.data.cache as cache_mod
from cxrlab.data.cache import digests, prepare_cache, row_crcs, stamps
from cxrlab.data.preprocess import Preprocess


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def crc_rate(size: int, rows: int = 200) -> float:
    """Seconds per row to CRC a (size x size) uint8 row."""
    images = np.random.default_rng(0).integers(0, 256, (rows, size, size), dtype=np.uint8)
    return best(lambda: row_crcs(images, np.arange(rows)), 3) / rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="index entries (image files)")
    ap.add_argument("--px", type=int, default=16, help="side of the small PNGs and of the cache rows")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench_cache_check.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cxrlab-cachecheck-"))
    tic = time.perf_counter()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(a.n):
        folder = tmp / "img" / f"{i % 100:02d}"
        if i < 100:
            folder.mkdir(parents=True)
        path = folder / f"{i:06d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (a.px, a.px), dtype=np.uint8))
        paths.append(path)
    ids = [str(x.relative_to(tmp / "img")) for x in paths]
    mean_bytes = float(np.mean([x.stat().st_size for x in paths[:1000]]))
    write_s = time.perf_counter() - tic
    p = Preprocess(a.px)
    os.environ.setdefault("CXRLAB_QUIET", "1")
    tic = time.perf_counter()
    prepare_cache(paths, ids, p, tmp / "cache", "k", workers=os.cpu_count() or 1)
    build_s = time.perf_counter() - tic

    def open_cache(verify: bool) -> None:
        prepare_cache(paths, ids, p, tmp / "cache", "k", workers=1, verify=verify)

    cheap = best(lambda: open_cache(False), a.repeat)
    verified = best(lambda: open_cache(True), a.repeat)
    stat_s = best(lambda: stamps(paths), a.repeat)
    hash_s = best(lambda: digests(paths), a.repeat)
    images = np.memmap(tmp / "cache" / "k" / "images.u8", dtype=np.uint8, mode="r", shape=(a.n, a.px, a.px))
    crc_s = best(lambda: row_crcs(images, np.arange(a.n)), a.repeat)
    per_row = {s: crc_rate(s) for s in (224, 1024)}

    said = []
    cache_mod.say = said.append
    for k in (11, 5_000, a.n - 1):  # three files replaced in place
        path = paths[k % a.n]
        cv2.imwrite(str(path), rng.integers(0, 256, (a.px, a.px), dtype=np.uint8))
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    tic = time.perf_counter()
    open_cache(False)
    changed_s = time.perf_counter() - tic

    us = 1e6 / a.n
    res = {
        "n": a.n, "png_px": a.px, "png_mean_bytes": round(mean_bytes), "cpus": os.cpu_count(),
        "write_files_s": round(write_s, 2), "build_cache_s": round(build_s, 2),
        "open_cheap_s": round(cheap, 3), "open_verify_s": round(verified, 3),
        "stat_s": round(stat_s, 3), "hash_s": round(hash_s, 3), f"row_crc_{a.px}px_s": round(crc_s, 3),
        "stat_us_per_entry": round(stat_s * us, 2), "hash_us_per_entry": round(hash_s * us, 2),
        "open_cheap_us_per_entry": round(cheap * us, 2), "open_verify_us_per_entry": round(verified * us, 2),
        "row_crc_s_for_n": {str(s): round(r * a.n, 1) for s, r in per_row.items()},
        "three_changed_open_s": round(changed_s, 3), "three_changed_message": said,
    }
    print(f"{a.n} index entries ({a.px}-px PNGs, ~{mean_bytes:.0f} B each, warm page cache, {os.cpu_count()} CPUs); "
          f"cache built in {build_s:.1f} s")
    print(f"open, size + mtime + {cache_mod.SPOT_CHECK} sampled row CRCs: {cheap:.3f} s "
          f"({cheap * us:.1f} us/entry; stat alone {stat_s:.3f} s)")
    print(f"open, data.verify_cache (SHA-256 of every file + every row CRC): {verified:.3f} s "
          f"({verified * us:.1f} us/entry; hashing alone {hash_s:.3f} s, row CRCs at {a.px} px {crc_s:.3f} s)")
    print("row CRCs of every row at larger sizes (verify only): "
          + ", ".join(f"{s} px {r * a.n:.1f} s" for s, r in per_row.items()))
    print(f"3 files replaced in place: open + re-decode {changed_s:.3f} s; said: {said}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
