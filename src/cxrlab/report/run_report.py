"""The report of one run: setup, classification with CIs, training, calibration, localisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.config import ExperimentConfig
from cxrlab.evaluate.evaluate import expected_calibration_error
from cxrlab.report import plots
from cxrlab.report.html import figure, table, write_report
from cxrlab.run import RunFolder


def pick_cases(cases: list[Any], n: int) -> list[Any]:
    """A spread of cases over the classes: round-robin by label."""
    by_label: dict[str, list[Any]] = {}
    for c in cases:
        by_label.setdefault(c.label, []).append(c)
    out: list[Any] = []
    while len(out) < n and any(by_label.values()):
        for lab in list(by_label):
            if by_label[lab] and len(out) < n:
                out.append(by_label[lab].pop(0))
    return out


def _ci(d: dict[str, Any], key: str = "auc") -> str:
    v, lo, hi = d.get(key, d.get("value")), d.get("ci_low"), d.get("ci_high")
    if v is None or v != v:
        return "n/a"
    return f"{v:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None and lo == lo else f"{v:.3f}"


def classification_section(ev: dict[str, Any], task: str) -> str:
    if task == "multiclass":
        rows = [[lab, d["support"], d["precision"], d["recall"], d["f1"], d["auc"]]
                for lab, d in ev["per_class"].items()]
        return (f"<p>Accuracy {_ci(ev['accuracy'], 'value')} (95% bootstrap CI), macro F1 "
                f"{ev['macro_f1']:.3f}, macro one-vs-rest AUC {ev['macro_auc']['auc']:.3f}; n = {ev['n']}.</p>"
                + table(["class", "n", "precision", "recall", "F1", "AUC"], rows)
                + figure("figures/confusion.png", "confusion matrix") + figure("figures/roc.png", "ROC curves"))
    rows = [[lab, d["positives"], _ci(d), d["average_precision"], f"{d['threshold']:.3f} ({d['threshold_rule']})",
             d["sensitivity"], d["specificity"], d["ece"]] for lab, d in ev["per_label"].items()]
    rows.append(["macro", "", _ci(ev["macro_auc"]), "", "", "", "", ""])
    rows.append(["micro", "", _ci(ev["micro_auc"]), "", "", "", "", ""])
    return (f"<p>AUC with 95% bootstrap CIs ({ev['n_boot']} resamples of {ev['resampling']}); thresholds "
            "chosen on validation (Youden's J) and applied to test; ECE with 10 bins.</p>"
            + table(["label", "positives", "AUC (95% CI)", "AP", "threshold", "sensitivity", "specificity",
                     "ECE"], rows)
            + figure("figures/roc.png", "ROC curves") + figure("figures/reliability.png", "calibration"))


def write_run_figures(run: RunFolder, cfg: ExperimentConfig, summary: dict[str, Any],
                      history: list[dict[str, Any]], y_true: np.ndarray, probs: np.ndarray,
                      labels: list[str], cases: list[Any], images: np.ndarray,
                      evaluation: dict[str, Any]) -> None:
    """The figures of a freshly trained run (the report links whatever figures exist)."""
    f = run.figures
    plots.training_curves(history, f / "training_curves.png")
    plots.roc_curves(y_true, probs, labels, summary["per_label_auc"], f / "roc.png")
    if cfg.task == "multiclass":
        plots.confusion(evaluation["confusion_matrix"], labels, f / "confusion.png")
    else:
        curves = {lab: expected_calibration_error(y_true[:, i], probs[:, i])[1] for i, lab in enumerate(labels)}
        plots.reliability(curves, f / "reliability.png")
    loc = summary.get("localization")
    if loc:
        plots.localization_bars(loc, f / "localization.png")
        chosen = pick_cases(cases, cfg.explain.figures)
        if chosen:
            plots.cam_overlays(chosen, images, f / "cam_overlays.png")


def localization_section(loc: dict[str, Any], bars: str, overlays: str | None) -> str:
    rows = [[lab, v["n"], v["accuracy"], v["random_accuracy"], v["precision"], v["random_precision"]]
            for lab, v in loc["per_class"].items()]
    rows.append(["mean", loc["cases"], loc["mean_accuracy"], loc["random_mean_accuracy"],
                 loc["mean_precision"], loc["random_mean_precision"]])
    return (f"<p>{loc['method']} on the last conv block, min-max normalised, threshold {loc['threshold']}, "
            f"connected components &rarr; boxes; a hit is IoU &ge; {loc['iou']} with a true box. "
            "The random baseline places the same boxes uniformly at random.</p>"
            + table(["class", "cases", "accuracy", "random acc.", "precision", "random prec."], rows)
            + figure(bars, "localization accuracy") + (figure(overlays, "CAM overlays") if overlays else ""))


def uncertainty_section(u: dict[str, Any]) -> str:
    rows = [[lab, f"{d['uncertain_fraction']:.1%}", d["mean_std"], d["auc_all"], d["auc_confident"],
             d["auc_uncertain"]] for lab, d in u["per_label"].items()]
    return (f"<p>Monte-Carlo dropout, {u['passes']} passes; a prediction is uncertain when its std exceeds "
            f"{u['threshold']}.</p>"
            + table(["label", "uncertain", "mean std", "AUC all", "AUC confident", "AUC uncertain"], rows)
            + figure("figures/mc_dropout_std.png", "MC dropout std histogram"))


def render_report(run: RunFolder) -> Path:
    """(Re)write ``report.html`` from what the run folder holds: summary, evaluation, figures,
    and the outputs of ``localize``, ``uncertainty`` and ``explain`` when they were run."""
    cfg = run.read_config()
    summary = run.read_json(run.summary_file) or {}
    evaluation = run.read_json(run.evaluation_file)
    fig = run.figures
    sections = [
        ("Setup", table(["setting", "value"], [
            ["model", cfg.model.name], ["data", f"{cfg.data.source} at {cfg.data.root}"],
            ["task", cfg.task], ["image size", cfg.data.image_size],
            ["images train/val/test", "/".join(str(v) for v in summary.get("n_images", {}).values())],
            ["epochs run (best)", f"{summary.get('epochs_run')} ({summary.get('best_epoch')})"],
            ["seed", cfg.seed]])),
    ]
    if evaluation:
        sections.append(("Classification (test split)", classification_section(evaluation, cfg.task)))
    sections.append(("Training", figure("figures/training_curves.png", "training curves")))
    loc = summary.get("localization")
    if loc:
        overlays = "figures/cam_overlays.png" if (fig / "cam_overlays.png").is_file() else None
        sections.append(("Localisation", localization_section(loc, "figures/localization.png", overlays)))
    for path in run.localization_files():
        method = path.stem.split("_", 1)[1]
        over = f"figures/cam_overlays_{method}.png"
        sections.append((f"Localisation ({method}, cxrlab localize)",
                         localization_section(json.loads(path.read_text()), f"figures/localization_{method}.png",
                                              over if (run.path / over).is_file() else None)))
    unc = run.read_json(run.uncertainty_file)
    if unc:
        sections.append(("Uncertainty (MC dropout)", uncertainty_section(unc)))
    shots = sorted(run.explain_dir.glob("*.png"))
    if shots:
        sections.append(("Explanations (cxrlab explain)",
                         "".join(figure(f"explain/{p.name}", p.stem) for p in shots[:24])))
    macro_auc = summary.get("macro_auc")
    sub = f"macro AUC {macro_auc:.3f} on the test split" if isinstance(macro_auc, float) else ""
    return write_report(run.report_file, f"cxrlab run: {cfg.name}", sections, subtitle=sub)
