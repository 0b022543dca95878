"""ONNX export of a run's model and an ONNX Runtime engine for CPU inference.

The exported graph takes the normalised float input (B, C, S, S) that the
PyTorch model takes and returns logits; preprocessing (decode, resize,
normalise) stays in cxrlab and is shared by both engines, so they agree.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from cxrlab.errors import CxrlabError
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write


def export_onnx(run_dir: str | Path, out: str | Path | None = None, which: str = "best", opset: int = 17) -> Path:
    """Write ``RUN/model.onnx`` (dynamic batch) from the run's ``which`` checkpoint."""
    from cxrlab.experiment import model_from_run

    run = RunFolder(run_dir)
    model, info = model_from_run(run, which)
    model.eval()
    out = Path(out) if out else run.path / "model.onnx"
    x = torch.zeros(1, info["in_chans"], info["input_size"], info["input_size"])

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
