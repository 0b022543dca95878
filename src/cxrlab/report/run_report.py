"""The report of one run: setup, data and leakage, classification with CIs, training, calibration,
localisation, uncertainty and explanations; one self-contained ``report.html``.

:func:`render_report` reads only the run folder (through :class:`RunFolder`),
so it can be re-rendered at any time; figures are drawn by
:func:`write_run_figures` (training) and :func:`write_evaluation_figures`
(training and ``cxrlab evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.config import ExperimentConfig
from cxrlab.evaluate.evaluate import expected_calibration_error
from cxrlab.evaluate.operating import confusion_matrix
from cxrlab.evaluate.records import (
    AuditResult,
    Evaluation,
    Localization,
    RunSummary,
    SubgroupResult,
    Uncertainty,
    coerce,
    finite,
)
from cxrlab.explain.boxes import matching_sentence
from cxrlab.report import plots, plots_eval, present
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


def write_evaluation_figures(run: RunFolder, task: str, labels: list[str], y_true: np.ndarray, probs: np.ndarray,
                             evaluation: Evaluation) -> list[Path]:
    """ROC (with operating points), PR, calibration (with bin counts) and, for binary and multi-class
    runs, the confusion matrix; returns the files written."""
    run.figures.mkdir(parents=True, exist_ok=True)
    fig = run.figure
    aucs = evaluation.aucs
    if task == "multiclass":
        per = evaluation.per_class
        aps = {lab: per[lab].average_precision for lab in labels}
        roc_pts = {lab: (per[lab].fpr, per[lab].recall.value) for lab in labels if finite(per[lab].fpr)}
        pr_pts = {lab: (per[lab].recall.value, per[lab].precision.value) for lab in labels
                  if per[lab].recall.value or per[lab].precision.value}  # a class never predicted has no PR point
        curve = (evaluation.calibration or {}).get("curve")
        out = [plots_eval.confusion(evaluation.confusion_matrix, labels, fig("confusion")),
               plots_eval.roc_curves(y_true, probs, labels, aucs, fig("roc"), roc_pts, one_vs_rest=True,
                                     point_name="arg-max decisions"),
               plots_eval.pr_curves(y_true, probs, labels, aps, fig("pr"), pr_pts, one_vs_rest=True,
                                    point_name="arg-max decisions")]
        if curve:
            out.append(plots_eval.reliability({"top label": curve}, fig("reliability"),
                                              title="Top-label calibration (test split)",
                                              xlabel="confidence (probability of the top class)",
                                              ylabel="accuracy (top class is the true one)"))
        return out
    per = evaluation.per_label
    aps = {lab: per[lab].average_precision for lab in labels}
    roc_pts = {lab: (1 - per[lab].specificity, per[lab].sensitivity) for lab in labels}
    pr_pts = {lab: (per[lab].sensitivity, per[lab].ppv) for lab in labels if finite(per[lab].ppv)}
    curves = {lab: expected_calibration_error(y_true[:, i], probs[:, i])[1] for i, lab in enumerate(labels)}
    eff = evaluation.calibration_effect
    if eff is not None and eff.method != "none":  # before calibration, dashed beside the calibrated curve
        curves = {lab: {**c, "before": eff.before[lab].curve} if lab in eff.before else c for lab, c in curves.items()}
    out = [plots_eval.roc_curves(y_true, probs, labels, aucs, fig("roc"), roc_pts, point_name="at the threshold"),
           plots_eval.pr_curves(y_true, probs, labels, aps, fig("pr"), pr_pts, point_name="at the threshold"),
           plots_eval.reliability(curves, fig("reliability"))]
    op = evaluation.operating_point
    if task == "binary" and len(labels) == 1 and op is not None:
        lab = labels[0]
        out.append(plots_eval.confusion(confusion_matrix(op.confusion), [f"no {lab}", lab], fig("confusion"),
                                        title=f"Confusion matrix at threshold {present.value(op.threshold)} "
                                              "(test split)"))
    return out


def write_run_figures(run: RunFolder, cfg: ExperimentConfig, summary: RunSummary,
                      history: list[dict[str, Any]], y_true: np.ndarray, probs: np.ndarray,
                      labels: list[str], cases: list[Any], images: np.ndarray,
                      evaluation: Evaluation) -> None:
    """The figures of a freshly trained run (the report embeds whatever figures exist)."""
    plots.training_curves(history, run.figure("training_curves"), loss_name(cfg), len(labels))
    write_evaluation_figures(run, cfg.task, labels, y_true, probs, evaluation)
    loc = summary.localization
    if loc:
        plots.localization_bars(loc, run.figure("localization"))
        chosen = pick_cases(cases, cfg.explain.figures)
        if chosen:
            plots.cam_overlays(chosen, images, run.figure("cam_overlays"), method=loc.method, iou=loc.iou)


def localization_origin(loc: Localization, result: str, when: str = "") -> str:
    """Which boxes a localisation result scored, on which split and how many, and which file holds it
    (a paragraph; ``when``: how the result was made, e.g. "scored at the end of training")."""
    if loc.matching:
        said = matching_sentence(loc.matching, loc.box_file or "the dataset's box file")
    else:
        boxes = f"the boxes of {loc.box_file}" if loc.box_file else "the dataset's own boxes"
        said = (f"scored on the test split: {present.value(loc.cases)} cases (a test image and one of its labels "
                f"with a true box), against {boxes}")
    made = f", {when}" if when else ""
    return f"<p>{esc(said[:1].upper() + said[1:])}. Result in <code>{esc(result)}</code>{esc(made)}.</p>"


def localization_section(loc: Localization | dict[str, Any], bars: Path, overlays: Path | None,
                         origin: str = "") -> str:
    """CAM box scores per class against random boxes, with the bar chart and the overlays; ``origin``
    (HTML, :func:`localization_origin`) says which boxes were scored and where the result lives."""
    loc = coerce(Localization, loc)
    rows = [[lab, v.n, v.accuracy, v.random_accuracy, v.precision, v.random_precision]
            for lab, v in loc.per_class.items()]
    rows.append(["mean", loc.cases, loc.mean_accuracy, loc.random_mean_accuracy,
                 loc.mean_precision, loc.random_mean_precision])
    name = plots.method_name(loc.method)
    return (origin + f"<p>{name} on the last conv block, min-max normalised, threshold {loc.threshold:g}, "
            f"connected components &rarr; boxes; a hit is IoU &ge; {loc.iou:g} with a true box. "
            "The random baseline places the same boxes uniformly at random.</p>"
            + table(["class", "cases", "accuracy", "random acc.", "precision", "random prec."], rows)
            + figure(bars, f"{name} localisation accuracy")
            + (figure(overlays, f"{name} overlays") if overlays else ""))


def uncertainty_section(u: Uncertainty, fig: Path) -> str:
    """MC-dropout summary per label with the std histogram."""
    rows = [[lab, present.percent(d.uncertain_fraction), d.mean_std, d.auc_all, d.auc_confident, d.auc_uncertain]
            for lab, d in u.per_label.items()]
    return (f"<p>Monte-Carlo dropout, {present.value(u.passes)} passes; a prediction is uncertain when its std "
            f"exceeds {u.threshold:g}.</p>"
            + table(["label", "uncertain", "mean std", "AUC all", "AUC confident", "AUC uncertain"], rows)
            + figure(fig, "MC dropout std histogram"))


#: The cell of a label a source does not have (its images are NaN there: never a number, never negatives).
NOT_IN_SOURCE = "not in this source"


def sources_section(evaluation: Evaluation, predictions: Any, labels: list[str]) -> str:
    """Test AUC with its 95% CI per source and label, each source's macro AUC and the overall row,
    for a run over several sources (``data.sources``); "" otherwise.

    The CIs are the evaluation's (``evaluation.json["per_source"]``: each source's own patients
    resampled); an evaluation from before they were recorded gets the point AUCs of the
    predictions and a line saying how to add the CIs.
    """
    if evaluation.per_source:
        return _sources_with_ci(evaluation, labels)
    if predictions is None or "source" not in predictions.columns or predictions["source"].nunique() < 2:
        return ""
    from cxrlab.evaluate.metrics import roc_auc
    from cxrlab.tables import prob_column

    def row(name: str, frame: Any) -> list[Any]:
        cells: list[Any] = [name, len(frame)]
        for lab in labels:
            y = frame[lab].to_numpy(dtype=float)
            cells.append(NOT_IN_SOURCE if np.isnan(y).all() else
                         f"{present.value(roc_auc(y, frame[prob_column(lab)].to_numpy(dtype=float)))} "
                         f"({int(np.nansum(y == 1))}+)")
        return cells

    rows = [row(str(src), f) for src, f in predictions.groupby("source", sort=False)]
    rows.append(row("all sources", predictions))
    return ("<p>Test AUC per source (positives in brackets); a label a source lacks (not in this source: "
            "its images are masked, no loss in training) is not counted. Point estimates only: this "
            "evaluation.json predates the per-source CIs; <code>cxrlab evaluate RUN</code> adds them.</p>"
            + table(["source", "images", *labels], rows))


def _sources_with_ci(evaluation: Evaluation, labels: list[str]) -> str:
    """The per-source table of :func:`sources_section` from the recorded per-source CIs."""
    rows: list[list[Any]] = []
    for name, r in evaluation.per_source.items():
        cells: list[Any] = [name, r.n if r.patients is None else f"{r.n} ({r.patients})"]
        for lab in labels:
            if lab in r.per_label:
                cells.append(f"{present.ci(r.per_label[lab])} ({present.value(r.positives.get(lab))}+)")
            else:
                cells.append(NOT_IN_SOURCE)
        rows.append([*cells, present.ci(r.macro_auc)])
    overall = [f"{present.ci(evaluation.per_label[lab].auc)} ({present.value(evaluation.per_label[lab].positives)}+)"
               if lab in evaluation.per_label else "n/a" for lab in labels]
    rows.append(["all sources", present.value(evaluation.n), *overall, present.ci(evaluation.macro_auc)])
    bs = sorted({n for n in [evaluation.n_boot, *(r.n_boot for r in evaluation.per_source.values())] if n})
    b = "/".join(map(str, bs)) or "n/a"
    return (f"<p>Each cell: test AUC [95% CI, B={b}] (positives). Each source's CI resamples its own "
            "patients; its macro AUC averages the labels it can score. A label a source lacks (its images "
            f"are masked, no loss in training) reads &ldquo;{NOT_IN_SOURCE}&rdquo; "
            "and is never counted; the last row scores every image that has the label.</p>"
            + table(["source", "test images (patients)", *labels, f"macro AUC [95% CI, B={b}]"], rows))


#: The page's abbreviations and terms of art, each spelled out once in the "Terms" note (why: a reader
#: new to the field met ECE, AP, OOD, mIoU, Otsu and "pointing hit" with nothing on the page to say what
#: they are).  (pattern in the page's text, term, meaning).
TERMS = [
    (r"\bAUC\b", "AUC", "area under the ROC curve: the chance that a random positive image scores above a "
                        "random negative one (0.5: chance, 1: perfect ranking)"),
    (r"\bAP\b", "AP", "average precision: the area under the precision-recall curve (a random model's AP is "
                      "the prevalence)"),
    (r"\bECE\b", "ECE", "expected calibration error: the mean gap between predicted probability and observed "
                        "rate over probability bins, weighted by the images in each bin (0: calibrated)"),
    (r"\bBrier\b", "Brier", "Brier score: the mean squared error of the probabilities (lower is better)"),
    (r"\bTPR\b|\bFPR\b|\bPPV\b|\bNPV\b", "TPR, FPR, PPV, NPV",
     "true-positive rate (sensitivity), false-positive rate (1 - specificity), positive and negative "
     "predictive value, at the label's threshold"),
    (r"\bOOD\b", "OOD", "out of distribution: an image unlike the training images (a Mahalanobis distance of "
                        "its features above a threshold set on validation)"),
    (r"\bIoU\b", "IoU", "intersection over union of a predicted and a true box (or region)"),
    (r"\bmIoU\b", "mIoU", "mean IoU of the saliency map's region (the map at or above a level chosen on "
                          "validation) with the true box or mask"),
    (r"\b[Oo]tsu\b", "Otsu", "Otsu's threshold: the level that best splits the pooled validation maps' values "
                            "into two classes (the audit's default level)"),
    (r"pointing (?:hit|game)", "pointing hit", "the saliency map's maximum lies inside the true box or mask "
                                              "(the pointing game)"),
]


def terms_section(sections: list[tuple[str, str]]) -> str:
    """A short "Terms" note: the :data:`TERMS` the page's text uses, each in one line (HTML; "" for none)."""
    import re

    text = re.sub(r"<[^>]+>", " ", " ".join(f"{h} {b}" for h, b in sections))
    text = re.sub(r"data:[^\s'\"]+", " ", text)
    used = [(term, meaning) for pattern, term, meaning in TERMS if re.search(pattern, text)]
    if re.search(r"= (?:AP|PA)\b|/ (?:AP|PA)\b|\b(?:AP|PA) /", text):  # a view in the subgroup tables, not a metric
        used.append(("AP, PA (views)", "anteroposterior and posteroanterior projections of the chest"))
    if not used:
        return ""
    return "<ul class='terms'>" + "".join(f"<li><b>{esc(t)}</b>: {esc(m)}.</li>" for t, m in used) + "</ul>"


def _subtitle(summary: RunSummary | None, evaluation: Evaluation | None) -> str:
    """The run's one number: the evaluation's headline (with its CI), else the summary's macro AUC."""
    if evaluation is not None:
        name, est = evaluation.headline
    elif summary is not None:
        name, est = "macro AUC", summary.macro_auc
    else:
        return ""
    return f"{name} {present.ci(est)} on the test split" if est.defined else ""


def _overlays(path: Path) -> Path | None:
    return path if path.is_file() else None


def render_report(run: RunFolder) -> Path:
    """(Re)write ``report.html`` from what the run folder holds: summary, evaluation, figures,
    and the outputs of ``localize``, ``uncertainty`` and ``explain`` when they were run."""
    cfg = run.read_config()
    raw_summary = run.read_json(run.summary_file) or {}
    summary = RunSummary.from_dict(raw_summary) if raw_summary else None
    evaluation = Evaluation.read(run.evaluation_file, cfg.task)
    model_json = run.read_model_json()
    history = run.read_metrics()
    labels = model_json.get("labels", cfg.data.labels or [])
    sections = [("Setup", setup_section(cfg, raw_summary, model_json, run.read_environment(), history)),
                ("Data and splits", data_section(raw_summary.get("data") or {}, labels, cfg.task, cfg.data.source))]
    if evaluation:
        sections.append(("Classification (test split)", classification_section(evaluation, cfg.task, run)))
        per_source = sources_section(evaluation, run.read_predictions() if run.has_predictions() else None,
                                     labels)
        if per_source:
            sections.append(("Test results per source", per_source))
    sections.append(("Training", figure(run.figure("training_curves"), "training curves",
                                        "The vertical line marks the epoch whose weights are checkpoints/best.")))
    loc = summary.localization if summary else None
    if loc:
        sections.append(("Localisation", localization_section(
            loc, run.figure("localization"), _overlays(run.figure("cam_overlays")),
            localization_origin(loc, "summary.json", "scored at the end of training"
                                + (f" (the first {cfg.explain.max_images}: explain.max_images)"
                                   if loc.cases >= cfg.explain.max_images else "")))))
    for key, path in run.localization_results().items():
        result = Localization.read(path, key)
        box_file = result.box_file
        sections.append((f"Localisation ({plots.method_name(result.method)}, cxrlab localize)"
                         + (f": boxes of {Path(box_file).name}" if box_file else ""),
                         localization_section(result, run.figure("localization", result.key),
                                              _overlays(run.figure("cam_overlays", result.key)),
                                              localization_origin(result, path.name))))
    for method, path in run.audit_results().items():
        from cxrlab.report.audit_report import audit_section

        audit = AuditResult.read(path)
        if audit is not None:
            sections.append((f"Where the model looks ({plots.method_name(audit.method)}, cxrlab audit)",
                             audit_section(audit, _overlays(run.figure("audit_suspects", method)))))
    groups = SubgroupResult.read(run.subgroups_file)
    if groups is not None:
        from cxrlab.report.subgroups_report import figure_key, subgroups_section

        shown = {lab: run.figure("subgroups", figure_key(lab)) for lab in groups.labels
                 if run.figure("subgroups", figure_key(lab)).is_file()}
        sections.append(("Subgroups (cxrlab subgroups)", subgroups_section(groups, shown)))
    unc = Uncertainty.read(run.uncertainty_file)
    if unc:
        sections.append(("Uncertainty (MC dropout)", uncertainty_section(unc, run.figure("mc_dropout_std"))))
    shots = sorted(run.explain_dir.glob("*.png"))
    if shots:
        sections.append(("Explanations (cxrlab explain)",
                         "<p>Each panel: the label, its probability, whether the model predicts it at the "
                         "run's threshold, and the truth where the image is in the run's test or validation "
                         "split.</p>" + "".join(figure(p, p.stem) for p in shots[:24])))
    terms = terms_section(sections)
    if terms:
        sections.append(("Terms", terms))
    return write_report(run.report_file, f"cxrlab run: {cfg.name}", sections,
                        subtitle=_subtitle(summary, evaluation))
