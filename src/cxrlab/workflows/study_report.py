"""``cxrlab study report``: one table, tests and plots over a study's cells, published numbers beside ours.

Computes (from the cells' run folders only): what ran (each cell's model, size,
weights, epochs, images and patients per split, data root, patients shared
between splits; the command line from ``study.yaml``), per-cell AUC / accuracy
with CIs at the report's B resamples (a cell evaluated with another B is
re-evaluated from its predictions; its own ``evaluation.json`` is left as it is;
binary cells: accuracy and confusion at the validation-chosen threshold),
ROC points per cell,
DeLong per label of each cell against the baseline (Holm-adjusted), the
paired macro-AUC bootstrap and McNemar's test of accuracy (binary and
multi-class cells), the study's extra comparisons, localisation per
class ordered by box size, where each cell looks (its audit's lung-energy share per label, and for
multi-class cells over all audited test images, with the paired bootstrap difference to the
baseline on the same images), and the published-vs-ours differences; then writes
``study.json``, ``report.md`` and a self-contained ``report.html``
(:mod:`cxrlab.report.study`).

It only reads the cells: nothing under the study's ``runs/`` is written (the
post steps' ensembles are made by ``study run``, :func:`~.study.run_post_steps`;
a post cell not made yet is listed as not finished).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.audit import difference_ci, mean_ci
from cxrlab.evaluate.compare import compare_decisions, compare_tables
from cxrlab.evaluate.evaluate import evaluate_tables, split_prediction_table
from cxrlab.evaluate.metrics import roc_points
from cxrlab.evaluate.records import (
    AuditResult,
    Evaluation,
    StudyCell,
    StudyResult,
    SubgroupResult,
    fresh,
)
from cxrlab.locks import FolderLock
from cxrlab.report.study import render_study
from cxrlab.run import RunFolder
from cxrlab.runio import atomic_write_json
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.resolved import folder_spec, read_resolved
from cxrlab.studies.spec import load_study
from cxrlab.workflows.study import run_finished

SPLITS = ("train", "val", "test")

#: What the lung-energy column says for a cell without an audit (a real-data study without masks).
NO_MASKS = "no masks (cxrlab audit --masks SPEC)"
#: ... and for a cell of a study with masks whose audit stopped (``study run`` named it in one line).
NOT_AUDITED = "not audited (cxrlab audit RUN --masks SPEC says why)"
#: The key of the share over all audited test images (multi-class cells: each image with its true class's map).
ALL_IMAGES = "all test images"


def _evaluation(run: RunFolder, n_boot: int) -> Evaluation:
    """The cell's evaluation with ``n_boot`` resamples: its own ``evaluation.json`` when that is of this format
    and used that B, else recomputed from its predictions (the file is left as it is)."""
    rec = run.read_model_record()
    ev = Evaluation.read(run.evaluation_file, rec.task)
    if ev is not None and ev.n_boot == n_boot and not ev.outdated:
        return ev
    val = run.read_predictions("val") if run.has_predictions("val") else None
    seed = run.read_config().seed if run.config_file.is_file() else 0
    return fresh(Evaluation, evaluate_tables(run.read_predictions("test"), rec.labels, rec.task, val,
                                             n_boot=n_boot, seed=seed), task=rec.task)


def _setup(run: RunFolder, summary: dict[str, Any]) -> dict[str, Any] | None:
    """What the cell ran: model, size, weights, epochs, images and patients per split, data, leakage."""
    if not run.config_file.is_file():  # a prediction-only cell (ensemble): its members say what ran
        return None
    cfg = run.read_config()
    data = summary.get("data") or {}
    splits = data.get("splits") or {}
    return {"model": cfg.model.name, "options": cfg.model.options, "dropout": cfg.model.dropout,
            "image_size": cfg.data.image_size, "pretrained": cfg.model.pretrained,
            "epochs_run": summary.get("epochs_run"), "epochs_cap": cfg.train.epochs,
            "best_epoch": summary.get("best_epoch"), "lr": cfg.train.lr, "loss": cfg.train.loss,
            "source": " + ".join(f"{x.name or x.source} ({x.source})" for x in cfg.data.sources)
            if cfg.data.sources else cfg.data.source,
            "root": "; ".join(x.root for x in cfg.data.sources) if cfg.data.sources else cfg.data.root,
            "splits": {s: {"images": splits[s].get("images"), "patients": splits[s].get("patients")}
                       for s in SPLITS if s in splits},
            "split_method": data.get("split_method"), "patient_overlap": data.get("patient_overlap"),
            "overlap_examples": data.get("overlap_examples") or {}}


def _roc(run: RunFolder, labels: list[str]) -> dict[str, dict[str, list[float]]]:
    """ROC points per label of the cell's test predictions (labels with both classes only)."""
    y, p, _ = split_prediction_table(run.read_predictions("test"), labels)
    out = {}
    for j, lab in enumerate(labels):
        keep = ~np.isnan(y[:, j])
        if len(np.unique(y[keep, j])) == 2:
            fpr, tpr = roc_points(y[:, j], p[:, j])
            out[lab] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


def _cell_row(run: RunFolder, n_boot: int) -> StudyCell:
    rec = run.read_model_record()
    summary = run.read_json(run.summary_file) or {}
    extras: dict[str, Any] = {"epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
                              "history": run.read_metrics(), "localization": summary.get("localization"),
                              "setup": _setup(run, summary)}
    if rec.task != "multiclass":
        extras["roc"] = _roc(run, rec.labels)
    subgroups = _subgroups(run)
    if subgroups is not None:
        extras["subgroups"] = subgroups
    return StudyCell.of(_evaluation(run, n_boot), rec.labels, extras)


def _subgroups(run: RunFolder) -> dict[str, Any] | None:
    """The cell's ``subgroups.json`` as written by ``cxrlab subgroups`` (``study run`` makes it), or None."""
    res = SubgroupResult.read(run.subgroups_file) if run.subgroups_file.is_file() else None
    return None if res is None else res.to_dict()


def _threshold(run: RunFolder) -> float | None:
    ev = Evaluation.read(run.evaluation_file, run.read_model_record().task)
    op = ev.operating_point if ev is not None else None
    return op.threshold if op else None


def _compare(study: StudyFolder, a: str, b: str, n_boot: int) -> dict[str, Any]:
    ra, rb = RunFolder(study.run_path(a)), RunFolder(study.run_path(b))
    pa, pb = ra.read_predictions(), rb.read_predictions()
    rec_a, rec_b = ra.read_model_record(), rb.read_model_record()
    res = compare_tables(pa, pb, rec_a.labels, rec_b.labels, a, b, n_boot=n_boot)
    res["n_boot"] = n_boot
    task = rec_a.task
    ta, tb = _threshold(ra), _threshold(rb)
    decided = task == "multiclass" or (task == "binary" and ta is not None and tb is not None)
    if decided and task == rec_b.task:  # paired accuracy: McNemar
        res["accuracy"] = compare_decisions(pa, pb, res["labels"], task, ta, tb, a, b)
    return res


def _audit_images(run: RunFolder, method: str) -> pd.DataFrame | None:
    path = run.audit_images_file(method)
    return pd.read_csv(path) if path.is_file() else None


def _audit(run: RunFolder, method: str, task: str, masks: str | None) -> dict[str, Any]:
    """The cell's lung-energy share per label from its ``audit_<method>.json`` (``{"missing": why}`` without one).

    Multi-class cells add the share over all audited test images (:data:`ALL_IMAGES`, from the per-image table,
    resampled by patient with the audit's B).
    """
    if not run.config_file.is_file():
        return {"missing": "no model of its own (its members are audited)"}
    res = AuditResult.read(run.audit_file(method)) if run.audit_file(method).is_file() else None
    if res is None:
        return {"missing": NOT_AUDITED if masks else NO_MASKS}
    share = {lab: r.lung_share.to_dict() for lab, r in res.per_label.items()}
    uniform = {lab: r.uniform_lung_share.to_dict() for lab, r in res.per_label.items()}
    table = _audit_images(run, method)
    if task == "multiclass" and table is not None and not table.empty:
        seed = run.read_config().seed
        share[ALL_IMAGES] = mean_ci(table["lung_share"].to_numpy(float), table["patient"].astype(str).to_numpy(),
                                    res.n_boot or 1000, seed).to_dict()
    return {"method": res.method, "n_boot": res.n_boot, "mask_source": res.mask_source, "share": share,
            "uniform": uniform, "n": {lab: r.n for lab, r in res.per_label.items()},
            "no_energy": {lab: r.no_energy for lab, r in res.per_label.items()}, "flagged": res.flagged,
            "counts": res.counts}


def _audit_compare(study: StudyFolder, a: str, b: str, method: str, n_boot: int) -> list[dict[str, Any]]:
    """Lung-energy share of cell A minus cell B per label they both audited (:func:`audit_difference`: paired on
    the shared test images), and over all audited images for multi-class cells; [] when either has no audit."""
    from cxrlab.workflows.audit import audit_difference

    ra, rb = RunFolder(study.run_path(a)), RunFolder(study.run_path(b))
    ta, tb = _audit_images(ra, method), _audit_images(rb, method)
    if ta is None or tb is None:
        return []
    out = []
    for lab in [x for x in dict.fromkeys(ta["label"]) if x in set(tb["label"])]:
        d, p, paired = audit_difference(ra.path, rb.path, lab, method, n_boot=n_boot)
        images = len(ta[ta["label"] == lab].merge(tb[tb["label"] == lab], on="image")) if paired else None
        out.append({"label": lab, "diff": d.to_dict(), "p": p, "paired": paired, "images": images})
    if ra.read_model_record().task == "multiclass":
        both = ta.merge(tb, on=["image", "label"], suffixes=("_a", "_b"))
        if len(both):
            d, p = difference_ci(both["lung_share_a"].to_numpy(float), both["lung_share_b"].to_numpy(float),
                                 both["patient_a"].astype(str).to_numpy(), paired=True, n_boot=n_boot)
            out.append({"label": ALL_IMAGES, "diff": d.to_dict(), "p": p, "paired": True, "images": len(both)})
    return out


def _post_made(run: RunFolder) -> bool:
    """A post step's prediction-only cell was made (its record and test predictions are there)."""
    return run.model_json.is_file() and run.has_predictions("test")


def study_report(folder: str | Path | StudyFolder, plan: Any = None, ref: str | Path | None = None,
                 n_boot: int | None = None) -> Path:
    """Write the study's report from its run folders; return ``report.html``.

    Reads the cells and writes only the report's files (:meth:`StudyFolder.report_files` and its figures):
    nothing under ``runs/`` changes, so a report re-run is safe at any time.

    Args:
        folder: ``studies/<name>``.
        plan: the :class:`~cxrlab.workflows.study.StudyPlan` (after ``study run``); else the spec is read
            from the folder's ``preset.yaml`` or ``ref``.
        n_boot: bootstrap resamples B of every CI and test on the page (default: the study's ``n_boot``);
            a cell evaluated with another B is re-evaluated from its predictions for the page only.

    The study folder is locked while the report is written (re-entrant under ``study run``).
    """
    study = folder if isinstance(folder, StudyFolder) else StudyFolder(folder)
    with FolderLock(study.path, what="study"):
        return _study_report(study, plan, ref, n_boot)


def _study_report(study: StudyFolder, plan: Any, ref: str | Path | None, n_boot: int | None) -> Path:
    if plan is not None:
        spec, wanted, phantom = plan.spec, plan.baseline, plan.phantom
        names = [c.name for c in plan.cells]
    else:
        spec = load_study(ref)[0] if ref else folder_spec(study)
        phantom = study.is_phantom()
        names = [c.name for c in spec.grid()]  # the cells of the form that ran (the phantom form may run fewer)
        if phantom and spec.phantom and spec.phantom.only:
            names = [c for c in names if c in spec.phantom.only]
        wanted = (spec.phantom.baseline if phantom and spec.phantom else None) or spec.baseline_cell()
    finished = [n for n in names if run_finished(RunFolder(study.run_path(n)))]
    if not finished:
        raise CxrlabError(f"{study.path}: no finished cell to report (run cxrlab study run first)")
    baseline = wanted if wanted in finished or plan is not None else finished[0]
    if n_boot is not None and n_boot < 10:
        raise CxrlabError(f"--n-boot must be >= 10 for a 95% CI (1000 is usual), got {n_boot}")
    n_boot = n_boot or spec.n_boot
    posts = list(spec.post_cells(finished))
    made = [n for n in posts if _post_made(RunFolder(study.run_path(n)))]
    rows = {n: _cell_row(RunFolder(study.run_path(n)), n_boot) for n in [*finished, *made]}
    method = spec.audit.method
    resolved = read_resolved(study) or {}
    rows = {n: replace(r, extras={**r.extras, "audit": _audit(RunFolder(study.run_path(n)), method, r.task,
                                                                resolved.get("masks"))})
            for n, r in rows.items()}
    transfer = None
    if spec.sites:  # cells of other sites have other test images: compared across sites, not to a baseline
        from cxrlab.workflows.transfer import transfer_result

        transfer = transfer_result(study, spec, finished, n_boot)
    comparisons = [{"a": n, "b": baseline, **_compare(study, n, baseline, n_boot)}
                   for n in finished if n != baseline and baseline in finished and not spec.sites]
    for a, b in spec.comparisons:
        if a in finished and b in finished and not any({c["a"], c["b"]} == {a, b} for c in comparisons):
            comparisons.append({"a": a, "b": b, **_compare(study, a, b, n_boot), "requested": True})
    audited = [n for n in finished if "share" in rows[n].extras["audit"]]
    audit_pairs = [{"a": c["a"], "b": c["b"], "n_boot": n_boot, "rows": _audit_compare(study, c["a"], c["b"], method,
                                                                                       n_boot)}
                   for c in comparisons if c["a"] in audited and c["b"] in audited]
    result = StudyResult(
        name=spec.name, cells=rows, baseline=baseline, n_boot=n_boot, title=spec.title,
        description=spec.description, axes=spec.axes, comparisons=comparisons, published=spec.published,
        published_source=spec.published_source, phantom=phantom,
        missing=[n for n in [*names, *posts] if n not in rows],
        overrides={c.name: c.overrides for c in spec.grid() if c.name in rows},
        command_line=resolved.get("command_line"), root=resolved.get("root"), base=resolved.get("base"),
        audit={"method": method, "masks": resolved.get("masks"), "comparisons": audit_pairs}, transfer=transfer)
    atomic_write_json(study.result_file, result.to_dict(curves=False))  # ROC points: drawn, not stored
    return render_study(study, result)
