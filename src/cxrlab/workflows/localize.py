"""Score a run's CAM boxes against true boxes on its own test split (Wollek et al., Tables 4/5)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlab.data.sources.nih import read_bbox_list
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import Localization, fresh
from cxrlab.explain.localize import boxes_outside, localize, match_boxes, matching_sentence
from cxrlab.models import cam_layer
from cxrlab.report import plots
from cxrlab.report.run_report import pick_cases, render_report
from cxrlab.workflows.common import (
    build_manifest,
    geometries,
    load_run_images,
    open_model,
    run_folder,
    run_split,
)

log = logging.getLogger(__name__)


def read_box_csv(path: str | Path) -> pd.DataFrame:
    """Boxes in the NIH ``BBox_List_2017.csv`` format (image, label, x, y, w, h)."""
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"{path}: box file not found")
    try:
        return read_bbox_list(path)
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise CxrlabError(f"{path}: not a box list with image, label, x, y, w, h columns ({e})") from None


def localization_key(method: str, boxes_csv: str | Path | None = None) -> str:
    """What names a result: ``method`` for the dataset's own boxes, ``method_<box file stem>`` for a
    ``--boxes`` file, so a box file never overwrites the result of another box source."""
    if boxes_csv is None:
        return method
    return f"{method}_{re.sub(r'[^A-Za-z0-9.+-]+', '_', Path(boxes_csv).stem)}"


def localize_run(run_dir: str | Path, boxes_csv: str | Path | None = None, method: str = "gradcam",
                 threshold: float = 0.5, min_iou: float = 0.1, max_cases: int | None = None,
                 figures: int = 12) -> dict[str, Any]:
    """CAM -> boxes -> IoU per class vs random boxes; writes ``localization_<key>.json``, figures, report.

    Returns the :class:`~cxrlab.evaluate.records.Localization` as the file holds it (``to_dict``).
    ``key`` is :func:`localization_key` (stored in the result: its figures are ``RunFolder.figure(name, key)``).  The result names its box source (``box_file``: the file,
    or null for the dataset's boxes) and ``matching`` (:func:`~cxrlab.explain.localize.match_boxes`:
    how many of the file's boxes matched test images, and why the rest did not).  A box beyond its
    image (another pixel frame) stops with one line.
    """
    run = run_folder(run_dir)
    cfg = run.read_config()
    opened = open_model(run)
    rec = opened.record
    manifest = build_manifest(cfg)
    test = run_split(run, cfg, manifest, "test")
    if boxes_csv is not None:
        boxes, source = read_box_csv(boxes_csv), str(boxes_csv)
    elif manifest.boxes is not None:
        boxes, source = manifest.boxes, f"the dataset's boxes ({cfg.data.root})"
    else:
        raise CxrlabError(f"{cfg.data.root}: the dataset has no boxes; pass --boxes BBox_List_2017.csv")
    test_ids = test["image"].tolist()
    others = set(manifest.frame["image"]) - set(test_ids)
    boxes, matching = match_boxes(boxes, test_ids, others, rec.labels)
    ids = sorted(set(boxes["image"]))
    if not ids:
        raise CxrlabError(f"{source}: no box matches the run's test split ({matching_sentence(matching, source)})")
    if max_cases:
        ids = ids[:max_cases]
        boxes = boxes[boxes["image"].isin(ids)]
    geometry = geometries(manifest.root, ids, rec.preprocess)
    outside = boxes_outside(boxes, {i: (g.width, g.height) for i, g in geometry.items()})
    if len(outside):
        b = outside.iloc[0]
        raise CxrlabError(
            f"{source}: {len(outside)} of {len(boxes)} matched boxes lie outside their images (e.g. {b['image']}: "
            f"x {b['x']:g}..{b['x'] + b['w']:g}, y {b['y']:g}..{b['y'] + b['h']:g} on a {b['width']} x "
            f"{b['height']} image); boxes must be in the pixels of the images in {cfg.data.root} "
            "(NIH's BBox_List_2017.csv is in 1024-px coordinates)")
    images = load_run_images(manifest, ids, rec, cfg.data.workers, desc="decode boxed")
    found, cases = localize(opened.predictor, cam_layer(opened.model), images, ids, boxes, rec.labels,
                            geometry, threshold=threshold, min_iou=min_iou, seed=cfg.seed, method=method)
    if matching["matched"] < matching["boxes"]:
        log.warning("%s", matching_sentence(matching, source))
    key = localization_key(method, boxes_csv)
    result = fresh(Localization, found, key=key, matching=matching,
                   box_file=str(Path(boxes_csv).resolve()) if boxes_csv is not None else None)
    plots.localization_bars(result, run.figure("localization", key))
    if figures and cases:
        plots.cam_overlays(pick_cases(cases, figures), images, run.figure("cam_overlays", key),
                           method=method, iou=min_iou)
    summary = result.to_dict()
    run.write_json(run.localization_file(key), summary)
    render_report(run)
    return summary
