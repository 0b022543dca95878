"""Benchmark: the audit of a 1,000-image test set on a CPU (CAMs per second, share of time in CAMs vs scoring).

Writes a phantom with masks (``--n`` images; test_fraction chosen so that about ``--test`` are in the test
split), trains a small simple_cnn for one epoch (the audit's cost does not depend on how well it learnt),
then runs ``audit_run`` and prints the seconds per step from the result (``AuditResult.seconds``):
decode, CAMs (test positives and the validation maps that choose the level), scoring (shares, hits, IoUs,
patient bootstrap), sanity (randomised copy + deletion), and writes JSON.

    OMP_NUM_THREADS=2 python benchmarks/audit.py [--n 2000] [--test 1000] [--size 64] [--method gradcam]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.workflows import run_experiment
from cxrlab.workflows.audit import audit_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default="bench_audit.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_phantom(Path(tmp) / "ph", n=a.n, size=a.size, seed=0, masks=True,
                             test_fraction=min(0.9, a.test / a.n))
        t_ph = time.perf_counter() - t0
        base = {"name": "bench", "seed": 0, "runs_dir": str(Path(tmp) / "runs"),
                "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": a.size,
                         "val_fraction": 0.2},
                "model": {"name": "simple_cnn", "options": {"width": 16}},
                "train": {"epochs": 1, "batch_size": 64}, "evaluate": {"n_boot": 20}, "explain": {"enabled": False}}
        run_experiment(load_config(None, [], base=base))
        t1 = time.perf_counter()
        r = audit_run(Path(tmp) / "runs" / "bench", method=a.method, n_boot=a.n_boot)
        wall = time.perf_counter() - t1
    s = r.seconds
    out = {"test_images": r.counts.get("test_images"), "cams": int(s.get("cam_count", 0)),
           "cams_per_second": s.get("cams_per_second"), "audit_seconds": wall, "phantom_seconds": t_ph,
           **{f"{k}_seconds": s.get(k) for k in ("decode", "cams", "scoring", "sanity")},
           "share_cams": s["cams"] / s["total"], "share_scoring": s["scoring"] / s["total"],
           "share_sanity": s["sanity"] / s["total"], "method": a.method, "size": a.size}
    for k, v in out.items():
        print(f"{k:18s} {v:.3f}" if isinstance(v, float) else f"{k:18s} {v}")
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
