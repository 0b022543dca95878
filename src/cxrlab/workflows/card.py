"""The model card of a run: ``metadata.json`` (after a MONAI bundle's) and ``card.md``.

Everything comes from the run folder: the model record (labels, task,
preprocessing contract, thresholds and their rule), ``evaluation.json``
(metrics with CIs), ``config.yaml`` (data, training, library versions),
``split.json`` (its hash and sizes), ``summary.json`` and ``ood.json``.
``cxrlab card RUN`` writes both files (fitting the OOD summary first for runs
trained before it existed); ``cxrlab serve`` shows the same dict at ``GET /model``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cxrlab import __version__
from cxrlab.data.splits import shared_patients
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.ood import describe
from cxrlab.evaluate.records import Evaluation
from cxrlab.report.card import card_markdown
from cxrlab.report.setup import leakage_remedy
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write_text
from cxrlab.workflows.ood import fit_ood, read_ood

SCHEMA = "cxrlab-card/1 (after the MONAI bundle metadata.json)"

INTENDED_USE = ("Research on chest radiograph classification: reproducing and comparing methods, teaching, "
                "and screening images for a study. Not a medical device; not for diagnosis, triage or any "
                "decision about a patient.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _metrics(run: RunFolder, task: str) -> dict[str, Any] | None:
    """Test metrics with their 95% CIs from ``evaluation.json`` (None before evaluation)."""
    ev = Evaluation.read(run.evaluation_file, task)
    return ev.card_dict() if ev else None


def _description(name: str, labels: list[str], task: str, source: str, size: int) -> str:
    """What the model does, in one sentence (a binary model detects its one label; no "1 labels")."""
    if task == "binary" and len(labels) == 1:
        what = f"detecting {labels[0]} (binary: {labels[0]} or normal)"
    else:
        n = len(labels)
        what = f"classifying {n} {'label' if n == 1 else 'labels'} ({task}: {', '.join(labels)})"
    return f"{name} {what} on chest radiographs, trained on {source} at {size} px."


def _leakage(summary: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The patients shared between splits as the run report shows them (None: not recorded)."""
    shared = shared_patients(summary.get("data") or {})
    if shared is None:
        return None
    return {"shared": shared, "remedy": leakage_remedy(source) if shared else None}


def _limits(source: str, root: str, n_train: int, task: str, views: dict[str, int] | None,
            has_ood: bool, leakage: dict[str, Any] | None = None) -> list[str]:
    out = [
        "Not validated for clinical use; not a medical device.",
        f"Trained on {n_train} images from one source ({source}); performance on other hospitals, scanners, "
        "populations, ages or acquisition protocols is unknown.",
        "Thresholds were chosen on the validation split; sensitivity and specificity on new data will differ.",
        "Explanations (Grad-CAM) show where the model looked, not where the finding is.",
    ]
    if leakage and leakage["shared"]:
        pairs = "; ".join(f"{k.replace('-', ' and ')}: {v['patients']} patient(s), e.g. {', '.join(v['examples'])}"
                          for k, v in leakage["shared"].items())
        out.insert(1, f"Patients are shared between splits ({pairs}); images of one patient were trained and "
                      "tested on, so the test metrics are likely optimistic.")
    if root and (Path(root) / "phantom.json").is_file():
        out.insert(0, "Trained and tested on synthetic phantom images: its numbers say nothing about real "
                      "radiographs.")
    if views:
        out.append(f"Views in the test split: {', '.join(f'{k} {v}' for k, v in views.items())}; other views "
                   "(e.g. lateral, if absent) are out of its experience.")
    if task == "multilabel":
        out.append("Labels are scored independently; absence of a label is not a normal study.")
    out.append("Images unlike the training images are flagged by an out-of-distribution score (about 1% of "
               "in-distribution images are flagged too); the flag is a warning, not a guarantee."
               if has_ood else "No out-of-distribution summary: unusual inputs are not flagged (run cxrlab card).")
    return out


def card_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The card of a run as a JSON-ready dict (nothing is written)."""
    run = RunFolder(run_dir)
    rec = run.read_model_record()
    if rec.name == "ensemble":
        raise CxrlabError(f"{run.path}: an ensemble folder holds predictions only; write cards for its members")
    cfg = run.read_config()
    raw = yaml.safe_load(run.config_file.read_text()) or {}
    split = json.loads(run.split_file.read_text()) if run.split_file.is_file() else {}
    n = {s: len(split.get(s, [])) for s in ("train", "val", "test")}
    summary = run.read_json(run.summary_file) or {}
    ood = read_ood(run)
    views = None
    if run.has_predictions():
        table = run.read_predictions()
        if "view" in table.columns and table["view"].notna().any():  # a source without views: nothing to say
            views = {str(k): int(v) for k, v in table["view"].astype(object).fillna("unknown").value_counts().items()}
    weights = run.weights_file("best")
    digest = _sha256(weights) if weights.is_file() else None
    d, pre = cfg.data, rec.preprocess
    leakage = _leakage(summary, d.source)
    act = "softmax" if rec.task == "multiclass" else "sigmoid"
    return {
        "schema": SCHEMA,
        "name": cfg.name,
        "version": f"{__version__}+{digest[:12]}" if digest else __version__,
        "created": datetime.fromtimestamp(weights.stat().st_mtime, UTC).isoformat(timespec="seconds")
        if weights.is_file() else None,
        "weights_sha256": digest,
        "task": rec.task,
        "description": _description(rec.name, rec.labels, rec.task, d.source, pre.size),
        "labels": rec.labels,
        "architecture": {"name": rec.name, "options": rec.options, "dropout": rec.dropout, "in_chans": rec.in_chans},
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "PNG, JPEG or DICOM (judged by content); one grey frame",
                "modality": "chest radiograph", "num_channels": rec.in_chans, "spatial_shape": [pre.size, pre.size],
                "dtype": "uint8 after preprocessing, float32 into the network", "value_range": [0, 255],
                "preprocess": pre.to_record()}},
            "outputs": {"pred": {"type": "probabilities", "activation": act, "num_channels": len(rec.labels),
                                 "channel_def": dict(enumerate(rec.labels))}},
        },
        "thresholds": rec.thresholds if rec.task != "multiclass" else None,
        "threshold_rule": rec.threshold_rule if rec.task != "multiclass" else "argmax",
        "metrics": _metrics(run, rec.task),
        "data": {
            "source": d.source, "root": d.root, "labels": list(d.labels or rec.labels), "uncertain": d.uncertain,
            "blank": d.blank, "split": {"hash": split.get("hash"), "n_images": n,
                                        "rule": (summary.get("data") or {}).get("split_method") or
                                        (f"split file {d.split_file}" if d.split_file else
                                         "the source's official test list or patient-level iterative "
                                         f"stratification; validation carved by patient ({d.val_fraction:.0%})")},
            "test_views": views,
            "leakage": leakage,
        },
        "training": {"seed": cfg.seed, "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
                     "loss": cfg.train.loss, "optimizer": cfg.train.optimizer, "lr": cfg.train.lr,
                     "pretrained": cfg.model.pretrained, "augment": cfg.train.augment.enabled,
                     # what actually loaded ("loaded N of M tensors from FILE"), when training recorded it
                     "pretrained_loaded": (summary.get("pretrained") or {}).get("text")},
        "ood": describe(ood) if ood else None,
        "intended_use": INTENDED_USE,
        "limitations": _limits(d.source, d.root, n["train"], rec.task, views, ood is not None, leakage),
        "library_versions": raw.get("environment", {}),
    }


def write_card(run_dir: str | Path, fit_missing_ood: bool = True) -> list[Path]:
    """Write ``RUN/metadata.json`` and ``RUN/card.md``; return what was written (``ood.json`` too if fitted).

    Args:
        fit_missing_ood: fit the OOD summary first when the run has none (a run trained before it
            existed); needs the run's data on disk, else the card says the summary is missing.
    """
    run = RunFolder(run_dir)
    written = []
    if fit_missing_ood and not run.ood_file.is_file() and fit_ood(run) is not None:
        written.append(run.ood_file)
    meta = card_metadata(run.path)
    written.append(run.write_json(run.metadata_file, meta))
    written.append(atomic_write_text(run.card_file, card_markdown(meta)))
    return written
