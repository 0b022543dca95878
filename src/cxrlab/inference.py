"""The one inference path: uint8 images -> model input -> logits -> probabilities.

Training-time validation and test, predict (torch and ONNX Runtime), explain,
localize, MC dropout and the server all run a model through :class:`Predictor`,
so the tensor a model sees is built in one place (:meth:`Predictor.inputs`),
from the normalisation of the preprocessing contract
(:class:`cxrlab.data.preprocess.Preprocess`).  Test-time augmentation (mirror)
and Monte-Carlo dropout are options of this path, not copies of it.

A run's fitted calibration (``model.json["calibration"]``, fitted on validation by
:mod:`cxrlab.evaluate.calibration`) is applied here and nowhere else:
``probabilities = calibrate(activation(logits))`` (:meth:`Predictor.calibrated`), so
training-time test predictions, ``predict`` on either engine and the server return the same
calibrated probabilities.  The workflows that open a run pass the record's ``apply`` as
``calibrate`` (this module sits below ``evaluate/`` and does not import it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlab.data.preprocess import Preprocess
from cxrlab.data.transforms import GRAY_MEAN, GRAY_STD, Norm, to_float
from cxrlab.errors import CxrlabError
from cxrlab.models.registry import logits_and_penultimate, penultimate
from cxrlab.models.task import activation

Forward = Callable[[torch.Tensor], torch.Tensor]


def _as_tensor(images: Any) -> torch.Tensor:
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))


@dataclass
class Predictor:
    """Runs a model (an ``nn.Module`` or any float-input forward, e.g. ONNX Runtime) on uint8 images.

    Args:
        forward: normalised float (B, C, S, S) -> logits (B, L).
        task: ``multilabel`` | ``binary`` | ``multiclass`` (picks sigmoid or softmax).
        model: the ``nn.Module`` behind ``forward`` when there is one (eval mode, MC dropout).
        calibrate: the run's fitted calibration (probabilities (N, L) -> calibrated (N, L)), or None.
    """

    forward: Forward
    task: str
    in_chans: int = 1
    mean: Norm = GRAY_MEAN
    std: Norm = GRAY_STD
    """The preprocessing record's normalisation (one value, or one per channel); for_model takes it from ``pre``."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    model: nn.Module | None = None
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def for_model(cls, model: nn.Module, task: str, in_chans: int = 1, pre: Preprocess | None = None,
                  device: torch.device | str = "cpu", batch_size: int = 64,
                  calibrate: Callable[[np.ndarray], np.ndarray] | None = None) -> Predictor:
        pre = pre or Preprocess()
        return cls(forward=model, task=task, in_chans=in_chans, mean=pre.mean, std=pre.std,
                   device=torch.device(device), batch_size=batch_size, model=model, calibrate=calibrate)

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        """The probabilities this path returns for activation outputs ``probs`` (float32): calibrated when the
        run has a fitted calibration, else ``probs`` as they are."""
        return probs if self.calibrate is None else np.asarray(self.calibrate(probs), dtype=np.float32)

    def inputs(self, images_u8: Any) -> torch.Tensor:
        """The exact float tensor the model is fed for uint8 images (B, S, S), on the device."""
        return to_float(_as_tensor(images_u8).to(self.device), self.in_chans, self.mean, self.std)

    @torch.no_grad()
    def logits(self, images_u8: Any, mirror: bool = False) -> torch.Tensor:
        """Logits (N, L) on the CPU for uint8 images (array, cache rows or tensor), in batches."""
        if self.model is not None:
            self.model.eval()
        out = []
        for i in range(0, len(images_u8), self.batch_size):
            x = self.inputs(images_u8[i:i + self.batch_size])
            if mirror:
                x = x.flip(-1)
            out.append(self.forward(x.contiguous() if mirror else x).float().cpu())
        if not out:
            raise CxrlabError("no images to predict")
        return torch.cat(out)

    def probabilities(self, images_u8: Any, tta: bool = False, calibrated: bool = True) -> np.ndarray:
        """Probabilities (N, L); with ``tta`` averaged with those of the mirrored images, then calibrated
        (unless ``calibrated`` is False: the model's own, which the calibration is fitted on)."""
        return self._probabilities(self.logits(images_u8), images_u8, tta, calibrated)

    def _probabilities(self, logits: torch.Tensor, images_u8: Any, tta: bool, calibrated: bool = True) -> np.ndarray:
        probs = activation(logits, self.task)
        if tta:
            probs = (probs + activation(self.logits(images_u8, mirror=True), self.task)) / 2
        return self.calibrated(probs.numpy()) if calibrated else probs.numpy()

    @property
    def has_features(self) -> bool:
        """Whether :meth:`features` works: a PyTorch model, or an ONNX export with a features output."""
        return self.model is not None or bool(getattr(self.forward, "has_features", False))

    @torch.no_grad()
    def features(self, images_u8: Any) -> np.ndarray:
        """Penultimate features (N, D) for uint8 images, from the model's input as :meth:`inputs` makes it.

        Needs the PyTorch model or an ONNX export with a ``features`` output (cxrlab export writes one).
        """
        return self._outputs(images_u8, logits=False)[1]

    @torch.no_grad()
    def probabilities_and_features(self, images_u8: Any, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`probabilities` and :meth:`features` from one backbone pass per batch.

        The logits come from the same ``forward_head`` that ``model(x)`` calls (or the same ONNX
        graph), so they equal :meth:`logits`; with ``tta`` the mirrored pass adds to the probabilities only.
        """
        logits, feats = self._outputs(images_u8, logits=True)
        return self._probabilities(logits, images_u8, tta), feats

    def _outputs(self, images_u8: Any, logits: bool) -> tuple[torch.Tensor, np.ndarray]:
        model, onnx = self.model, getattr(self.forward, "logits_and_features", None)
        if model is None and not self.has_features:
            raise CxrlabError("penultimate features need the PyTorch model or an ONNX export with features "
                              "(re-export with cxrlab export RUN)")
        if model is not None:
            model.eval()
        outs, feats = [], []
        for i in range(0, len(images_u8), self.batch_size):
            x = self.inputs(images_u8[i:i + self.batch_size])
            if model is None:
                out, f = onnx(x)
            elif logits and model is self.forward:
                out, f = logits_and_penultimate(model, x)
            else:  # features only, or a forward that is not the module: two calls
                out, f = (self.forward(x) if logits else None), penultimate(model, x)
            if logits:
                outs.append(out.float().cpu())
            feats.append(f.float().cpu())
        if not feats:
            raise CxrlabError("no images to predict")
        return (torch.cat(outs) if logits else torch.empty(0)), torch.cat(feats).numpy()

    def mc_dropout(self, images_u8: Any, passes: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (N, L) of the (calibrated) probabilities over ``passes`` passes with dropout active.

        BatchNorm stays in eval mode; the global torch RNG is restored afterwards.
        """
        model = self.model
        if model is None:
            raise CxrlabError("MC dropout needs the PyTorch model (not an exported ONNX graph)")
        was_training = model.training
        if enable_dropout(model) == 0:
            model.train(was_training)
            raise CxrlabError("the model has no dropout layer: train it with model.dropout > 0 for MC dropout")
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        means, stds = [], []
        try:
            with torch.no_grad():
                for i in range(0, len(images_u8), self.batch_size):
                    x = self.inputs(images_u8[i:i + self.batch_size])
                    runs = torch.stack([torch.from_numpy(self.calibrated(activation(self.forward(x).float(),
                                                                                    self.task).cpu().numpy()))
                                        for _ in range(passes)])
                    means.append(runs.mean(0))
                    stds.append(runs.std(0, unbiased=passes > 1))
        finally:
            torch.set_rng_state(state)
            model.train(was_training)
        return torch.cat(means).numpy(), torch.cat(stds).numpy()


def enable_dropout(model: nn.Module) -> int:
    """Eval mode everywhere except dropout layers; return the number with a non-zero rate."""
    model.eval()
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout1d | nn.AlphaDropout):
            m.train()
            n += m.p > 0
    return n


def decide(probs: np.ndarray, labels: list[str], task: str, thresholds: dict[str, float]) -> list[str]:
    """The decision per image: the argmax class, or the ``|``-joined labels at or above threshold."""
    if task == "multiclass":
        return [labels[k] for k in probs.argmax(1)]
    thr = np.array([thresholds.get(lab, 0.5) for lab in labels])
    return ["|".join(lab for lab, hit in zip(labels, row >= thr, strict=True) if hit) or "none" for row in probs]
