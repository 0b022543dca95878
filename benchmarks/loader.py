"""Benchmark: ready training batches per second, naive per-item loader vs cxrlab's cache.

On the same >= 1,000 images of 1024 px (phantom by default; ``--source/--root``
for any dataset), at each size (224 and 512 by default):

(a) naive: a torch DataLoader with all cores, per item PIL decode + resize +
    torchvision RandomAffine/ColorJitter + ToTensor/Normalize;
(b) cxrlab: ``prepare_cache`` once (its cost is reported), then batches read from
    the uint8 memory map and augmented on the whole batch.

Both deliver normalised float batches of the same shape with comparable
augmentation.  Prints img/s for both and their ratio, writes JSON.

    python benchmarks/loader.py [--n 1000] [--sizes 224 512] [--out bench_loader.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from cxrlab.data.cache import cache_key, prepare_cache
from cxrlab.data.phantom import render
from cxrlab.data.preprocess import Preprocess
from cxrlab.data.transforms import Augment, augment, to_float
from cxrlab.train.loop import ArraySplit


def _phantom_1024(args: tuple[int, str]) -> str:
    """A phantom drawn at 256 px, upsampled to 1024 px with fresh noise (PNG decode cost of a real 1024 image)."""
    i, folder = args
    img = cv2.resize(render(i, 256, seed=0).pixels, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(i).normal(0, 3, img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    path = os.path.join(folder, f"{i:05d}.png")
    cv2.imwrite(path, img)
    return path


class NaiveDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], size: int):
        from torchvision import transforms as T

        self.paths = paths
        self.tf = T.Compose([
            T.Resize((size, size)),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            T.ColorJitter(brightness=0.1, contrast=0.1),
            T.ToTensor(),
            T.Normalize([0.449], [0.226]),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            x = self.tf(im.convert("L"))
        return x, torch.zeros(6)


def naive_rate(paths: list[str], size: int, batch: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(NaiveDataset(paths, size), batch_size=batch, shuffle=True,
                                         num_workers=workers, persistent_workers=False)
    tic, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += x.shape[0]
    return seen / (time.perf_counter() - tic)


def cache_rate(images: np.ndarray, batch: int, epochs: int = 3) -> float:
    split = ArraySplit(images, torch.zeros(len(images), 6))
    aug = Augment()
    gen = torch.Generator().manual_seed(0)
    tic, seen = time.perf_counter(), 0
    for _ in range(epochs):
        order = torch.randperm(len(split), generator=gen)
        for s in range(0, len(split), batch):
            xb, _ = split.batch(order[s:s + batch], split.targets)
            x = augment(to_float(xb), gen, aug)
            seen += x.shape[0]
    return seen / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--source", default=None, help="use a dataset instead of the phantom")
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", default="bench_loader.json")
    a = ap.parse_args()
    torch.set_num_threads(a.workers)
    work = Path(tempfile.mkdtemp(prefix="cxrlab-bench-"))
    if a.source:
        from cxrlab.data.sources import load_source

        m = load_source(a.source, a.root)
        paths = [str(p) for p in m.paths(m.frame)][: a.n]
    else:
        (work / "img").mkdir()
        tic = time.perf_counter()
        with ProcessPoolExecutor(a.workers) as pool:
            paths = list(pool.map(_phantom_1024, [(i, str(work / "img")) for i in range(a.n)], chunksize=16))
        print(f"made {a.n} phantom images of 1024 px in {time.perf_counter() - tic:.0f} s")
    results: dict = {"n": len(paths), "batch": a.batch, "workers": a.workers, "sizes": {}}
    for size in a.sizes:
        naive = naive_rate(paths, size, a.batch, a.workers)
        p = Preprocess(size=size)
        ids = [Path(x).name for x in paths]
        tic = time.perf_counter()
        cache = prepare_cache([Path(x) for x in paths], ids, p, work / "cache", cache_key("bench", str(work), ids, p),
                              workers=a.workers)
        prep = time.perf_counter() - tic
        fast = cache_rate(cache.images, a.batch)
        results["sizes"][str(size)] = {"naive_img_s": round(naive, 1), "cache_img_s": round(fast, 1),
                                       "ratio": round(fast / naive, 1), "prepare_seconds": round(prep, 1),
                                       "prepare_img_s": round(len(paths) / prep, 1)}
        print(f"{size:4d} px: naive {naive:7.1f} img/s | cache {fast:8.1f} img/s | ratio {fast / naive:5.1f}x | "
              f"one-time prepare {prep:.1f} s ({len(paths) / prep:.0f} img/s)")
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
