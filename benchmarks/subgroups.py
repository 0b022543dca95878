"""Benchmark: the subgroup analysis of a 25,596 x 14 test set (NIH's official test split's size) with
1,000 patient-level resamples, by sex, age bins, view and source and their two-way intersections.

Prints the wall time, the exactness of the binned resamples (the largest difference of a group's
95% AUC interval to the exact per-resample AUCs, measured on a few resamples) and writes JSON.

    python benchmarks/subgroups.py [--n 25596] [--labels 14] [--patients 2797] [--boot 1000] [--out bench_subgroups.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cxrlab.evaluate.stats import weighted_auc
from cxrlab.evaluate.subgroups import age_groups, subgroup_analysis


def data(n: int, n_labels: int, n_patients: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(0, n_patients, n))
    sex = np.where(rng.random(n_patients) < 0.45, "F", "M")[patient]
    age = rng.integers(1, 95, n_patients)[patient].astype(float)
    view = np.where(rng.random(n) < 0.6, "PA", "AP")
    source = np.where(rng.random(n_patients) < 0.5, "nih14", "chexpert")[patient]
    prev = rng.uniform(0.01, 0.2, n_labels)
    y = (rng.random((n, n_labels)) < prev).astype(float)
    p = 1 / (1 + np.exp(-(1.5 * y - 2 + rng.normal(0, 1, y.shape))))
    return y, p, patient, {"sex": sex, "age": age_groups(age, [0, 40, 60, 80, 120]), "view": view, "source": source}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=25_596)
    ap.add_argument("--labels", type=int, default=14)
    ap.add_argument("--patients", type=int, default=2_797)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--out", default="bench_subgroups.json")
    a = ap.parse_args()
    y, p, patient, attrs = data(a.n, a.labels, a.patients)
    labels = [f"L{j}" for j in range(a.labels)]
    thresholds = dict.fromkeys(labels, 0.3)

    tic = time.perf_counter()
    r = subgroup_analysis(y, p, labels, thresholds, attrs, patient, n_boot=a.boot)
    wall = time.perf_counter() - tic
    groups = sum(len(g.groups) for g in r.groupings.values())

    # exactness: the same resamples, exact weighted AUCs of one group (sex = F, label L0)
    k = 100
    tic = time.perf_counter()
    small = subgroup_analysis(y[:, :1], p[:, :1], labels[:1], thresholds, {"sex": attrs["sex"]}, patient,
                              intersections=False, n_boot=k, chunk=k)
    _, inv = np.unique(patient.astype(str), return_inverse=True)
    w = np.random.default_rng(0).multinomial(inv.max() + 1, np.full(inv.max() + 1, 1 / (inv.max() + 1)), size=k)
    f = attrs["sex"] == "F"
    exact = weighted_auc(y[f, 0], p[f, 0], w[:, inv][:, f].astype(float))
    lo, hi = np.quantile(exact, [0.025, 0.975])
    est = small.groupings["sex"].groups["F"].per_label["L0"].metrics["auc"]
    err = max(abs(est.low - lo), abs(est.high - hi))
    res = {"n": a.n, "labels": a.labels, "patients": a.patients, "n_boot": a.boot, "groupings": len(r.groupings),
           "groups": groups, "seconds": round(wall, 2), "score_bins": r.score_bins,
           "ci_bound_difference_to_exact": float(err), "exact_check_resamples": k}
    print(f"subgroups: {a.n} x {a.labels}, {a.patients} patients, {len(r.groupings)} groupings ({groups} groups), "
          f"{a.boot} resamples: {wall:.1f} s")
    print(f"binned ({r.score_bins} score bins) vs exact resampled AUC CI bounds (sex=F, L0, {k} resamples): "
          f"max difference {err:.5f}")
    with open(a.out, "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
