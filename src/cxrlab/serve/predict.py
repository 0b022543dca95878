"""Predict new images with a run: probabilities, and labels at the run's thresholds.

Everything needed comes from the run folder's ``model.json`` (architecture,
labels, task, input size, channels, normalisation, thresholds), so the config
and the training data are not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlab.data.io import read_gray, to_uint8_resized
from cxrlab.data.transforms import to_float
from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder
from cxrlab.train.losses import activation


def predict_images(run_dir: str | Path, images: list[Path], engine: str = "torch", which: str = "best",
                   batch_size: int = 16, tta: bool = False) -> pd.DataFrame:
    """One row per image: ``image``, ``prob_<label>`` ..., and ``prediction``.

    ``prediction`` is the predicted class (multi-class) or the ``|``-joined labels
    whose probability reaches the run's threshold (multi-label/binary).
    """
    run = RunFolder(run_dir)
    info = run.read_model_json()
    if engine == "torch":
        from cxrlab.experiment import model_from_run

        model, _ = model_from_run(run, which)
        model.eval()

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x).float()
    elif engine == "onnx":
        from cxrlab.serve.onnx import OnnxEngine

        forward = OnnxEngine(run.path / "model.onnx")
    else:
        raise CxrlabError(f"unknown engine {engine!r}; use torch or onnx")
    if not images:
        raise CxrlabError("no images given")
    labels, size, chans = info["labels"], info["input_size"], info["in_chans"]
    norm = info.get("normalization", {})
    probs = []
    for i in range(0, len(images), batch_size):
        batch = np.stack([to_uint8_resized(read_gray(p), size) for p in images[i:i + batch_size]])
        x = to_float(torch.from_numpy(batch), chans, norm.get("mean", 0.449), norm.get("std", 0.226))
        p = activation(forward(x.contiguous()), info["task"])
        if tta:
            p = (p + activation(forward(x.flip(-1).contiguous()), info["task"])) / 2
        probs.append(p.numpy())
    prob = np.concatenate(probs)
    out = pd.DataFrame({"image": [str(p) for p in images]})
    for j, lab in enumerate(labels):
        out[f"prob_{lab}"] = prob[:, j]
    if info["task"] == "multiclass":
        out["prediction"] = [labels[k] for k in prob.argmax(1)]
    else:
        thr = np.array([info.get("thresholds", {}).get(lab, 0.5) for lab in labels])
        out["prediction"] = ["|".join(lab for lab, hit in zip(labels, row >= thr, strict=True) if hit) or "none"
                             for row in prob]
    return out
