"""``cxrlab demo``: phantom -> train -> evaluate -> explain -> report, in minutes on a CPU.

The demo recipe is built in (no file needed) and written, resolved, into the
run folder like any other run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cxrlab.config import load_config
from cxrlab.data.phantom import LABELS
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.runio import atomic_write_json
from cxrlab.workflows.experiment import run_experiment

#: The demo's recipe; ``cxrlab demo key=value`` overrides any of it.
DEMO_RECIPE: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "task": "multilabel",
    "data": {"source": "nih14", "labels": list(LABELS), "image_size": 128, "val_fraction": 0.15},
    "model": {"name": "simple_cnn", "options": {"width": 24, "convs": 1}, "in_chans": 1},
    "train": {"epochs": 12, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4,
              "scheduler": "cosine", "early_stop": 10,
              "augment": {"rotate_deg": 5, "zoom": 0.06, "shift": 0.04, "brightness": 0.1, "contrast": 0.1}},
    "explain": {"max_images": 300, "figures": 12},
}


def run_demo(out: str | Path = "cxrlab-demo", n: int = 2400, size: int = 256, seed: int = 0,
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; return (and write ``out/summary.json``) its summary."""
    tic = time.perf_counter()
    out = Path(out)
    data = out / "phantom"
    base = {**DEMO_RECIPE, "seed": seed, "runs_dir": str(out / "runs")}
    base["data"] = {**DEMO_RECIPE["data"], "root": str(data), "cache_dir": str(out / "cache")}
    cfg = load_config(None, overrides=overrides, base=base)  # a bad override fails before any work
    if not (data / "phantom.json").is_file() or not _same_phantom(data, n, size, seed):
        # with its lung and heart masks (the images are the same bytes without them), so that
        # ``cxrlab audit`` of the demo run needs no --masks
        write_phantom(data, n=n, size=size, seed=seed, masks=True)
    summary = run_experiment(cfg, overwrite=True)  # the demo owns its run folder
    summary["wall_seconds"] = time.perf_counter() - tic
    summary["report"] = str(Path(cfg.runs_dir) / cfg.name / "report.html")
    atomic_write_json(out / "summary.json", summary)
    return summary


def _same_phantom(folder: Path, n: int, size: int, seed: int) -> bool:
    import json

    meta = json.loads((folder / "phantom.json").read_text())
    # a demo phantom of an earlier version, written without masks, is written again with them
    return (meta.get("n"), meta.get("size"), meta.get("seed")) == (n, size, seed) and "masks" in meta \
        and (folder / "masks").is_dir()
