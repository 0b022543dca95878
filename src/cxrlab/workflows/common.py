"""Steps shared by the workflows: open a run's model, rebuild its data, load its test split.

Workflows are the only code that opens run folders, builds manifests, runs
models and renders reports; these helpers keep each of those in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlab.config import ExperimentConfig
from cxrlab.data.io import image_size
from cxrlab.data.labels import apply_policy
from cxrlab.data.manifest import Manifest
from cxrlab.data.preprocess import Geometry, Preprocess, load_images, normalization
from cxrlab.data.sources import load_source
from cxrlab.data.sources.merge import SourcePart, load_sources
from cxrlab.data.vocabulary import Vocabulary
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.calibration import calibrator
from cxrlab.inference import Predictor
from cxrlab.models import build_model
from cxrlab.run import ModelRecord, RunFolder


def preprocess_of(cfg: ExperimentConfig) -> Preprocess:
    """The preprocessing contract of a config (what the cache, the run and every reader use)."""
    d = cfg.data
    mean, std = normalization(d.normalize, cfg.model.in_chans)
    return Preprocess(size=d.image_size, resize=d.resize, clahe=d.clahe, clahe_clip=d.clahe_clip,
                      clahe_tiles=d.clahe_tiles, mean=mean, std=std, max_pixels=d.max_pixels)


def build_manifest(cfg: ExperimentConfig) -> Manifest:
    """The config's dataset as a manifest, every split non-empty."""
    d = cfg.data
    if d.sources:  # several datasets, merged by label name through the vocabulary
        parts = [SourcePart(s.source, s.root, dict(s.options), s.labels, s.name) for s in d.sources]
        m = load_sources(parts, d.labels, Vocabulary.load(d.vocabulary), val_fraction=d.val_fraction,
                         fractions=dict(d.fractions), seed=cfg.seed, split_file=d.split_file, task=cfg.task)
        where = m.origin
    else:
        if not d.root:
            raise CxrlabError("data.root is empty: set it in the config or as data.root=DIR")
        m = load_source(d.source, d.root, labels=d.labels, options=d.options, val_fraction=d.val_fraction,
                        fractions=dict(d.fractions), seed=cfg.seed, split_file=d.split_file, task=cfg.task)
        where = d.root
    for s in ("train", "val", "test"):
        if (m.frame["split"] == s).sum() == 0:
            raise CxrlabError(f"{where}: the {s} split is empty")
    return m


def run_folder(path: str | Path) -> RunFolder:
    """The :class:`RunFolder` at ``path``, or one line when there is no folder there.

    Every command that takes RUN checks through here first, so a mistyped name says
    "no such run folder" (with the nearest names beside it) instead of naming a file
    missing inside a folder that does not exist.
    """
    import difflib

    path = Path(path)
    if path.is_dir():
        run = RunFolder(path)
        if not run.model_json.is_file():  # a folder that holds runs (cxrlab-demo, runs/): name them
            inside = sorted({str(m.parent) for pattern in ("*/model.json", "*/*/model.json")
                             for m in path.glob(pattern)})
            if inside:
                more = f" and {len(inside) - 5} more" if len(inside) > 5 else ""
                raise CxrlabError(f"{path}: not a cxrlab run folder (model.json missing); the runs under it: "
                                  f"{', '.join(inside[:5])}{more}")
        return run
    if path.exists():
        raise CxrlabError(f"{path}: not a run folder (a file; RUN is the folder, e.g. runs/NAME)")
    parent = path.parent if path.parent.is_dir() else None
    near = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir() if p.is_dir()], n=3) \
        if parent is not None else []
    hint = f"; did you mean {', '.join(str(parent / n) for n in near)}?" if near else ""
    raise CxrlabError(f"no such run folder: {path}{hint}")


def run_record(path: str | Path) -> ModelRecord:
    """The model record of the run at ``path`` (what the CLI needs to know of a run: task, labels)."""
    return run_folder(path).read_model_record()


def build_from_record(rec: ModelRecord) -> torch.nn.Module:
    return build_model(rec.name, len(rec.labels), in_chans=rec.in_chans, dropout=rec.dropout, **rec.options)


@dataclass
class OpenedModel:
    """A trained model with its record and its inference path."""

    model: torch.nn.Module
    record: ModelRecord
    predictor: Predictor


def open_model(run: RunFolder, which: str = "best", device: torch.device | str = "cpu",
               batch_size: int = 64) -> OpenedModel:
    """Rebuild a run's model from ``model.json``, load its weights, and its :class:`Predictor`."""
    rec = run.read_model_record()
    if rec.name == "ensemble":
        raise CxrlabError(f"{run.path}: an ensemble folder holds predictions only, no model to run")
    model = build_from_record(rec)
    run.load_weights(model, which)
    model.eval().to(device)
    pred = Predictor.for_model(model, rec.task, rec.in_chans, rec.preprocess, device=device, batch_size=batch_size,
                               calibrate=calibrator(rec.calibration))  # the run's fitted calibration
    return OpenedModel(model, rec, pred)


def run_split(run: RunFolder, cfg: ExperimentConfig, manifest: Manifest, split: str = "test") -> pd.DataFrame:
    """The manifest rows of ``split`` exactly as the run used them (its ``split.json``, order kept)."""
    ids = run.read_split()[split]
    frame = manifest.frame.set_index("image", drop=False)
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise CxrlabError(f"{run.split_file}: {len(missing)} {split} images of the run are not in "
                          f"{cfg.data.root} any more (e.g. {missing[0]})")
    return frame.loc[ids].reset_index(drop=True)


def targets(manifest: Manifest, frame: pd.DataFrame, labels: list[str], cfg: ExperimentConfig) -> np.ndarray:
    """Evaluation targets: uncertain entries ignored (NaN), blanks as the config says."""
    return apply_policy(manifest.targets(frame), labels, "ignore", cfg.data.blank,
                        absent=manifest.absent_mask(frame)).targets


def load_run_images(manifest: Manifest, ids: list[str], rec: ModelRecord, workers: int = 0,
                    desc: str = "decode") -> np.ndarray:
    """Model inputs (uint8) of manifest images, by the run's preprocessing contract."""
    return load_images([manifest.root / i for i in ids], rec.preprocess, workers, desc=desc)


def geometries(root: Path, ids: list[str], pre: Preprocess) -> dict[str, Geometry]:
    """Box geometry (original size + contract) per image id."""
    return {i: Geometry(*image_size(root / i), pre) for i in ids}
