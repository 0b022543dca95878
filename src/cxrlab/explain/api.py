"""Explanations of a trained run: overlay grids for any images, box scoring on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrlab.data.io import image_size, read_gray, to_uint8_resized
from cxrlab.data.transforms import to_float
from cxrlab.errors import CxrlabError
from cxrlab.explain.cams import attribute
from cxrlab.models import cam_layer
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write, atomic_write_json
from cxrlab.train.losses import activation


def explain_images(run_dir: str | Path, images: list[Path], out_dir: str | Path, method: str = "gradcam",
                   labels: list[str] | None = None, top: int = 3) -> list[Path]:
    """One overlay grid per image: the image, then a map per label with its probability.

    Multi-label runs explain ``labels`` (default: the ``top`` most probable);
    multi-class runs explain the predicted class.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxrlab.experiment import model_from_run

    model, info = model_from_run(RunFolder(run_dir))
    names = info["labels"]
    unknown = sorted(set(labels or []) - set(names))
    if unknown:
        raise CxrlabError(f"{run_dir}: labels {unknown} are not among the model's labels {names}")
    size, in_chans = info["input_size"], info["in_chans"]
    layer = cam_layer(model)
    out_dir = Path(out_dir)
    written = []
    for path in images:
        img = to_uint8_resized(read_gray(path), size)
        x = to_float(torch.from_numpy(img)[None], in_chans)
        with torch.no_grad():
            model.eval()
            prob = activation(model(x), info["task"])[0].numpy()
        if info["task"] == "multiclass":
            chosen = [int(prob.argmax())]
        elif labels:
            chosen = [names.index(lab) for lab in labels]
        else:
            chosen = [int(i) for i in np.argsort(-prob)[:top]]
        maps = attribute(model, layer, x.expand(len(chosen), -1, -1, -1), chosen, method)
        cols = len(chosen) + 1
        fig, axes = plt.subplots(1, cols, figsize=(3 * cols, 3.3))
        axes = np.atleast_1d(axes)
        axes[0].imshow(img, cmap="gray")
        axes[0].set_title(Path(path).name, fontsize=8)
        for ax, k, m in zip(axes[1:], chosen, maps, strict=True):
            ax.imshow(img, cmap="gray")
            ax.imshow(m, cmap="jet", alpha=0.4)
            ax.set_title(f"{names[k]}  p={prob[k]:.2f}", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"{method}", fontsize=9)
        fig.tight_layout()
        target = out_dir / f"{Path(path).stem}_{method}.png"
        atomic_write(target, lambda tmp, fig=fig: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
        written.append(target)
    run = RunFolder(run_dir)
    if out_dir.resolve() == (run.path / "explain").resolve() and (run.path / "config.yaml").is_file():
        render_report(run)  # the report shows RUN/explain/*.png
    return written


def read_box_csv(path: str | Path) -> pd.DataFrame:
    """Boxes in the NIH ``BBox_List_2017.csv`` format (image, label, x, y, w, h)."""
    from cxrlab.data.sources.nih import read_bbox_list

    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: box file not found")
    try:
        return read_bbox_list(path)
    except (ValueError, pd.errors.ParserError) as e:
        raise CxrlabError(f"{path}: not a box list with image, label, x, y, w, h columns ({e})") from None


def localize_run(run_dir: str | Path, boxes_csv: str | Path | None = None, method: str = "gradcam",
                 threshold: float = 0.5, min_iou: float = 0.1, max_cases: int | None = None,
                 figures: int = 12) -> dict[str, Any]:
    """Score CAM boxes of a run against true boxes on its test split (seed 001, Tables 4/5)."""
    from cxrlab.data.arrays import load_images
    from cxrlab.experiment import build_manifest, model_from_run
    from cxrlab.explain.localize import localize
    from cxrlab.report import plots

    run = RunFolder(run_dir)
    cfg = run.read_config()
    model, info = model_from_run(run)
    manifest = build_manifest(cfg)
    test = manifest.split("test")
    if boxes_csv is not None:
        boxes = read_box_csv(boxes_csv)
        by_name = {Path(p).name: p for p in test["image"]}
        boxes["image"] = boxes["image"].map(lambda n: by_name.get(Path(n).name, n))
    elif manifest.boxes is not None:
        boxes = manifest.boxes
    else:
        raise CxrlabError(f"{cfg.data.root}: the dataset has no boxes; pass --boxes BBox_List_2017.csv")
    ids = sorted(set(boxes["image"]) & set(test["image"]))
    if not ids:
        raise CxrlabError(f"{boxes_csv or cfg.data.root}: no boxed image is in the run's test split")
    if max_cases:
        ids = ids[:max_cases]
    images = torch.from_numpy(load_images([manifest.root / i for i in ids], info["input_size"], cfg.data.workers,
                                          desc="decode boxed"))
    sizes = {i: image_size(manifest.root / i) for i in ids}
    summary, cases = localize(model, cam_layer(model), images, ids, boxes, info["labels"], sizes,
                              in_chans=info["in_chans"], threshold=threshold, min_iou=min_iou, seed=cfg.seed,
                              method=method)
    plots.localization_bars(summary, run.figures / f"localization_{method}.png")
    if figures and cases:
        from cxrlab.report.run_report import pick_cases

        plots.cam_overlays(pick_cases(cases, figures), images.numpy(), sizes,
                           run.figures / f"cam_overlays_{method}.png")
    atomic_write_json(run.path / f"localization_{method}.json", summary)
    render_report(run)
    return summary
