"""The report of an ensemble folder (``cxrlab ensemble``): its members, how they were combined, and the
classification results of the combined predictions; one self-contained ``report.html``.

An ensemble folder holds no config, split, weights or training log, only ``model.json`` (labels, task,
thresholds, ``members``, ``combine``, ``fused_by``), the prediction tables and, after ``cxrlab evaluate``,
``evaluation.json`` and the figures.  The report is built from those alone; the setup, the splits and the
leakage check of each member are in the member's own report, which the members table names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.evaluate.records import Evaluation, RunSummary
from cxrlab.report import present
from cxrlab.report.classification import classification_section
from cxrlab.report.html import esc, table, write_report
from cxrlab.run import RunFolder


def _member_row(path: str) -> list[Any]:
    """Member folder, architecture, input size, test macro AUC (its summary), its report (or why not)."""
    m = RunFolder(path)
    if not m.model_json.is_file():
        return [path, "n/a", "n/a", None, "not found from here"]
    info = m.read_model_json()
    summary = RunSummary.read(m.summary_file)
    return [path, info.get("architecture", "n/a"), info.get("input_size", "n/a"),
            summary.macro_auc.value if summary else None,
            str(m.report_file) if m.report_file.is_file() else "no report"]


def ensemble_section(info: dict[str, Any], n_test: int, n_patients: int | None) -> str:
    """Members, the combination rule and the test rows the combined predictions cover."""
    how = {"mean": "the mean", "max": "the maximum"}.get(info.get("combine"), esc(info.get("combine")))
    fused = info.get("fused_by")
    rule = f"<p>Probabilities combined as {how} of the members' per image"
    rule += f", then fused per <code>{esc(fused)}</code>" if fused else ""
    pats = f" of {n_patients} patients" if n_patients is not None else ""
    rule += (f". {n_test} test rows{pats}; labels {esc(', '.join(info.get('labels', [])))} "
             f"({esc(info.get('task'))}). Thresholds: {esc(info.get('threshold_rule', 'fixed 0.5'))}.</p>")
    rows = [_member_row(str(p)) for p in info.get("members", [])]
    return (rule + table(["member", "architecture", "input px", "member macro AUC (test)", "member report"], rows)
            + "<p class='muted'>Setup, splits and the patient-leakage check of each member are in its own "
              "report.</p>")


def render_ensemble_report(run: RunFolder) -> Path:
    """(Re)write ``report.html`` of an ensemble folder from ``model.json``, predictions and ``evaluation.json``."""
    info = run.read_model_json()
    task = info.get("task", "multilabel")
    evaluation = Evaluation.read(run.evaluation_file, task)
    test = run.read_predictions("test")
    n_patients = int(test["patient"].nunique()) if "patient" in test.columns else None
    sections = [("Ensemble", ensemble_section(info, len(test), n_patients))]
    if evaluation:
        sections.append(("Classification (test split)", classification_section(evaluation, task, run)))
        name, est = evaluation.headline
        subtitle = f"{name} {present.ci(est)} on the test split" if est.defined else ""
    else:
        sections.append(("Classification (test split)",
                         f"<p>Not evaluated yet: run <code>cxrlab evaluate {esc(run.path)}</code>.</p>"))
        subtitle = ""
    return write_report(run.report_file, f"cxrlab ensemble: {run.path.name}", sections, subtitle=subtitle)
