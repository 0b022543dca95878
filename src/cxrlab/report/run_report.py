"""The report of one run: setup, data and leakage, classification with CIs, training, calibration,
localisation, uncertainty and explanations; one self-contained ``report.html``.

:func:`render_report` reads only the run folder (through :class:`RunFolder`),
so it can be re-rendered at any time; figures are drawn by
:func:`write_run_figures` (training) and :func:`write_evaluation_figures`
(training and ``cxrlab evaluate``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.config import ExperimentConfig
from cxrlab.evaluate.evaluate import expected_calibration_error
from cxrlab.evaluate.operating import confusion_matrix
from cxrlab.explain.localize import matching_sentence
from cxrlab.report import plots, plots_eval
from cxrlab.report.classification import classification_section
from cxrlab.report.html import esc, figure, table, write_report
from cxrlab.report.setup import data_section, loss_name, setup_section
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


def _num(v: Any) -> float:
    """A number of evaluation.json (NaN is stored as null)."""
    return float("nan") if v is None else float(v)


def write_evaluation_figures(run: RunFolder, task: str, labels: list[str], y_true: np.ndarray, probs: np.ndarray,
                             evaluation: dict[str, Any]) -> list[Path]:
    """ROC (with operating points), PR, calibration (with bin counts) and, for binary and multi-class
    runs, the confusion matrix; returns the files written."""
    f = run.figures
    f.mkdir(parents=True, exist_ok=True)
    if task == "multiclass":
        per = evaluation["per_class"]
        aucs = {lab: _num(per[lab]["auc"]) for lab in labels}
        aps = {lab: _num(per[lab].get("average_precision")) for lab in labels}
        roc_pts = {lab: (_num(per[lab]["fpr"]), _num(per[lab]["recall"])) for lab in labels if "fpr" in per[lab]}
        pr_pts = {lab: (_num(per[lab]["recall"]), _num(per[lab]["precision"])) for lab in labels
                  if per[lab]["recall"] or per[lab]["precision"]}  # a class never predicted has no PR point
        curve = (evaluation.get("calibration") or {}).get("curve")
        out = [plots_eval.confusion(evaluation["confusion_matrix"], labels, f / "confusion.png"),
               plots_eval.roc_curves(y_true, probs, labels, aucs, f / "roc.png", roc_pts, one_vs_rest=True,
                                     point_name="arg-max decisions"),
               plots_eval.pr_curves(y_true, probs, labels, aps, f / "pr.png", pr_pts, one_vs_rest=True,
                                    point_name="arg-max decisions")]
        if curve:
            out.append(plots_eval.reliability({"top label": curve}, f / "reliability.png",
                                              title="Top-label calibration (test split)",
                                              xlabel="confidence (probability of the top class)",
                                              ylabel="accuracy (top class is the true one)"))
        return out
    per = evaluation["per_label"]
    aucs = {lab: _num(per[lab]["auc"]) for lab in labels}
    aps = {lab: _num(per[lab].get("average_precision")) for lab in labels}
    roc_pts = {lab: (1 - _num(per[lab]["specificity"]), _num(per[lab]["sensitivity"])) for lab in labels}
    pr_pts = {lab: (_num(per[lab]["sensitivity"]), _num(per[lab]["ppv"])) for lab in labels if "ppv" in per[lab]}
    curves = {lab: expected_calibration_error(y_true[:, i], probs[:, i])[1] for i, lab in enumerate(labels)}
    out = [plots_eval.roc_curves(y_true, probs, labels, aucs, f / "roc.png", roc_pts,
                                 point_name="at the threshold"),
           plots_eval.pr_curves(y_true, probs, labels, aps, f / "pr.png", pr_pts, point_name="at the threshold"),
           plots_eval.reliability(curves, f / "reliability.png")]
    if task == "binary" and len(labels) == 1 and "operating_point" in per[labels[0]]:
        op, lab = per[labels[0]]["operating_point"], labels[0]
        out.append(plots_eval.confusion(confusion_matrix(op["confusion"]), [f"no {lab}", lab],
                                        f / "confusion.png",
                                        title=f"Confusion matrix at threshold {op['threshold']:.3f} (test split)"))
    return out


def write_run_figures(run: RunFolder, cfg: ExperimentConfig, summary: dict[str, Any],
                      history: list[dict[str, Any]], y_true: np.ndarray, probs: np.ndarray,
                      labels: list[str], cases: list[Any], images: np.ndarray,
                      evaluation: dict[str, Any]) -> None:
    """The figures of a freshly trained run (the report embeds whatever figures exist)."""
    f = run.figures
    plots.training_curves(history, f / "training_curves.png", loss_name(cfg), len(labels))
    write_evaluation_figures(run, cfg.task, labels, y_true, probs, evaluation)
    loc = summary.get("localization")
    if loc:
        plots.localization_bars(loc, f / "localization.png")
        chosen = pick_cases(cases, cfg.explain.figures)
        if chosen:
            plots.cam_overlays(chosen, images, f / "cam_overlays.png", method=loc.get("method", "gradcam"),
                               iou=loc.get("iou", 0.1))


def localization_origin(loc: dict[str, Any], result: str) -> str:
    """Which boxes a localisation result scored and which file holds it (a paragraph)."""
    m = loc.get("matching")
    source = loc.get("box_file") or "the dataset's boxes"
    said = matching_sentence(m, source) if m else f"boxes from {source}"
    return f"<p>Result <code>{esc(result)}</code>; {esc(said)}.</p>"


def localization_section(loc: dict[str, Any], bars: Path, overlays: Path | None, origin: str = "") -> str:
    """CAM box scores per class against random boxes, with the bar chart and the overlays; ``origin``
    (HTML, :func:`localization_origin`) says which boxes were scored and where the result lives."""
    rows = [[lab, v["n"], v["accuracy"], v["random_accuracy"], v["precision"], v["random_precision"]]
            for lab, v in loc["per_class"].items()]
    rows.append(["mean", loc["cases"], loc["mean_accuracy"], loc["random_mean_accuracy"],
                 loc["mean_precision"], loc["random_mean_precision"]])
    name = plots.method_name(loc.get("method", "gradcam"))
    return (origin + f"<p>{name} on the last conv block, min-max normalised, threshold {loc['threshold']}, "
            f"connected components &rarr; boxes; a hit is IoU &ge; {loc['iou']} with a true box. "
            "The random baseline places the same boxes uniformly at random.</p>"
            + table(["class", "cases", "accuracy", "random acc.", "precision", "random prec."], rows)
            + figure(bars, f"{name} localisation accuracy")
            + (figure(overlays, f"{name} overlays") if overlays else ""))


def uncertainty_section(u: dict[str, Any], fig: Path) -> str:
    """MC-dropout summary per label with the std histogram."""
    rows = [[lab, f"{d['uncertain_fraction']:.1%}", d["mean_std"], d["auc_all"], d["auc_confident"],
             d["auc_uncertain"]] for lab, d in u["per_label"].items()]
    return (f"<p>Monte-Carlo dropout, {u['passes']} passes; a prediction is uncertain when its std exceeds "
            f"{u['threshold']}.</p>"
            + table(["label", "uncertain", "mean std", "AUC all", "AUC confident", "AUC uncertain"], rows)
            + figure(fig, "MC dropout std histogram"))


def _subtitle(task: str, summary: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    if task == "multiclass" and evaluation:
        return f"accuracy {evaluation['accuracy']['value']:.3f} on the test split"
    auc = summary.get("macro_auc")
    if not isinstance(auc, float) or auc != auc:
        return ""
    return f"{'AUC' if task == 'binary' else 'macro AUC'} {auc:.3f} on the test split"


def render_report(run: RunFolder) -> Path:
    """(Re)write ``report.html`` from what the run folder holds: summary, evaluation, figures,
    and the outputs of ``localize``, ``uncertainty`` and ``explain`` when they were run."""
    cfg = run.read_config()
    summary = run.read_json(run.summary_file) or {}
    evaluation = run.read_json(run.evaluation_file)
    model_json = run.read_model_json()
    history = run.read_metrics()
    labels = model_json.get("labels", cfg.data.labels or [])
    fig = run.figures
    sections = [("Setup", setup_section(cfg, summary, model_json, run.read_environment(), history)),
                ("Data and splits", data_section(summary.get("data") or {}, labels, cfg.task, cfg.data.source))]
    if evaluation:
        sections.append(("Classification (test split)", classification_section(evaluation, cfg.task, fig)))
    sections.append(("Training", figure(fig / "training_curves.png", "training curves",
                                        "The vertical line marks the epoch whose weights are checkpoints/best.")))
    loc = summary.get("localization")
    if loc:
        over = fig / "cam_overlays.png"
        sections.append(("Localisation", localization_section(
            loc, fig / "localization.png", over if over.is_file() else None,
            localization_origin(loc, "summary.json (scored at the end of training)"))))
    for path in run.localization_files():
        key = path.stem.split("_", 1)[1]  # the method; for a --boxes result, then the box file's stem
        result = json.loads(path.read_text())
        over = fig / f"cam_overlays_{key}.png"
        box_file = result.get("box_file")
        sections.append((f"Localisation ({plots.method_name(result.get('method', key))}, cxrlab localize)"
                         + (f": boxes of {Path(box_file).name}" if box_file else ""),
                         localization_section(result, fig / f"localization_{key}.png",
                                              over if over.is_file() else None, localization_origin(result, path.name))))
    unc = run.read_json(run.uncertainty_file)
    if unc:
        sections.append(("Uncertainty (MC dropout)", uncertainty_section(unc, fig / "mc_dropout_std.png")))
    shots = sorted(run.explain_dir.glob("*.png"))
    if shots:
        sections.append(("Explanations (cxrlab explain)",
                         "<p>Each panel: the label, its probability, whether the model predicts it at the "
                         "run's threshold, and the truth where the image is in the run's test or validation "
                         "split.</p>" + "".join(figure(p, p.stem) for p in shots[:24])))
    return write_report(run.report_file, f"cxrlab run: {cfg.name}", sections,
                        subtitle=_subtitle(cfg.task, summary, evaluation))
