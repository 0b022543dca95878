"""Benchmark: CPU latency of one image, PyTorch eager vs ONNX Runtime, same model and input.

    python benchmarks/onnx_inference.py [--model densenet121] [--size 224] [--runs 30] [--out bench_onnx.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrlab.models import build_model
from cxrlab.models.onnx import OnnxEngine, export_model


def latency(fn, x: torch.Tensor, runs: int) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - tic)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default="bench_onnx.json")
    a = ap.parse_args()
    model = build_model(a.model, 14, in_chans=1).eval()
    x = torch.randn(1, 1, a.size, a.size)
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    export_model(model, 1, a.size, path)
    engine = OnnxEngine(path)

    def eager(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(t)

    diff = float((eager(x) - engine(x)).abs().max())
    t_torch, t_onnx = latency(eager, x, a.runs), latency(engine, x, a.runs)
    res = {"model": a.model, "size": a.size, "torch_ms": round(t_torch, 1), "onnx_ms": round(t_onnx, 1),
           "speedup": round(t_torch / t_onnx, 2), "max_abs_logit_diff": diff, "threads": torch.get_num_threads()}
    print(f"{a.model} {a.size} px, 1 image: torch {t_torch:.1f} ms | onnxruntime {t_onnx:.1f} ms | "
          f"speed-up {t_torch / t_onnx:.2f}x | max |logit diff| {diff:.2e}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
