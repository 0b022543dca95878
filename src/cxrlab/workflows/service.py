"""A run held open for answering requests: the model loaded once, then predict and explain per call.

The server (:mod:`cxrlab.serve.app`) owns HTTP, uploads and limits; this
module owns what a request computes, through the same pieces as ``cxrlab
predict`` and ``cxrlab explain``: :func:`cxrlab.workflows.predict.open_predictor`
for probabilities (PyTorch or ONNX Runtime), the run's thresholds,
:class:`cxrlab.workflows.ood.OodScorer` and :func:`cxrlab.explain.cams.attribute`.
Model calls are serialised by a lock (Grad-CAM hooks and MC dropout change
the shared module's state), so concurrent requests never see each other's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.data.splits import shared_patients
from cxrlab.errors import CxrlabError
from cxrlab.explain.cams import METHODS, attribute
from cxrlab.inference import decide
from cxrlab.models import cam_layer
from cxrlab.report.overlay import cam_overlay_png
from cxrlab.report.setup import preprocessing_steps
from cxrlab.run import RunFolder
from cxrlab.workflows.card import card_metadata
from cxrlab.workflows.common import open_model
from cxrlab.workflows.ood import open_scorer, probabilities_and_ood
from cxrlab.workflows.predict import decisions, open_predictor

ENGINES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Overlay:
    """An explanation as served: the PNG, its label and probability, and whether the map was flat."""

    png: bytes
    label: str
    probability: float
    flat: bool


def resolve_engine(run: RunFolder, engine: str) -> str:
    """``auto`` is ONNX Runtime when the run has an exported model (``cxrlab export``), else PyTorch."""
    if engine not in ENGINES:
        raise CxrlabError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    if engine == "auto":
        return "onnx" if run.onnx_file.is_file() else "torch"
    return engine


class ModelService:
    """One trained run, opened once.

    Args:
        run_dir: the run folder.
        engine: ``auto`` | ``torch`` | ``onnx`` for the probabilities and the OOD features (an ONNX
            export from before features were exported falls back to PyTorch for them); the PyTorch
            model is loaded in every case for MC dropout and explanations.
    """

    def __init__(self, run_dir: str | Path, engine: str = "auto"):
        self.run = RunFolder(run_dir)
        self.engine = resolve_engine(self.run, engine)
        self.opened = open_model(self.run)
        self.record = self.opened.record
        self.predictor = (self.opened.predictor if self.engine == "torch"
                          else open_predictor(self.run, "onnx")[0])
        # OOD features from the engine that gives the probabilities when it can (one pass per request)
        self.scorer = open_scorer(self.run, self.predictor if self.predictor.has_features else self.opened.predictor)
        self.card = card_metadata(self.run.path)
        # the patients shared between splits, read as the run report reads them (summary.json at training)
        self.patient_overlap = shared_patients((self.run.read_json(self.run.summary_file) or {}).get("data") or {})
        self.lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return self.record.labels

    def info(self) -> dict[str, Any]:
        """What the page needs to draw: labels, thresholds, engine, input size, OOD threshold, patient overlap,
        the preprocessing steps applied (in the run report's words).

        ``patient_overlap`` is :func:`cxrlab.data.splits.shared_patients` of the run's split
        summary: ``{"train-test": {"patients": n, "examples": [...]}, ...}`` for the pairs of
        splits that share patients, ``{}`` when none does, ``None`` when the run did not record it.
        """
        rec = self.record
        return {"name": self.card["name"], "version": self.card["version"], "engine": self.engine,
                "task": rec.task, "labels": rec.labels, "input_size": rec.preprocess.size,
                "thresholds": rec.thresholds if rec.task != "multiclass" else None,
                "threshold_rule": self.card["threshold_rule"], "mc_dropout": bool(rec.dropout),
                "ood_threshold": self.scorer.threshold if self.scorer else None,
                "explain_methods": [m for m in METHODS if m != "layergradcam"],
                "patient_overlap": self.patient_overlap,
                "preprocessing": " > ".join(preprocessing_steps(rec.preprocess.to_record()))}

    def predict(self, images_u8: np.ndarray, names: list[str], mc_passes: int = 0,
                tta: bool = False) -> list[dict[str, Any]]:
        """One result per image: probabilities, thresholds, decision, OOD score (and MC dropout)."""
        rec = self.record
        with self.lock:
            probs, scores, flags = probabilities_and_ood(self.predictor, self.scorer, images_u8, tta)
            mc = self.opened.predictor.mc_dropout(images_u8, passes=mc_passes) if mc_passes > 0 else None
        raw = decide(probs, rec.labels, rec.task, rec.thresholds)
        shown = decisions(probs, rec)  # the words predict prints: a binary negative is "Normal (no X)"
        out = []
        for i, name in enumerate(names):
            r: dict[str, Any] = {
                "file": name, "probabilities": dict(zip(rec.labels, probs[i].tolist(), strict=True)),
                "prediction": shown[i],
                "positive": [] if raw[i] == "none" else raw[i].split("|"),
                "ood": None if scores is None else {"score": float(scores[i]), "threshold": self.scorer.threshold,
                                                    "flag": bool(flags[i])},
            }
            if mc is not None:
                r["mc_dropout"] = {"passes": mc_passes, "mean": dict(zip(rec.labels, mc[0][i].tolist(), strict=True)),
                                   "std": dict(zip(rec.labels, mc[1][i].tolist(), strict=True))}
            out.append(r)
        return out

    def explain_png(self, image_u8: np.ndarray, label: str | None = None, method: str = "gradcam",
                    size: int = 384) -> Overlay:
        """The attribution overlay of one (S, S) uint8 image as PNG, for ``label`` (default: the most probable)."""
        rec = self.record
        if method not in METHODS:
            raise CxrlabError(f"unknown explanation method {method!r}; known: {', '.join(METHODS)}")
        if label is not None and label not in rec.labels:
            raise CxrlabError(f"unknown label {label!r}; the model's labels are {', '.join(rec.labels)}")
        pred, model = self.opened.predictor, self.opened.model
        with self.lock:
            # the probability /predict gives: the Predictor applies the run's fitted calibration (one place)
            prob = pred.probabilities(image_u8[None])[0]
            k = rec.labels.index(label) if label is not None else int(prob.argmax())
            cam = attribute(model, cam_layer(model), pred.inputs(image_u8[None]), [k], method)[0]
        flat = not bool(np.ptp(cam) > 0)
        return Overlay(cam_overlay_png(image_u8, cam, size), rec.labels[k], float(prob[k]), flat)
