"""Benchmark: ``cxrlab serve`` under load, PyTorch vs ONNX Runtime engine, on loopback.

Starts the server in its own process (``python -m cxrlab serve RUN --engine E``)
for each engine, then runs N concurrent clients (threads, one HTTP connection
each) that share a fixed number of ``POST /predict`` requests of one image.
Reports requests/s, p50/p99 latency, errors (any status but 200; must be 0)
and the server's peak resident memory (VmHWM), the ONNX/torch ratios, and
writes JSON.  Without ``--run`` it trains a small phantom run first.

    python benchmarks/serve_load.py [--run RUN] [--clients 1 4 16] [--requests 64] [--out bench_serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def tiny_run(tmp: Path, size: int) -> tuple[Path, Path]:
    """A simple_cnn run on a phantom (64-px model input from 256-px PNGs), exported to ONNX; and one image."""
    from cxrlab.config import load_config
    from cxrlab.data.phantom import LABELS
    from cxrlab.data.phantom_dataset import write_phantom
    from cxrlab.workflows import export_onnx, run_experiment

    root = write_phantom(tmp / "phantom", n=240, size=256, seed=1)
    base = {"name": "load", "seed": 0, "runs_dir": str(tmp / "runs"),
            "data": {"source": "nih14", "root": str(root), "labels": list(LABELS), "image_size": size,
                     "cache_dir": str(tmp / "cache")},
            "model": {"name": "simple_cnn", "options": {"width": 8}},
            "train": {"epochs": 1, "batch_size": 32}, "evaluate": {"n_boot": 20}, "explain": {"enabled": False}}
    run_experiment(load_config(None, [], base=base))
    export_onnx(tmp / "runs" / "load")
    return tmp / "runs" / "load", sorted((root / "images").glob("*.png"))[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run: Path, engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CXRLAB_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cxrlab", "serve", str(run), "--port", str(port),
                             "--engine", engine], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 120 s")


def load(url: str, image: bytes, clients: int, requests: int) -> dict[str, float]:
    """``requests`` POST /predict calls shared by ``clients`` threads; latency per call."""
    lock = threading.Lock()
    left = [requests]
    latencies: list[float] = []
    errors = [0]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                tic = time.perf_counter()
                try:
                    ok = c.post("/predict", files={"files": ("x.png", image, "image/png")}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - tic
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    tic = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": requests, "req_per_s": requests / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="a run folder with model.onnx (default: train a small phantom run)")
    ap.add_argument("--image", type=Path, help="the image to send (default: a phantom PNG)")
    ap.add_argument("--size", type=int, default=64, help="model input size of the default run")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=64, help="requests per (engine, clients) setting")
    ap.add_argument("--out", default="bench_serve.json")
    a = ap.parse_args()
    run, image = a.run, a.image
    if run is None:
        run, default_image = tiny_run(Path(tempfile.mkdtemp(prefix="cxrlab-serve-bench-")), a.size)
        image = image or default_image
    if image is None:
        raise SystemExit("--image is needed with --run")
    data = image.read_bytes()
    results: dict[str, dict] = {}
    for engine in ("torch", "onnx"):
        proc, url = start_server(run, engine)
        try:
            load(url, data, 2, 8)  # warm-up
            rows = [load(url, data, n, a.requests) for n in a.clients]
            results[engine] = {"rows": rows, "peak_rss_mb": peak_rss_mb(proc.pid)}
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{run}: POST /predict, one {len(data) / 1024:.0f} KiB PNG per request, {a.requests} requests per row")
    print(f"{'engine':<7}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'peak MB':>9}")
    for engine, r in results.items():
        for row in r["rows"]:
            print(f"{engine:<7}{row['clients']:>8}{row['req_per_s']:>9.1f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
                  f"{row['errors']:>8}{r['peak_rss_mb']:>9.0f}")
    ratios = {str(t["clients"]): o["req_per_s"] / t["req_per_s"]
              for t, o in zip(results["torch"]["rows"], results["onnx"]["rows"], strict=True)}
    print("onnx / torch requests/s: " + ", ".join(f"{k} clients {v:.2f}x" for k, v in ratios.items()))
    errors = sum(row["errors"] for r in results.values() for row in r["rows"])
    res = {"run": str(run), "image_bytes": len(data), "results": results, "onnx_over_torch_req_per_s": ratios,
           "errors": errors, "cpus": os.cpu_count()}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")
    if errors:
        raise SystemExit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
