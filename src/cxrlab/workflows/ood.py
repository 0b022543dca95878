"""The out-of-distribution step of a run: fit ``RUN/ood.json`` and score new images with it.

Training calls :func:`fit_ood` once its best weights are loaded (with the
images it already holds); ``cxrlab card`` calls it for runs trained before
this step existed (it rebuilds the train and validation images from the
run's data and split).  :class:`OodScorer` scores uint8 model inputs for
predict and serve.  The math lives in :mod:`cxrlab.evaluate.ood`.

A threshold can be fitted and still be useless: a backbone whose features of
noise fall inside the training images' spread passes a colour photo as "in
range".  :func:`fit_ood` therefore scores two probes that no chest X-ray
resembles (uniform noise and a constant grey image, through the run's
preprocessing and model) and records ``self_test`` and ``reliable`` in
``ood.json``; :func:`reliability_note` is the sentence card, predict and serve
show when the check is not to be trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrlab.data.preprocess import Preprocess, preprocess
from cxrlab.errors import CxrlabError
from cxrlab.evaluate import ood
from cxrlab.evaluate.ood import reliability_note
from cxrlab.inference import Predictor
from cxrlab.run import RunFolder
from cxrlab.workflows.common import build_manifest, load_run_images, open_model, run_split

log = logging.getLogger(__name__)

__all__ = ["OodScorer", "fit_ood", "open_scorer", "probabilities_and_ood", "read_ood", "reliability_note",
           "self_test"]

#: Training images whose features are summarised (a seeded random subset beyond this).
MAX_TRAIN = 5000
#: Validation images scored for the threshold.
MAX_VAL = 20000


class _Rows:
    """Rows ``idx`` of an image array (or cache view) that slice like an array, read lazily."""

    def __init__(self, images: Any, idx: np.ndarray):
        self.images, self.idx = images, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key: slice) -> np.ndarray:
        return np.asarray(self.images[self.idx[key]])


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _images_of_run(run: RunFolder, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train (subset) and validation model inputs of a finished run, decoded from its data again."""
    cfg = run.read_config()
    manifest = build_manifest(cfg)
    rec = run.read_model_record()
    out = []
    for split, limit in (("train", MAX_TRAIN), ("val", MAX_VAL)):
        ids = run_split(run, cfg, manifest, split)["image"].tolist()
        ids = [ids[i] for i in _subset(len(ids), limit, seed)]
        out.append(load_run_images(manifest, ids, rec, cfg.data.workers, desc=f"decode {split}"))
    return out[0], out[1]


def probe_images(pre: Preprocess, seed: int = 0) -> dict[str, np.ndarray]:
    """The self-test's inputs as model inputs: uniform noise and a constant grey image, each made at
    the model's size and passed through the run's preprocessing (letterbox, CLAHE, resize)."""
    size = pre.size
    raw = {"uniform noise": np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8),
           "constant grey image": np.full((size, size), 128, dtype=np.uint8)}
    return {name: preprocess(img, pre) for name, img in raw.items()}


def self_test(summary: dict[str, Any], predictor: Predictor, pre: Preprocess, seed: int = 0) -> dict[str, Any]:
    """Score the probes of :func:`probe_images`; ``passed`` when every one is flagged."""
    probes = probe_images(pre, seed)
    scores = ood.mahalanobis(predictor.features(np.stack(list(probes.values()))), summary)
    flagged = ood.flags(scores, summary)
    return {"probes": {name: {"score": float(sc), "flagged": bool(f)}
                       for name, sc, f in zip(probes, scores, flagged, strict=True)},
            "passed": bool(flagged.all())}


def fit_ood(run: RunFolder, predictor: Predictor | None = None, train: Any = None, val: Any = None,
            percentile: float = 99.0, seed: int = 0, pre: Preprocess | None = None) -> dict[str, Any] | None:
    """Fit the OOD summary of ``run`` and write ``RUN/ood.json``; ``None`` (with a warning) when impossible.

    The summary holds the threshold rule of :func:`cxrlab.evaluate.ood.threshold_rule` (``n_val``,
    ``small_validation``, ``warnings``) and the result of :func:`self_test`: ``reliable`` is false
    when uniform noise or a constant image is not flagged.  Each warning is logged.

    Args:
        run: the run folder.
        predictor: the run's PyTorch inference path (default: open the ``best`` model).
        train, val: uint8 model inputs of the training and validation images (default: decoded
            again from the run's data and split, for runs trained before this step existed).
        percentile: validation percentile that becomes the flag threshold.
        seed: picks the training subset when there are more than :data:`MAX_TRAIN` images; seeds the noise probe.
        pre: the preprocessing the probes go through (default: the run's ``model.json``).
    """
    try:
        if predictor is None:
            predictor = open_model(run).predictor
        if pre is None:
            pre = run.read_model_record().preprocess
        if train is None or val is None:
            train, val = _images_of_run(run, seed)
        tr = _Rows(train, _subset(len(train), MAX_TRAIN, seed))
        va = _Rows(val, _subset(len(val), MAX_VAL, seed))
        summary = ood.fit_ood(predictor.features(tr), predictor.features(va), percentile)
        test = self_test(summary, predictor, pre, seed)
    except CxrlabError as e:
        log.warning("%s: no out-of-distribution summary (%s)", run.path, e)
        return None
    summary["n_train_images"] = int(len(train))
    summary["self_test"], summary["reliable"] = test, test["passed"]
    if not test["passed"]:
        missed = [f"{name} (score {p['score']:.3g})" for name, p in test["probes"].items() if not p["flagged"]]
        summary["warnings"].append(f"self-test failed: {' and '.join(missed)} not flagged at the threshold "
                                   f"{summary['threshold']:.3g}; the OOD check is unreliable for this run")
    for w in summary["warnings"]:
        log.warning("%s: OOD: %s", run.path, w)
    run.write_json(run.ood_file, summary)
    return summary


def read_ood(run: RunFolder) -> dict[str, Any] | None:
    """The run's OOD summary, or ``None`` when it has none (older runs: ``cxrlab card RUN``)."""
    summary = run.read_json(run.ood_file)
    if summary is not None and summary.get("version") != ood.SUMMARY_VERSION:
        raise CxrlabError(f"{run.ood_file}: summary version {summary.get('version')} is not "
                          f"{ood.SUMMARY_VERSION}; re-create it with cxrlab card {run.path}")
    return summary


@dataclass
class OodScorer:
    """Mahalanobis scores of uint8 model inputs against a run's summary (a predictor with features)."""

    summary: dict[str, Any]
    predictor: Predictor

    @property
    def threshold(self) -> float:
        return float(self.summary["threshold"])

    def score(self, images_u8: Any) -> tuple[np.ndarray, np.ndarray]:
        """(scores, flags) per image: the distance and whether it lies beyond the threshold."""
        return self.score_features(self.predictor.features(images_u8))

    def score_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, flags) of penultimate features already computed (e.g. with the probabilities)."""
        scores = ood.mahalanobis(features, self.summary)
        return scores, ood.flags(scores, self.summary)


def probabilities_and_ood(predictor: Predictor, scorer: OodScorer | None, images_u8: Any,
                          tta: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(probabilities, OOD scores, flags) of uint8 images; one backbone pass for both when the scorer
    reads the predictor's own features (scores and flags are None without a scorer)."""
    if scorer is None:
        return predictor.probabilities(images_u8, tta=tta), None, None
    if scorer.predictor is predictor:
        probs, feats = predictor.probabilities_and_features(images_u8, tta=tta)
        return (probs, *scorer.score_features(feats))
    return (predictor.probabilities(images_u8, tta=tta), *scorer.score(images_u8))


def open_scorer(run: RunFolder, predictor: Predictor | None = None) -> OodScorer | None:
    """The run's :class:`OodScorer`, or ``None`` without ``ood.json``.

    Scores with ``predictor`` when it gives features (a PyTorch model, or an ONNX export with a
    features output); else opens the run's PyTorch model.
    """
    summary = read_ood(run)
    if summary is None:
        return None
    if predictor is None or not predictor.has_features:
        predictor = open_model(run).predictor
    return OodScorer(summary, predictor)
