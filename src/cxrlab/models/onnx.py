"""ONNX export of a run's model and an ONNX Runtime engine for CPU inference.

The exported graph takes the normalised float input (B, C, S, S) that the
PyTorch model takes and returns ``logits`` and, for models with timm's
``forward_head`` (every cxrlab model), the penultimate ``features`` the
out-of-distribution score reads, both from one pass; preprocessing (decode, CLAHE,
letterbox, resize, normalise) stays in cxrlab (:mod:`cxrlab.data.preprocess`,
:class:`cxrlab.inference.Predictor`) and is shared by both engines, so they agree.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from cxrlab.errors import CxrlabError
from cxrlab.models.registry import logits_and_penultimate
from cxrlab.runio import atomic_write


class _LogitsAndFeatures(torch.nn.Module):
    """``model`` as one graph with two outputs: logits and the penultimate features."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_penultimate(self.model, x)


def export_model(model: torch.nn.Module, in_chans: int, size: int, out: str | Path, opset: int = 17) -> Path:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis: ``image`` -> ``logits`` (and ``features``)."""
    model.eval()
    x = torch.zeros(1, in_chans, size, size)
    two = callable(getattr(model, "forward_head", None)) and callable(getattr(model, "forward_features", None))
    graph = _LogitsAndFeatures(model).eval() if two else model
    names = ["logits", "features"] if two else ["logits"]

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(graph, (x,), tmp, input_names=["image"], output_names=names,
                              dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
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
        self.has_features = "features" in {o.name for o in self.session.get_outputs()}

    def _run(self, x: torch.Tensor, names: list[str]) -> list[np.ndarray]:
        return self.session.run(names, {"image": np.ascontiguousarray(x.numpy(), dtype=np.float32)})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(x, ["logits"])[0])

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs of one run (an export from before cxrlab wrote features has none)."""
        if not self.has_features:
            raise CxrlabError("this ONNX export has no features output; re-export it with cxrlab export RUN")
        logits, feats = self._run(x, ["logits", "features"])
        return torch.from_numpy(logits), torch.from_numpy(feats)
