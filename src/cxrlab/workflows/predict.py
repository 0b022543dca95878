"""Predict new images with a run (PyTorch or ONNX Runtime), and export its model to ONNX.

Everything needed comes from the run folder's ``model.json`` (architecture and
options, labels, task, the preprocessing contract, thresholds), so neither the
config nor the training data is needed: a run folder copied alone predicts
exactly as training evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.preprocess import load_image
from cxrlab.errors import CxrlabError
from cxrlab.inference import Predictor, decide
from cxrlab.models.onnx import OnnxEngine, export_model
from cxrlab.run import ModelRecord, RunFolder, prob_column
from cxrlab.workflows.common import open_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff")


def open_predictor(run: RunFolder, engine: str = "torch", which: str = "best") -> tuple[Predictor, ModelRecord]:
    """The run's inference path on ``torch`` or ``onnx`` (ONNX Runtime, after export)."""
    if engine == "torch":
        opened = open_model(run, which)
        return opened.predictor, opened.record
    if engine == "onnx":
        rec = run.read_model_record()
        p = rec.preprocess
        return Predictor(OnnxEngine(run.onnx_file), rec.task, rec.in_chans, p.mean, p.std), rec
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


def _batches(paths: list[Path], rec: ModelRecord, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(paths), size):
        yield np.stack([load_image(p, rec.preprocess) for p in paths[i:i + size]])


def predict_images(run_dir: str | Path, images: list[Path], engine: str = "torch", which: str = "best",
                   batch_size: int = 16, tta: bool = False) -> pd.DataFrame:
    """One row per image: ``image``, ``prob_<label>`` ..., and ``prediction``.

    ``prediction`` is the predicted class (multi-class) or the ``|``-joined labels
    whose probability reaches the run's validation-chosen threshold.
    """
    run = RunFolder(run_dir)
    predictor, rec = open_predictor(run, engine, which)
    paths = expand_inputs(images)
    prob = np.concatenate([predictor.probabilities(b, tta=tta) for b in _batches(paths, rec, batch_size)])
    out = pd.DataFrame({"image": [str(p) for p in paths]})
    for j, lab in enumerate(rec.labels):
        out[prob_column(lab)] = prob[:, j]
    out["prediction"] = decide(prob, rec.labels, rec.task, rec.thresholds)
    return out


def export_onnx(run_dir: str | Path, out: str | Path | None = None, which: str = "best", opset: int = 17) -> Path:
    """Write ``RUN/model.onnx`` (dynamic batch) from the run's ``which`` checkpoint."""
    run = RunFolder(run_dir)
    opened = open_model(run, which)
    rec = opened.record
    return export_model(opened.model, rec.in_chans, rec.preprocess.size, Path(out) if out else run.onnx_file, opset)
