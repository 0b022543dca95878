"""ONNX export of a run's model and an ONNX Runtime engine for CPU inference.

The exported graph takes the normalised float input (B, C, S, S) that the
PyTorch model takes and returns logits; preprocessing (decode, CLAHE,
letterbox, resize, normalise) stays in cxrlab (:mod:`cxrlab.data.preprocess`,
:class:`cxrlab.inference.Predictor`) and is shared by both engines, so they agree.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from cxrlab.errors import CxrlabError
from cxrlab.runio import atomic_write


def export_model(model: torch.nn.Module, in_chans: int, size: int, out: str | Path, opset: int = 17) -> Path:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis: ``image`` -> ``logits``."""
    model.eval()
    x = torch.zeros(1, in_chans, size, size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(model, (x,), tmp, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset, dynamo=False)

    return atomic_write(out, write)


class OnnxEngine:
    """Logits from an exported model with ONNX Runtime on the CPU."""

    def __init__(self, path: str | Path, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CxrlabError("the onnx engine needs onnxruntime: pip install onnxruntime") from None
        path = Path(path)
        if not path.is_file():
            raise CxrlabError(f"{path}: ONNX model not found (run cxrlab export RUN first)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)
