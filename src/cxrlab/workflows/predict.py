"""Predict new images with a run (PyTorch or ONNX Runtime), and export its model to ONNX.

Everything needed comes from the run folder's ``model.json`` (architecture and
options, labels, task, the preprocessing contract, thresholds), so neither the
config nor the training data is needed: a run folder copied alone predicts
exactly as training evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.preprocess import load_image
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import calibrator
from cxrlab.inference import Predictor, decide
from cxrlab.models.onnx import OnnxEngine, export_model
from cxrlab.progress import progress
from cxrlab.run import PROB_PREFIX, ModelRecord, RunFolder, prob_column
from cxrlab.runio import atomic_write
from cxrlab.workflows.common import open_model
from cxrlab.workflows.ood import open_scorer, probabilities_and_ood

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff")


def open_predictor(run: RunFolder, engine: str = "torch", which: str = "best") -> tuple[Predictor, ModelRecord]:
    """The run's inference path on ``torch`` or ``onnx`` (ONNX Runtime, after export)."""
    if engine == "torch":
        opened = open_model(run, which)
        return opened.predictor, opened.record
    if engine == "onnx":
        rec = run.read_model_record()
        p = rec.preprocess
        return Predictor(OnnxEngine(run.onnx_file), rec.task, rec.in_chans, p.mean, p.std,
                         calibrate=calibrator(rec.calibration)), rec  # calibrated as the torch engine
    raise CxrlabError(f"unknown engine {engine!r}; use torch or onnx")


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files (sorted); a .csv lists paths."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CxrlabError(f"{p}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.suffix.lower() == ".csv":
            table = pd.read_csv(p)
            col = next((c for c in ("path", "image", "file", "Path") if c in table.columns), None)
            if col is None:
                raise CxrlabError(f"{p}: a CSV of images needs a 'path' column (has {list(table.columns)[:5]})")
            out += [(p.parent / x) if not Path(x).is_absolute() else Path(x) for x in table[col].astype(str)]
        else:
            out.append(p)
    if not out:
        raise CxrlabError("no images given")
    return out


def decisions(prob: np.ndarray, rec: ModelRecord) -> list[str]:
    """The decision per image in words: the class, the ``|``-joined labels at or above threshold, or
    for a binary run's negative ``Normal (no <label>)`` (``none`` would read as a missing answer)."""
    out = decide(prob, rec.labels, rec.task, rec.thresholds)
    if rec.task == "binary" and len(rec.labels) == 1:
        return [f"Normal (no {rec.labels[0]})" if d == "none" else d for d in out]
    return out


def _batches(paths: list[Path], rec: ModelRecord, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(paths), size):
        yield np.stack([load_image(p, rec.preprocess) for p in paths[i:i + size]])


def predict_images(run_dir: str | Path, images: list[Path], engine: str = "torch", which: str = "best",
                   batch_size: int = 16, tta: bool = False, ood: bool = True) -> pd.DataFrame:
    """One row per image: ``image``, ``prob_<label>`` ..., ``prediction`` (and ``ood_score``, ``ood_flag``).

    ``prediction`` is the predicted class (multi-class) or the ``|``-joined labels
    whose probability reaches the run's validation-chosen threshold (a binary run's
    negative reads ``Normal (no <label>)``, see :func:`decisions`).  When the run
    has an OOD summary (``ood.json``) and ``ood`` is set, ``ood_score`` is the
    Mahalanobis distance of the image's features and ``ood_flag`` says whether it
    lies beyond the run's threshold.  ``unfinished_run`` is True for every row when the run's
    training did not finish (:meth:`RunFolder.finished`): its weights are intermediate and its
    thresholds may be the 0.5 placeholder, so a warning says so too.  A progress bar runs over
    the batches.
    """
    run = RunFolder(run_dir)
    predictor, rec = open_predictor(run, engine, which)
    unfinished = run.unfinished_reason()
    if unfinished:
        log.warning("%s: training did not finish (%s): predicting with intermediate weights and thresholds "
                    "%s; rows are marked unfinished_run", run.path, unfinished, rec.threshold_rule)
    scorer = open_scorer(run, predictor) if ood and which == "best" else None
    paths = expand_inputs(images)
    probs, scores, flags = [], [], []
    for batch in progress(_batches(paths, rec, batch_size), total=-(-len(paths) // batch_size), desc="predict"):
        p, s, f = probabilities_and_ood(predictor, scorer, batch, tta)
        probs.append(p)
        if scorer is not None:
            scores.append(s)
            flags.append(f)
    prob = np.concatenate(probs)
    out = pd.DataFrame({"image": [str(p) for p in paths]})
    for j, lab in enumerate(rec.labels):
        out[prob_column(lab)] = prob[:, j]
    out["prediction"] = decisions(prob, rec)
    if scorer is not None:
        out["ood_score"] = np.concatenate(scores)
        out["ood_flag"] = np.concatenate(flags)
    out["unfinished_run"] = unfinished is not None
    return out


def label_columns(table: pd.DataFrame) -> dict[str, str]:
    """``{label: its probability column}`` of a :func:`predict_images` table, in the model's label order."""
    return {c.removeprefix(PROB_PREFIX): c for c in table.columns if c.startswith(PROB_PREFIX)}


def ood_note(run_dir: str | Path) -> str | None:
    """Why the run's OOD flag is not to be trusted (a small validation set, a failed self-test), or None."""
    from cxrlab.evaluate.ood import reliability_note
    from cxrlab.workflows.ood import read_ood

    return reliability_note(read_ood(RunFolder(run_dir)))


def save_predictions(table: pd.DataFrame, out: str | Path) -> Path:
    """Write a predictions table as ``.csv`` or ``.json`` (a list of records), chosen by the suffix."""
    out = Path(out)
    kind = out.suffix.lower()
    if kind == ".csv":
        return atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    if kind == ".json":
        return atomic_write(out, lambda tmp: table.to_json(tmp, orient="records", indent=1, double_precision=15))
    raise CxrlabError(f"{out}: --out must end in .csv or .json")


def export_onnx(run_dir: str | Path, out: str | Path | None = None, which: str = "best", opset: int = 17) -> Path:
    """Write ``RUN/model.onnx`` (dynamic batch) from the run's ``which`` checkpoint."""
    run = RunFolder(run_dir)
    opened = open_model(run, which)
    rec = opened.record
    return export_model(opened.model, rec.in_chans, rec.preprocess.size, Path(out) if out else run.onnx_file, opset)
