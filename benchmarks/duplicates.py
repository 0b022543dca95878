"""Benchmark: the duplicate check's false-match rate, recall and speed on the phantom.

Quality (images rendered at 160 px, loaded at the cache size ``--size``):
- false matches among ``--distinct`` distinct query images (other patients) against as many
  references, and among follow-up images of the references' own patients (same anatomy template,
  other lesions, pose and noise: the hardest distinct pairs the phantom has);
- recall of exact copies and of near copies (resized by 0.9, JPEG quality 75, cropped 3% at one
  edge, each edge in turn), each reported with the reference it was matched to;
- the distances: the largest of a true near copy, the smallest of a distinct image.
Speed: ``--n-ref`` references x ``--n-query`` queries (the rendered images with per-image noise and
gain, so every array is distinct), wall seconds of the whole check.

    python benchmarks/duplicates.py [--distinct 2000] [--size 64] [--n-ref 100000] [--n-query 10000] [--out bench_duplicates.json]
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from cxrlab.data.phantom import render
from cxrlab.data.preprocess import Preprocess, preprocess
from cxrlab.evaluate.duplicates import MAX_DISTANCE, find_duplicates

EDGES = ("left", "right", "top", "bottom")


def near_copy(img: np.ndarray, edge: str) -> np.ndarray:
    h, w = img.shape
    small = cv2.resize(img, (round(0.9 * w), round(0.9 * h)), interpolation=cv2.INTER_AREA)
    small = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_GRAYSCALE)
    h, w = small.shape
    c = round(0.03 * w)
    return {"left": small[:, c:], "right": small[:, :w - c], "top": small[c:], "bottom": small[:h - c]}[edge]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distinct", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n-ref", type=int, default=100_000)
    ap.add_argument("--n-query", type=int, default=10_000)
    ap.add_argument("--out", default="bench_duplicates.json")
    a = ap.parse_args()
    pre = Preprocess(size=a.size)
    t0 = time.perf_counter()
    pics = [render(i, size=160, seed=0) for i in range(2 * a.distinct)]
    render_s = time.perf_counter() - t0
    cache = np.stack([preprocess(p.pixels, pre) for p in pics])
    ref, query = cache[: a.distinct], cache[a.distinct:]
    rid = [f"r{i}" for i in range(a.distinct)]

    distinct = find_duplicates(ref, rid, query, [f"q{i}" for i in range(len(query))], max_distance=1.0)
    d_distinct = np.array([m.distance for m in distinct.matches])
    first = [i for i, p in enumerate(pics[: a.distinct]) if p.follow_up == 0]
    later = [i for i, p in enumerate(pics[: a.distinct]) if p.follow_up > 0]
    follow = find_duplicates(ref[first], [rid[i] for i in first], ref[later], [rid[i] for i in later], max_distance=1.0)
    d_follow = np.array([m.distance for m in follow.matches])

    rng = np.random.default_rng(0)
    pick = rng.choice(a.distinct, a.copies, replace=False)
    near = np.stack([preprocess(near_copy(pics[i].pixels, EDGES[k % 4]), pre) for k, i in enumerate(pick)])
    qids = [f"near_of_r{i}" for i in pick] + [f"copy_of_r{i}" for i in pick]
    copies = find_duplicates(ref, rid, np.concatenate([near, ref[pick]]), qids)
    right = [m for m in copies.matches if m.query.endswith("_" + m.reference)]
    near_found = [m for m in right if m.kind == "near"]
    exact_found = [m for m in right if m.kind == "exact"]
    probe = find_duplicates(ref, rid, near, qids[: a.copies], max_distance=1.0)
    d_near = np.array([m.distance for m in probe.matches if m.query.endswith("_" + m.reference)])

    # speed: distinct arrays from the rendered ones (noise and gain per copy)
    def spread(n: int, offset: int) -> np.ndarray:
        base = cache[np.arange(n) % len(cache)].astype(np.int16)
        r = np.random.default_rng(offset)
        gain = r.uniform(0.9, 1.1, (n, 1, 1))
        return np.clip(base * gain + r.normal(0, 3, base.shape), 0, 255).astype(np.uint8)

    big_ref, big_q = spread(a.n_ref, 1), spread(a.n_query, 2)
    t0 = time.perf_counter()
    speed = find_duplicates(big_ref, [str(i) for i in range(a.n_ref)], big_q, [str(i) for i in range(a.n_query)])
    speed_s = time.perf_counter() - t0

    out = {
        "size": a.size, "max_distance": MAX_DISTANCE, "render_seconds": round(render_s, 1),
        "distinct": {"n_reference": a.distinct, "n_query": len(query),
                     "false_matches": int((d_distinct <= MAX_DISTANCE).sum()),
                     "false_match_rate": float((d_distinct <= MAX_DISTANCE).mean()),
                     "nearest_distance_min": float(d_distinct.min()),
                     "nearest_distance_p01": float(np.percentile(d_distinct, 1))},
        "follow_ups_same_patient": {"n_reference": len(first), "n_query": len(later),
                                    "false_matches": int((d_follow <= MAX_DISTANCE).sum()),
                                    "nearest_distance_min": float(d_follow.min()) if len(d_follow) else None},
        "copies": {"near": a.copies, "near_found": len(near_found), "exact": a.copies, "exact_found": len(exact_found),
                   "wrong_reference": len(copies.matches) - len(right),
                   "near_distance_max": float(d_near.max()), "near_distance_median": float(np.median(d_near))},
        "speed": {"n_reference": a.n_ref, "n_query": a.n_query, "seconds": round(speed_s, 2),
                  "comparisons_per_second": a.n_ref * a.n_query / speed_s, "matches": len(speed.matches)},
    }
    print(json.dumps(out, indent=2))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
