"""The report's classification section, one shape per task, from ``evaluation.json`` and the figures.

- multi-label: AUC with CIs per label (macro and micro rows when there are several labels),
  threshold, sensitivity/specificity, AP, ECE; ROC with operating points, PR, calibration.
- binary: the same for the one label (no macro/micro rows), the rates at the validation-chosen
  threshold with CIs, and the confusion matrix (counts and shares).
- multi-class: accuracy, per-class precision/recall/AUC with CIs, confusion matrix,
  one-vs-rest ROC and PR, top-label calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.report.html import figures, fmt, table

RATE_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity (recall, TPR)",
              "specificity": "specificity (TNR)", "ppv": "PPV (precision)", "npv": "NPV"}


def ci_text(v: Any, lo: Any = None, hi: Any = None) -> str:
    """``0.812 (0.770-0.851)``, or the value alone when the CI is missing."""
    if v is None or v != v:
        return "n/a"
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{v:.3f}"
    return f"{v:.3f} ({lo:.3f}-{hi:.3f})"


def _range(lo: Any, hi: Any) -> str:
    return "n/a" if lo is None or hi is None or lo != lo or hi != hi else f"{lo:.3f}-{hi:.3f}"


def _auc(d: dict[str, Any]) -> str:
    return ci_text(d.get("auc", d.get("value")), d.get("ci_low"), d.get("ci_high"))


def _resampling(ev: dict[str, Any]) -> str:
    return f"95% bootstrap CIs ({ev.get('n_boot', 'n/a')} resamples of {ev.get('resampling', 'images')})"


def _figures(fig: Path, names: list[tuple[str, str, str]]) -> str:
    return figures([(fig / f, alt, cap) for f, alt, cap in names])


def rule_text(rule: str) -> str:
    """``youden(val)`` -> ``Youden's J on validation``."""
    return {"youden(val)": "Youden's J on validation", "fixed": "fixed 0.5: undefined on validation"}.get(rule, rule)


def multilabel_section(ev: dict[str, Any], fig: Path) -> str:
    """AUC per label (macro and micro rows only with several labels), thresholds, calibration, figures."""
    per = ev["per_label"]
    # .get: an evaluation.json from an older cxrlab may lack AP or ECE ("n/a" in the table)
    rows = [[lab, d["positives"], _auc(d), d.get("average_precision"),
             f"{d['threshold']:.3f} ({rule_text(d.get('threshold_rule', 'rule not recorded'))})",
             d["sensitivity"], d["specificity"], d.get("ece")] for lab, d in per.items()]
    if len(per) > 1:  # one label: macro and micro would repeat it
        rows.append(["macro", "", _auc(ev["macro_auc"]), "", "", "", "", ""])
        rows.append(["micro", "", _auc(ev["micro_auc"]), "", "", "", "", ""])
    return (f"<p>n = {ev['n']} test images. AUC with {_resampling(ev)}; thresholds chosen on validation "
            "(Youden's J) and applied to test; ECE with 10 equal-width bins.</p>"
            + table(["label", "positives", "AUC (95% CI)", "AP", "threshold", "sensitivity", "specificity", "ECE"],
                    rows)
            + _figures(fig, [("roc.png", "ROC curves", "Red dot: the decisions at the validation-chosen threshold."),
                             ("pr.png", "precision-recall curves", "Dotted: the prevalence (a random model's AP)."),
                             ("reliability.png", "calibration",
                              "One panel per label: observed rate against mean probability per bin, the "
                              "images in each bin next to its point and below.")]))


def _confusion_table(op: dict[str, Any], label: str) -> str:
    c, n = op["confusion"], op["normalised"]
    cell = lambda k, share: f"{c[k]} ({fmt(share * 100 if share == share else share, 1)} %)"  # noqa: E731
    return table(["true \\ predicted", f"no {label}", label],
                 [[f"no {label}", cell("tn", n[0][0]), cell("fp", n[0][1])],
                  [label, cell("fn", n[1][0]), cell("tp", n[1][1])]])


def binary_section(ev: dict[str, Any], fig: Path) -> str:
    """The one label's AUC, the rates at the validation-chosen threshold with CIs, the confusion matrix."""
    (lab, d), = ev["per_label"].items()
    op = d.get("operating_point")
    if op is None:  # evaluated by an older cxrlab: no operating point stored
        return multilabel_section(ev, fig)
    head = (f"<p>n = {ev['n']} test images, {d['positives']} with {lab}. AUC with {_resampling(ev)}; "
            "ECE with 10 equal-width bins.</p>"
            + table(["label", "positives", "AUC (95% CI)", "AP", "ECE"],
                    [[lab, d["positives"], _auc(d), d.get("average_precision"), d.get("ece")]]))
    rates = table(["at the threshold", "value", "95% CI"],
                  [[RATE_NAMES[k], op[k]["value"], _range(op[k]["ci_low"], op[k]["ci_high"])] for k in RATE_NAMES])
    return (head + f"<h3>Decisions at the threshold {op['threshold']:.3f} ({rule_text(d['threshold_rule'])}; chosen on "
            "validation, never on test)</h3>" + rates
            + "<h3>Confusion matrix at that threshold (count, share of the true class)</h3>"
            + _confusion_table(op, lab)
            + _figures(fig, [("confusion.png", "confusion matrix", ""),
                             ("roc.png", "ROC curve", "Red dot: the decisions at the validation-chosen threshold."),
                             ("pr.png", "precision-recall curve", "Dotted: the prevalence (a random model's AP)."),
                             ("reliability.png", "calibration", "Numbers and bars: test images per bin.")]))


def multiclass_section(ev: dict[str, Any], fig: Path) -> str:
    """Accuracy, per-class precision/recall/AUC with CIs, confusion matrix, one-vs-rest curves, calibration."""
    acc, cal = ev["accuracy"], ev.get("calibration") or {}
    rows = []
    for lab, d in ev["per_class"].items():
        pci, rci, aci = d.get("precision_ci") or [None] * 2, d.get("recall_ci") or [None] * 2, d.get("auc_ci") or [None] * 2
        lo = pci[0]
        never = "precision_ci" in d and d["recall"] == 0 and (lo is None or lo != lo)  # no prediction of it
        rows.append([lab, d["support"], "n/a (never predicted)" if never else ci_text(d["precision"], *pci),
                     ci_text(d["recall"], *rci), d["f1"], ci_text(d["auc"], *aci)])
    ece = f", top-label ECE {cal['ece']:.3f}" if "ece" in cal else ""
    return (f"<p>n = {ev['n']} test images. Accuracy {ci_text(acc['value'], acc['ci_low'], acc['ci_high'])}, "
            f"macro F1 {ev['macro_f1']:.3f}, macro one-vs-rest AUC {_auc(ev['macro_auc'])}{ece}; "
            f"{_resampling(ev) if 'n_boot' in ev else '95% bootstrap CIs'}. Decisions: the most probable class.</p>"
            + table(["class", "n", "precision (95% CI)", "recall (95% CI)", "F1", "AUC one-vs-rest (95% CI)"], rows)
            + _figures(fig, [("confusion.png", "confusion matrix", ""),
                             ("roc.png", "ROC curves, one-vs-rest",
                              "Each class against all others; red dot: where the arg-max decisions lie."),
                             ("pr.png", "precision-recall curves, one-vs-rest", ""),
                             ("reliability.png", "top-label calibration",
                              "Is the most probable class right as often as its probability says? "
                              "Below: test images per bin.")]))


def classification_section(ev: dict[str, Any], task: str, fig: Path) -> str:
    """The classification results of ``task`` (figures embedded from ``fig``)."""
    if task == "multiclass":
        return multiclass_section(ev, fig)
    if task == "binary" and len(ev.get("per_label", {})) == 1:
        return binary_section(ev, fig)
    return multilabel_section(ev, fig)
