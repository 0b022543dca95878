"""Attribution overlays of a trained run for any image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrlab.data.preprocess import load_image
from cxrlab.errors import CxrlabError
from cxrlab.explain.cams import attribute
from cxrlab.models import cam_layer
from cxrlab.report.plots import explain_grid
from cxrlab.report.run_report import render_report
from cxrlab.run import ModelRecord, RunFolder
from cxrlab.workflows.common import open_model, run_folder


def explain_images(run_dir: str | Path, images: list[Path], out_dir: str | Path | None = None,
                   method: str = "gradcam", labels: list[str] | None = None, top: int = 3) -> list[Path]:
    """One overlay grid per image: the model's input, then a map per label with its probability.

    Images are preprocessed by the run's contract (CLAHE, letterbox, size), so the
    maps are of the pixels the model was trained on.  Multi-label runs explain
    ``labels`` (default: the ``top`` most probable); multi-class runs the predicted class.
    Each panel says whether the label is predicted (at the run's threshold, or as the
    arg-max class) and, for images of the run's test or validation split, the truth.
    """
    if top < 1:
        raise CxrlabError(f"--top must be >= 1 (how many of the most probable labels to explain), got {top}")
    run = run_folder(run_dir)
    opened = open_model(run)
    rec, predictor = opened.record, opened.predictor
    unknown = sorted(set(labels or []) - set(rec.labels))
    if unknown:
        raise CxrlabError(f"{run_dir}: labels {unknown} are not among the model's labels {rec.labels}")
    if not images:
        raise CxrlabError("explain: no images given (use --images FILE)")
    out = Path(out_dir) if out_dir is not None else run.explain_dir
    layer = cam_layer(opened.model)
    truth = known_truth(run, rec.labels)
    written = []
    for path in images:
        img = load_image(path, rec.preprocess)
        x = predictor.inputs(img[None])
        prob = np.asarray(predictor.probabilities(img[None])[0])  # calibrated, as predict and serve say
        if rec.task == "multiclass":
            chosen = [int(prob.argmax())]
        elif labels:
            chosen = [rec.labels.index(lab) for lab in labels]
        else:
            chosen = [int(i) for i in np.argsort(-prob)[:top]]
        maps = attribute(opened.model, layer, x.expand(len(chosen), -1, -1, -1), chosen, method)
        true = truth.get(str(Path(path).resolve()))
        titles, colours = zip(*(panel_title(rec, prob, k, true) for k in chosen), strict=True)
        written.append(explain_grid(img, maps, list(titles), f"{Path(path).name}  ({method})",
                                    out / f"{Path(path).stem}_{method}.png", colours=list(colours)))
    if out.resolve() == run.explain_dir.resolve() and run.config_file.is_file():
        render_report(run)  # the report shows RUN/explain/*.png
    return written


def known_truth(run: RunFolder, labels: list[str]) -> dict[str, np.ndarray]:
    """True labels of the run's test and validation images, by resolved file path (empty if unknown)."""
    if not run.config_file.is_file():
        return {}
    root = Path(run.read_config().data.root)
    out: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        if run.has_predictions(split):
            table = run.read_predictions(split)
            for image, row in zip(table["image"], table[labels].to_numpy(dtype=float), strict=True):
                out[str((root / str(image)).resolve())] = row
    return out


def panel_title(rec: ModelRecord, prob: np.ndarray, k: int, truth: np.ndarray | None) -> tuple[str, str]:
    """``label p=0.73`` / ``predicted (>= 0.41)`` / ``truth: positive``, and a colour: green when the
    decision matches the truth, red when not, black when the truth is unknown."""
    lab = rec.labels[k]
    if rec.task == "multiclass":
        predicted, rule = bool(prob.argmax() == k), "arg-max class"
    else:
        thr = float(rec.thresholds.get(lab, 0.5))
        predicted, rule = bool(prob[k] >= thr), f"{'>=' if prob[k] >= thr else '<'} threshold {thr:.3f}"
    decision = f"{'predicted' if predicted else 'not predicted'} ({rule})"
    if truth is None or truth[k] != truth[k]:
        return f"{lab}  p={prob[k]:.3f}\n{decision}\ntruth: unknown", "black"
    positive = bool(truth[k] == 1)
    return (f"{lab}  p={prob[k]:.3f}\n{decision}\ntruth: {'positive' if positive else 'negative'}",
            "darkgreen" if positive == predicted else "firebrick")
