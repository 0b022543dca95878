"""Benchmark: 14-label evaluation of 25,596 predictions with 1,000 bootstrap resamples.

Prints the wall time of cxrlab's vectorised bootstrap next to a naive loop
(resample, then scikit-learn's roc_auc_score per label) measured on a fraction
of the resamples and extrapolated, their ratio, and writes JSON.

    python benchmarks/evaluate_speed.py [--n 25596] [--labels 14] [--boot 1000] [--out bench_evaluate.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cxrlab.evaluate.evaluate import evaluate_tables


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=25_596)
    ap.add_argument("--labels", type=int, default=14)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--naive-boot", type=int, default=20)
    ap.add_argument("--out", default="bench_evaluate.json")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    prev = rng.uniform(0.01, 0.2, a.labels)
    y = (rng.random((a.n, a.labels)) < prev).astype(float)
    p = 1 / (1 + np.exp(-(1.5 * y - 2 + rng.normal(0, 1, y.shape))))
    labels = [f"L{j}" for j in range(a.labels)]
    df = pd.DataFrame({"image": np.arange(a.n).astype(str), "patient": (np.arange(a.n) // 3).astype(str)})
    for j, lab in enumerate(labels):
        df[lab] = y[:, j]
        df[f"prob_{lab}"] = p[:, j]

    tic = time.perf_counter()
    ev = evaluate_tables(df, labels, "multilabel", val=df, n_boot=a.boot)
    fast = time.perf_counter() - tic

    tic = time.perf_counter()
    for _ in range(a.naive_boot):
        idx = rng.integers(0, a.n, a.n)
        for j in range(a.labels):
            roc_auc_score(y[idx, j], p[idx, j])
    naive = (time.perf_counter() - tic) / a.naive_boot * a.boot
    res = {"n": a.n, "labels": a.labels, "n_boot": a.boot, "cxrlab_seconds": round(fast, 2),
           "naive_sklearn_seconds_extrapolated": round(naive, 2), "ratio": round(naive / fast, 2),
           "macro_auc": ev["macro_auc"]}
    print(f"cxrlab evaluate (AUC CIs, micro, thresholds, ECE): {fast:.1f} s")
    print(f"naive per-resample sklearn loop (AUC CIs only, extrapolated from {a.naive_boot}): {naive:.1f} s")
    print(f"ratio naive / cxrlab: {naive / fast:.1f}x")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
