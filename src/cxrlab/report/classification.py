"""The report's classification section, one shape per task, from the :class:`Evaluation` record and the figures.

- multi-label: AUC with CIs per label (macro and micro rows when there are several labels),
  threshold, sensitivity/specificity, AP, ECE; ROC with operating points, PR, calibration.
- binary: the same for the one label (no macro/micro rows), the rates at the validation-chosen
  threshold with CIs, and the confusion matrix (counts and shares).
- multi-class: accuracy, per-class precision/recall/AUC with CIs, confusion matrix,
  one-vs-rest ROC and PR, top-label calibration.

Numbers are written by :mod:`cxrlab.report.present`; figure files are named by the run folder.
"""

from __future__ import annotations

from cxrlab.evaluate.records import Evaluation, OperatingPoint
from cxrlab.report import present
from cxrlab.report.html import figures, table
from cxrlab.run import RunFolder

RATE_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity (recall, TPR)",
              "specificity": "specificity (TNR)", "ppv": "PPV (precision)", "npv": "NPV"}


def _resampling(ev: Evaluation) -> str:
    return f"95% bootstrap CIs ({present.value(ev.n_boot)} resamples of {ev.resampling})"


def _figures(run: RunFolder, names: list[tuple[str, str, str]]) -> str:
    return figures([(run.figure(f), alt, cap) for f, alt, cap in names])


def rule_text(rule: str) -> str:
    """``youden(val)`` -> ``Youden's J on validation``; ``sensitivity:0.9(val)`` -> ``sensitivity >= 0.9 on validation``."""
    known = {"youden(val)": "Youden's J on validation", "fixed": "fixed 0.5: undefined on validation",
             "max_f1(val)": "max F1 on validation"}
    if rule in known:
        return known[rule]
    name, _, target = rule.removesuffix("(val)").partition(":")
    return f"{name} >= {target} on validation" if target and rule.endswith("(val)") else rule


def calibration_table(ev: Evaluation) -> str:
    """Brier, calibration slope and intercept, ECE (equal-width, equal-mass) before and after the fitted calibration."""
    eff = ev.calibration_effect
    if eff is None:
        return ""
    rows = []
    for lab, b in eff.before.items():
        a = eff.after.get(lab, b)
        rows.append([lab, b.n, *(f"{present.value(getattr(b, k))} → {present.value(getattr(a, k))}"
                                 for k in ("brier", "slope", "intercept", "ece_width", "ece_mass"))])
    what = (f"fitted on validation: {eff.summary}" if eff.method != "none"
            else "none fitted (evaluate.calibration: none, or a run from before cxrlab fitted one)")
    return (f"<h3>Calibration on test, before &rarr; after ({what})</h3><p>Slope 1 and intercept 0 are "
            f"perfect (a slope below 1: overconfident); ECE over {eff.bins} equal-width and {eff.bins} "
            "equal-mass bins.</p>"
            + table(["label", "n", "Brier", "slope", "intercept", "ECE (width)", "ECE (mass)"], rows))


def _rules_table(ev: Evaluation) -> str:
    """Each label's rates at its threshold with CIs (and PPV/NPV at a stated prevalence)."""
    ops = {lab: d.operating_point for lab, d in ev.per_label.items() if d.operating_point is not None}
    if not ops:
        return ""
    prev = any(op.prevalence is not None for op in ops.values())
    head = ["label", "rule (value on validation)", "threshold", "sensitivity", "specificity", "PPV", "NPV"]
    rows = []
    for lab, op in ops.items():
        row = [lab, f"{op.rule or 'n/a'} ({present.value(op.validation)})", op.threshold,
               *(present.ci(op.rates[k]) if k in op.rates else "n/a" for k in ("sensitivity", "specificity", "ppv",
                                                                              "npv"))]
        if prev:
            row += [present.value(op.prevalence)] + [present.ci(op.adjusted[k]) if k in op.adjusted else ""
                                                     for k in ("ppv_at_prevalence", "npv_at_prevalence")]
        rows.append(row)
    if prev:
        head += ["deployment prevalence", "PPV there", "NPV there"]
    return ("<h3>Decisions at each label's threshold (chosen on validation, applied to test)</h3>"
            + table(head, rows))


def multilabel_section(ev: Evaluation, run: RunFolder) -> str:
    """AUC per label (macro and micro rows only with several labels), thresholds, calibration, figures."""
    # an evaluation.json from an older cxrlab may lack AP or ECE: NaN in the record, "n/a" in the table
    rows = [[lab, d.positives, present.ci(d.auc), d.average_precision,
             f"{present.value(d.threshold)} ({rule_text(d.threshold_rule)})", d.sensitivity, d.specificity, d.ece]
            for lab, d in ev.per_label.items()]
    if ev.single is None:  # one label: macro and micro would repeat it
        rows.append(["macro", "", present.ci(ev.macro_auc), "", "", "", "", ""])
        rows.append(["micro", "", present.ci(ev.micro_auc), "", "", "", "", ""])
    return (f"<p>n = {present.value(ev.n)} test images. AUC with {_resampling(ev)}; thresholds chosen on validation "
            "(Youden's J) and applied to test; ECE with 10 equal-width bins.</p>"
            + table(["label", "positives", "AUC (95% CI)", "AP", "threshold", "sensitivity", "specificity", "ECE"],
                    rows)
            + _rules_table(ev) + calibration_table(ev)
            + _figures(run, [("roc", "ROC curves", "Red dot: the decisions at the validation-chosen threshold."),
                             ("pr", "precision-recall curves", "Dotted: the prevalence (a random model's AP)."),
                             ("reliability", "calibration",
                              "One panel per label: observed rate against mean probability per bin; below, "
                              "the test images per bin (one scale in every panel).")]))


def _confusion_table(op: OperatingPoint, label: str) -> str:
    c, n = op.confusion, op.normalised
    cell = lambda k, share: present.count_share(c[k], share)  # noqa: E731
    return table(["true \\ predicted", f"no {label}", label],
                 [[f"no {label}", cell("tn", n[0][0]), cell("fp", n[0][1])],
                  [label, cell("fn", n[1][0]), cell("tp", n[1][1])]])


def binary_section(ev: Evaluation, run: RunFolder) -> str:
    """The one label's AUC, the rates at the validation-chosen threshold with CIs, the confusion matrix."""
    lab, d = ev.single
    op = d.operating_point
    if op is None:  # evaluated by an older cxrlab: no operating point stored
        return multilabel_section(ev, run)
    head = (f"<p>n = {present.value(ev.n)} test images, {present.value(d.positives)} with {lab}. AUC with "
            f"{_resampling(ev)}; ECE with 10 equal-width bins.</p>"
            + table(["label", "positives", "AUC (95% CI)", "AP", "ECE"],
                    [[lab, d.positives, present.ci(d.auc), d.average_precision, d.ece]]))
    rows = [[RATE_NAMES[k], present.ci(op.rates[k])] for k in RATE_NAMES if k in op.rates]
    if op.prevalence is not None:  # the user's deployment prevalence (evaluate.prevalence)
        rows += [[f"{name} at prevalence {present.value(op.prevalence)}", present.ci(op.adjusted[k])]
                 for k, name in (("ppv_at_prevalence", "PPV"), ("npv_at_prevalence", "NPV")) if k in op.adjusted]
    rates = table(["at the threshold", "value (95% CI)"], rows)
    return (head + f"<h3>Decisions at the threshold {present.value(op.threshold)} ({rule_text(d.threshold_rule)}; "
            "chosen on validation, never on test)</h3>" + rates
            + "<h3>Confusion matrix at that threshold (count, share of the true class)</h3>"
            + _confusion_table(op, lab) + calibration_table(ev)
            + _figures(run, [("confusion", "confusion matrix", ""),
                             ("roc", "ROC curve", "Red dot: the decisions at the validation-chosen threshold."),
                             ("pr", "precision-recall curve", "Dotted: the prevalence (a random model's AP)."),
                             ("reliability", "calibration", "Numbers and bars: test images per bin.")]))


def multiclass_section(ev: Evaluation, run: RunFolder) -> str:
    """Accuracy, per-class precision/recall/AUC with CIs, confusion matrix, one-vs-rest curves, calibration."""
    cal = ev.calibration or {}
    rows = [[lab, d.support, "n/a (never predicted)" if d.never_predicted else present.ci(d.precision),
             present.ci(d.recall), d.f1, present.ci(d.auc)] for lab, d in ev.per_class.items()]
    ece = f", top-label ECE {present.value(cal['ece'])}" if "ece" in cal else ""
    return (f"<p>n = {present.value(ev.n)} test images. Accuracy {present.ci(ev.accuracy)}, "
            f"macro F1 {present.value(ev.macro_f1)}, macro one-vs-rest AUC {present.ci(ev.macro_auc)}{ece}; "
            f"{_resampling(ev) if ev.n_boot else '95% bootstrap CIs'}. Decisions: the most probable class.</p>"
            + table(["class", "n", "precision (95% CI)", "recall (95% CI)", "F1", "AUC one-vs-rest (95% CI)"], rows)
            + calibration_table(ev)
            + _figures(run, [("confusion", "confusion matrix", ""),
                             ("roc", "ROC curves, one-vs-rest",
                              "Each class against all others; red dot: where the arg-max decisions lie."),
                             ("pr", "precision-recall curves, one-vs-rest", ""),
                             ("reliability", "top-label calibration",
                              "Is the most probable class right as often as its probability says? "
                              "Below: test images per bin.")]))


def classification_section(ev: Evaluation, task: str, run: RunFolder) -> str:
    """The classification results of ``task`` (figures embedded from the run folder)."""
    if task == "multiclass":
        return multiclass_section(ev, run)
    if task == "binary" and ev.single is not None:
        return binary_section(ev, run)
    return multilabel_section(ev, run)
