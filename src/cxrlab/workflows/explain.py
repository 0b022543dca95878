"""Attribution overlays of a trained run for any image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrlab.data.preprocess import load_image
from cxrlab.errors import CxrlabError
from cxrlab.explain.cams import attribute
from cxrlab.models import activation, cam_layer
from cxrlab.report.plots import explain_grid
from cxrlab.report.run_report import render_report
from cxrlab.run import RunFolder
from cxrlab.workflows.common import open_model


def explain_images(run_dir: str | Path, images: list[Path], out_dir: str | Path | None = None,
                   method: str = "gradcam", labels: list[str] | None = None, top: int = 3) -> list[Path]:
    """One overlay grid per image: the model's input, then a map per label with its probability.

    Images are preprocessed by the run's contract (CLAHE, letterbox, size), so the
    maps are of the pixels the model was trained on.  Multi-label runs explain
    ``labels`` (default: the ``top`` most probable); multi-class runs the predicted class.
    """
    run = RunFolder(run_dir)
    opened = open_model(run)
    rec, predictor = opened.record, opened.predictor
    unknown = sorted(set(labels or []) - set(rec.labels))
    if unknown:
        raise CxrlabError(f"{run_dir}: labels {unknown} are not among the model's labels {rec.labels}")
    if not images:
        raise CxrlabError("explain: no images given (use --images FILE)")
    out = Path(out_dir) if out_dir is not None else run.explain_dir
    layer = cam_layer(opened.model)
    written = []
    for path in images:
        img = load_image(path, rec.preprocess)
        x = predictor.inputs(img[None])
        prob = activation(predictor.logits(img[None]), rec.task)[0].numpy()
        if rec.task == "multiclass":
            chosen = [int(prob.argmax())]
        elif labels:
            chosen = [rec.labels.index(lab) for lab in labels]
        else:
            chosen = [int(i) for i in np.argsort(-prob)[:top]]
        maps = attribute(opened.model, layer, x.expand(len(chosen), -1, -1, -1), chosen, method)
        titles = [f"{rec.labels[k]}  p={prob[k]:.2f}" for k in chosen]
        written.append(explain_grid(img, maps, titles, f"{Path(path).name}  ({method})",
                                    out / f"{Path(path).stem}_{method}.png"))
    if out.resolve() == run.explain_dir.resolve() and run.config_file.is_file():
        render_report(run)  # the report shows RUN/explain/*.png
    return written
