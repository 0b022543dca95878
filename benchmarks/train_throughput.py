"""Benchmark: DenseNet-121 training img/s, model only vs the full cxrlab pipeline.

Model only: synthetic tensors already on the device, forward + backward + AdamW
step.  Full pipeline: cxrlab's ``fit`` on a phantom dataset (uint8 cache ->
batch -> device -> batched augmentation -> the same step), reading the img/s
it logs for its training epochs.  Prints both and their ratio, writes JSON.
bf16 autocast and channels_last are used on CUDA (as ``fit`` does).

    python benchmarks/train_throughput.py [--size 224] [--model densenet121] [--n 512] [--out bench_train.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.models import build_model
from cxrlab.run import RunFolder
from cxrlab.train.loop import ArraySplit, fit
from cxrlab.train.losses import masked_bce
from cxrlab.workflows.common import build_manifest
from cxrlab.workflows.experiment import prepare_dataset


def model_only(name: str, size: int, batch: int, steps: int, device: torch.device) -> float:
    model = build_model(name, len(LABELS), in_chans=1).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randn(batch, 1, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, len(LABELS), device=device) < 0.2).float()
    model.train()
    for i in range(steps + 2):
        if i == 2:
            if cuda:
                torch.cuda.synchronize()
            tic = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
        loss = masked_bce(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=512, help="phantom training images for the full pipeline")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="bench_train.json")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="cxrlab-bench-"))
    write_phantom(work / "ph", n=a.n, size=max(a.size, 256), seed=0)
    cfg = load_config(None, base={
        "name": "bench", "runs_dir": str(work / "runs"),
        "data": {"root": str(work / "ph"), "labels": list(LABELS), "image_size": a.size, "cache_dir": str(work / "c"),
                 "val_fraction": 0.05},
        "model": {"name": a.model}, "train": {"epochs": a.epochs, "batch_size": a.batch, "scheduler": "none"},
    })
    m = build_manifest(cfg)
    cache = prepare_dataset(cfg)
    train = m.frame["split"].to_numpy() != "val"
    val = ~train
    y = torch.from_numpy(m.targets(m.frame).copy())
    split = lambda mask: ArraySplit(cache.images[mask], y[torch.from_numpy(mask)])  # noqa: E731

    fast = model_only(a.model, a.size, a.batch, a.steps, device)
    model = build_model(a.model, len(LABELS), in_chans=1)
    hist = fit(model, split(train), split(val), list(LABELS), cfg, RunFolder(work / "runs" / "bench").create())
    full = max(h["img_per_s"] for h in hist)  # the first epoch includes warm-up
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "model": a.model,
           "size": a.size, "batch": a.batch, "model_only_img_s": round(fast, 1),
           "pipeline_img_s": round(full, 1), "ratio": round(full / fast, 3)}
    print(f"{a.model} at {a.size} px on {res['device']}: model only {fast:.1f} img/s | full pipeline "
          f"{full:.1f} img/s | ratio {full / fast:.2f}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
