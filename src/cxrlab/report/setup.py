"""The report's setup and data sections: how the run was made, its split, and patient leakage.

Everything comes from the run folder: ``config.yaml`` (config and environment),
``model.json`` (the preprocessing contract), ``summary.json`` (split facts,
device, wall time) and ``metrics.jsonl`` (the selection metric).
"""

from __future__ import annotations

import re
from typing import Any

from cxrlab.config import ExperimentConfig
from cxrlab.data.splits import shared_patients
from cxrlab.report import present
from cxrlab.report.html import Raw, box, esc, table
from cxrlab.report.plots import selection_name

SPLITS = ("train", "val", "test")


def loss_name(cfg: ExperimentConfig, short: bool = True) -> str:
    """The loss the run trained with, as a reader names it (``BCE``, ``focal``, ``cross-entropy``)."""
    t = cfg.train
    if cfg.task == "multiclass" or t.loss == "ce":
        smooth = f", label smoothing {t.label_smoothing}" if t.label_smoothing and not short else ""
        return f"cross-entropy{smooth}"
    if t.loss == "focal":
        return "focal" if short else f"focal (alpha {t.focal_alpha}, gamma {t.focal_gamma})"
    if t.loss == "weighted_bce":
        return "weighted BCE" if short else "weighted BCE (pos_weight = negatives / positives per label, train split)"
    return "BCE" if short else "binary cross-entropy (BCE) per label"


def preprocessing_steps(pre: dict[str, Any]) -> list[str]:
    """The steps a preprocessing record (``model.json["preprocess"]``) applies, in the order applied.

    Only what was done: a squash run lists no letterbox and no CLAHE (the record's ``order``
    names every step the code can take, applied or not).
    """
    size = pre.get("size")
    steps = ["decode"]
    if pre.get("resize") == "letterbox":
        steps.append("letterbox (padded to square, aspect ratio kept)")
    if pre.get("clahe"):
        tiles = pre.get("clahe_tiles")
        steps.append(f"CLAHE (clip limit {pre.get('clahe_clip')}, {tiles}x{tiles} tiles)")
    how = "" if pre.get("resize") == "letterbox" else ", squashed (stretched to square)"
    steps.append(f"{pre.get('interpolation', 'area')} resize to {size}x{size} px{how}, uint8")
    def norm(v: Any) -> str:  # one value, or one per channel (data.normalize)
        return f"({', '.join(f'{x:.3f}' for x in v)})" if isinstance(v, list | tuple) else f"{v:.3f}"

    steps.append(f"(x/255 - {norm(pre.get('mean', 0))}) / {norm(pre.get('std', 1))}")
    return steps


def preprocessing_text(model_json: dict[str, Any]) -> str:
    """The preprocessing contract of ``model.json`` in words: the steps applied, in order."""
    p = model_json.get("preprocess")
    if not p:
        return "not recorded (a model record from before cxrlab 0.1.0: squash resize, no CLAHE)"
    norm = model_json.get("normalization") or {}
    rec = {**p, "size": p.get("size", model_json.get("input_size")),
           "mean": norm.get("mean", p.get("mean")), "std": norm.get("std", p.get("std"))}
    return " > ".join(preprocessing_steps(rec))


def augmentation_text(cfg: ExperimentConfig) -> str:
    """The training augmentation in words (``none`` when off)."""
    a = cfg.train.augment
    if not a.enabled:
        return "none"
    parts = [f"rotation +-{a.rotate_deg} deg", f"zoom +-{a.zoom}", f"shift +-{a.shift}",
             f"brightness +-{a.brightness}", f"contrast +-{a.contrast}",
             "horizontal flips" if a.hflip else "no flips"]
    if a.crop_scale < 1:
        parts.append(f"random resized crop (area >= {a.crop_scale})")
    return ", ".join(parts) + " (on the batch, training split only)"


def _scheduler(cfg: ExperimentConfig) -> str:
    t = cfg.train
    if t.scheduler == "plateau":
        return f"reduce on plateau of the validation loss (factor {t.plateau_factor}, patience {t.plateau_patience})"
    return {"cosine": "cosine annealing over the epochs", "none": "none (constant)"}[t.scheduler]


def _optimiser(cfg: ExperimentConfig) -> str:
    t = cfg.train
    name = "AdamW" if t.optimizer == "adamw" else "SGD (momentum 0.9)"
    text = f"{name}, weight decay {t.weight_decay}"
    if t.freeze_epochs:
        text += (f"; two-phase: {t.freeze_epochs} epochs backbone frozen (head lr {t.head_lr}), "
                 f"then all layers at lr {t.finetune_lr}")
    return text


def _hms(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "n/a"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min {s} s" if m else f"{seconds:.1f} s"


def setup_section(cfg: ExperimentConfig, summary: dict[str, Any], model_json: dict[str, Any],
                  env: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Everything needed to repeat the run, as a two-column table."""
    t, m, d = cfg.train, cfg.model, cfg.data
    selection = next((h["selection"] for h in reversed(history) if h.get("selection")), None)
    dev = summary.get("device") or {}
    device = (f"{dev.get('device')} ({dev.get('name')})" + (f", {dev['world_size']} processes (DDP)"
              if dev.get("world_size", 1) > 1 else "")) if dev else "not recorded"
    opts = ", ".join(f"{k}={v}" for k, v in m.options.items()) or "defaults"
    dropout = "the model's default" if m.dropout is None else m.dropout
    data = summary.get("data") or {}
    versions = ", ".join(f"{k} {env[k]}" for k in ("cxrlab", "torch", "timm", "numpy", "python") if k in env)
    labels = ", ".join(model_json.get("labels", d.labels or []))
    rows = [
        ["model", f"{m.name} (options: {opts}; dropout: {dropout}; {m.in_chans} input channel(s))"],
        ["pretrained weights", (summary.get("pretrained") or {}).get("text") or {  # text: loaded N of M tensors
            "none": "none (random initialisation)", "hub": "timm hub (ImageNet)"}.get(m.pretrained,
                                                                                 f"local file {m.pretrained}")],
        ["data", f"source {d.source} at {d.root}"],
        ["task, labels", f"{cfg.task}: {labels}"],
        ["label policy", f"uncertain: {d.uncertain}; blank: {d.blank}" if cfg.task == "multilabel" else "n/a"],
        ["split", data.get("split_method", "not recorded")],
        ["preprocessing", preprocessing_text(model_json)],
        ["augmentation", augmentation_text(cfg)],
        ["optimiser", _optimiser(cfg)],
        ["learning rate", t.lr],
        ["batch size", f"{t.batch_size}" + (f" x {t.accumulate} accumulated" if t.accumulate > 1 else "")],
        ["loss", loss_name(cfg, short=False)],
        ["scheduler", _scheduler(cfg)],
        ["epochs", f"{summary.get('epochs_run')} run of at most {t.epochs}; best epoch {summary.get('best_epoch')}; "
                   f"early stop after {t.early_stop} epochs without a better validation {t.early_stop_on}"],
        ["checkpoint selection", f"best {selection_name(selection, len(model_json.get('labels', [])))}"],
        ["threshold rule", model_json.get("threshold_rule", "n/a") if cfg.task != "multiclass" else "arg-max class"],
        ["seed", cfg.seed],
        ["device", device],
        ["wall time", f"{_hms(summary.get('wall_seconds'))} (data, training, testing)"],
        ["versions", versions or "not recorded"],
        ["commit", env.get("git_commit", "not recorded")],
    ]
    return table(["setting", "value"], [[k, v if isinstance(v, str) else _num(v)] for k, v in rows], cls="kv")


def _num(v: Any) -> str:
    return present.setting(v)  # a table cell: escaped by the table


def leakage_remedy(source: str | None) -> str:
    """What removes a patient overlap for ``source``: the option that re-splits by patient (code in backticks).

    ``data.split_file`` only saves and reuses a split, overlap included, so it is not named.
    """
    if source == "kermany":
        return ("`data.options.resplit=patient` replaces Kermany's train/test folders by a split made by "
                "patient (`data.fractions`, default 70/10/20, iterative stratification); the test set is then "
                "no longer the published one")
    if source in ("csv", "folder"):
        return ("leave the split out (no `split` column, or no `train/val/test` folders) and cxrlab splits "
                "by patient (`data.fractions`)")
    return "a split by patient (a source without an official split, which cxrlab then splits by patient)"


def _code(text: str) -> str:
    """Escaped text with its `backtick` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def leakage_box(data: dict[str, Any], source: str | None = None) -> str:
    """Red when a patient is in two splits (the test result is then optimistic), green when none is.

    Args:
        data: the split block of ``summary.json``.
        source: ``data.source``; names the option that removes the overlap for that source.
    """
    shared = shared_patients(data)
    if shared is None:
        return box("unknown", "Patient overlap between splits: not recorded",
                   "<p>This run was trained before cxrlab stored per-split patients; "
                   "<code>cxrlab data summary --run RUN</code> recomputes it from the data.</p>")
    if not shared:
        pats = ", ".join(f"{s} {data['splits'][s]['patients']}" for s in SPLITS if s in data.get("splits", {}))
        return box("ok", "No patient is in two splits",
                   f"<p>Patients per split: {esc(pats)}. Images of one patient are never both trained and tested on.</p>")
    items = "".join(f"<li>{esc(k.replace('-', ' and '))}: <b>{v['patients']}</b> patient(s), e.g. "
                    f"{esc(', '.join(v['examples']) or 'n/a')}</li>" for k, v in shared.items())
    return box("bad", "Patient leakage: patients are shared between splits",
               f"<ul>{items}</ul><p>Images of these patients were used on both sides, so test metrics are likely "
               "optimistic. This usually comes from the dataset's own split (e.g. Kermany's train/test folders). "
               f"To remove it: {_code(leakage_remedy(source))}.</p>")


def data_section(data: dict[str, Any], labels: list[str], task: str, source: str | None = None) -> str:
    """Images, patients and prevalence per split, and the leakage box (``source``: see :func:`leakage_box`)."""
    if not data.get("splits"):
        return leakage_box(data, source) + "<p class='muted'>Per-split counts were not recorded for this run.</p>"
    sp = data["splits"]
    rows = [[s, sp[s]["images"], sp[s]["patients"]] for s in SPLITS if s in sp]
    what = "share of images in the class" if task == "multiclass" else "positives / images"
    prev = [[lab, *(Raw(f"{sp[s]['prevalence'][lab]:.1%} <span class='muted'>({sp[s]['positive'][lab]})</span>")
                    if lab in sp[s].get("prevalence", {}) else "n/a" for s in SPLITS if s in sp)]
            for lab in labels]
    return (leakage_box(data, source) + table(["split", "images", "patients"], rows)
            + f"<h3>Prevalence per split ({what}; count in brackets)</h3>"
            + table(["label", *(s for s in SPLITS if s in sp)], prev))
