"""Score a run's CAM boxes against true boxes on its own test split (Wollek et al., Tables 4/5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.data.sources.nih import read_bbox_list
from cxrlab.errors import CxrlabError
from cxrlab.explain.localize import localize
from cxrlab.models import cam_layer
from cxrlab.report import plots
from cxrlab.report.run_report import pick_cases, render_report
from cxrlab.run import RunFolder
from cxrlab.workflows.common import (
    build_manifest,
    geometries,
    load_run_images,
    open_model,
    run_split,
)


def read_box_csv(path: str | Path) -> pd.DataFrame:
    """Boxes in the NIH ``BBox_List_2017.csv`` format (image, label, x, y, w, h)."""
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: box file not found")
    try:
        return read_bbox_list(path)
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise CxrlabError(f"{path}: not a box list with image, label, x, y, w, h columns ({e})") from None


def localize_run(run_dir: str | Path, boxes_csv: str | Path | None = None, method: str = "gradcam",
                 threshold: float = 0.5, min_iou: float = 0.1, max_cases: int | None = None,
                 figures: int = 12) -> dict[str, Any]:
    """CAM -> boxes -> IoU per class vs random boxes; writes ``localization_<method>.json``, figures, report."""
    run = RunFolder(run_dir)
    cfg = run.read_config()
    opened = open_model(run)
    manifest = build_manifest(cfg)
    test = run_split(run, cfg, manifest, "test")
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
    rec = opened.record
    images = load_run_images(manifest, ids, rec, cfg.data.workers, desc="decode boxed")
    summary, cases = localize(opened.predictor, cam_layer(opened.model), images, ids, boxes, rec.labels,
                              geometries(manifest.root, ids, rec.preprocess), threshold=threshold,
                              min_iou=min_iou, seed=cfg.seed, method=method)
    plots.localization_bars(summary, run.figures / f"localization_{method}.png")
    if figures and cases:
        plots.cam_overlays(pick_cases(cases, figures), images, run.figures / f"cam_overlays_{method}.png")
    run.write_json(run.localization_file(method), summary)
    render_report(run)
    return summary
