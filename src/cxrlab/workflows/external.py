"""External validation: score a finished run on another dataset (``cxrlab evaluate RUN --on SOURCE``).

Why: a run's own test split says how it does at the hospital it was trained at; deployment asks
how it does at the next one (Zech et al. 2018; Cohen et al. 2020).  This workflow reads the
target in its published layout (any registered source), maps the run's labels onto the target's
columns through the label vocabulary (by name, never by position), predicts the target's images
through the run's preprocessing contract and :class:`~cxrlab.inference.Predictor` (the same
pixels ``cxrlab predict`` feeds), and writes ``RUN/external/<name>/``: ``predictions.csv``,
``external.json`` (:class:`~cxrlab.evaluate.records.ExternalResult`) and ``report.html``.
The tables themselves are :mod:`cxrlab.evaluate.shift`.

It also checks the scored images against the images the run trained on (exact and near copies,
:mod:`cxrlab.workflows.duplicates`; ``duplicates.json``): public sets reuse each other's images, and a
copy of a training image scored as "external" flatters the run.  The target images are decoded
once, for the model and for the check; ``exclude_duplicates`` drops the copies from scoring.

And it runs the subgroup analysis (:func:`cxrlab.evaluate.subgroups.subgroup_analysis`) on the
scored images at the run's own thresholds, the same one for every group (``subgroups.json`` and a
forest plot per label): a model that transports on average can still fail one sex or age band at
the new site, and a gap re-tuned away per group would not be seen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.data.manifest import Manifest
from cxrlab.data.sources import load_source
from cxrlab.data.vocabulary import LabelMatch, Vocabulary, combine
from cxrlab.errors import CxrlabError
from cxrlab.evaluate import shift
from cxrlab.evaluate.calibration import has_both
from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.records import DuplicateResult, ExternalResult, SubgroupResult, fresh
from cxrlab.progress import progress, say
from cxrlab.report.external_report import render_external, subgroups_skipped
from cxrlab.run import ModelRecord, RunFolder, prediction_table
from cxrlab.runio import atomic_write
from cxrlab.workflows.common import (
    build_manifest,
    load_run_images,
    open_model,
    run_folder,
    run_split,
)
from cxrlab.workflows.duplicates import duplicates_against_run
from cxrlab.workflows.ood import OodScorer, open_scorer, probabilities_and_ood

log = logging.getLogger(__name__)

#: Images decoded and predicted at a time (bounds memory on large targets).
CHUNK = 512
#: Every label column a source can give (the sources' defaults are fewer: CheXpert's 5 competition labels).
_ALL_COLUMNS = {"nih14": "cxrlab.data.sources.nih:NIH14_LABELS",
                "chexpert": "cxrlab.data.sources.chexpert:OBSERVATIONS",
                "mimic": "cxrlab.data.sources.chexpert:OBSERVATIONS"}  # MIMIC's labeller tables: CheXpert's 14
#: The demographic columns the composition table compares (where the manifests have them).
FACTORS = ("view", "sex", "age")


#: Columns of a ``csv`` target that are not labels (the source's own; options may rename them).
_CSV_META = ("path", "image", "patient", "split", "view", "age", "sex", "site", "source", "label")
#: The vocabulary's name for a source whose option makes it speak other label names.
_VOCABULARY_SOURCES = {("nih14", "relabels"): "nih14-adjudicated"}


def vocabulary_source(source: str, options: dict[str, Any] | None) -> str:
    """The name the target's columns are spelt under in the label vocabulary.

    ``nih14 -o relabels=FILE`` reads Majkowska et al.'s adjudicated columns (``Airspace opacity``,
    ``Nodule or mass``, ...), not NIH's own: the vocabulary lists them as ``nih14-adjudicated``.
    """
    for (name, option), spelt in _VOCABULARY_SOURCES.items():
        if source == name and (options or {}).get(option):
            return spelt
    return source


def _csv_columns(root: str | Path, options: dict[str, Any]) -> list[str] | None:
    """A multi-label ``csv`` target's label columns: every column that is not the source's metadata
    (None for a ``label`` column of class names, or a file the source itself should complain about)."""
    path = Path(root)
    path = path / "labels.csv" if path.is_dir() else path
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    meta = {*_CSV_META, *(str(options[k]) for k in ("path_column", "patient_column", "split_column",
                                                    "label_column") if options.get(k))}
    if options.get("label_column", "label") in header:
        return None
    return [c for c in header if c not in meta] or None


def source_label_columns(source: str, root: str | Path = "", options: dict[str, Any] | None = None) -> list[str] | None:
    """Every label column a target of ``source`` can give (None: the source's own default list)."""
    options = options or {}
    if source == "csv":
        return _csv_columns(root, options)
    if vocabulary_source(source, options) != source:
        return None  # the option chooses the columns (nih14 relabels: the four adjudicated findings)
    spec = _ALL_COLUMNS.get(source)
    if spec is None:
        return None
    import importlib

    module, name = spec.split(":")
    return list(getattr(importlib.import_module(module), name))


def _check_run(run: RunFolder) -> ModelRecord:
    rec = run.read_model_record()
    if rec.name == "ensemble" and not run.config_file.is_file():
        raise CxrlabError(f"{run.path}: an ensemble folder holds predictions only, no model to run on another "
                          "dataset; evaluate each member with --on")
    if rec.task == "multiclass":
        raise CxrlabError(f"{run.path}: a multiclass run ({len(rec.labels)} classes: {', '.join(rec.labels[:5])}); "
                          "external evaluation scores multi-label and binary runs label by label")
    reason = run.unfinished_reason()
    if reason:
        raise CxrlabError(f"{run.path}: training did not finish ({reason}); `cxrlab train --resume` completes it")
    return rec


def load_target(source: str, root: str | Path, options: dict[str, Any] | None, seed: int = 0) -> Manifest:
    """The target dataset with every label column its source gives; a folder not in the source's
    layout is one line naming both."""
    try:
        return load_source(source, str(root), labels=source_label_columns(source, root, options), options=options or {},
                           seed=seed)
    except CxrlabError as e:
        if "unknown data source" in str(e) or "data.options" in str(e):
            raise
        raise CxrlabError(f"--root {root} does not match the {source!r} layout: {e}") from None


def target_values(frame: pd.DataFrame, matches: list[LabelMatch]) -> np.ndarray:
    """(N, L) targets in the model's label order: the mapped column(s) (several-to-one: positive if any
    is), uncertain (-1) left out (NaN), blank (not mentioned) negative; NaN for a label the target lacks."""
    out = np.full((len(frame), len(matches)), np.nan, dtype=np.float32)
    for j, m in enumerate(matches):
        if not m.evaluable:
            continue
        raw = combine(frame[list(m.target_columns or (m.target_column,))].to_numpy(dtype=np.float32))
        col = np.where(np.isnan(raw), 0.0, raw)
        col[raw == -1] = np.nan
        out[:, j] = col
    return out


def predict_frame(manifest: Manifest, ids: list[str], predictor: Any, scorer: OodScorer | None, rec: ModelRecord,
                  workers: int = 0, keep: list[np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Probabilities (N, L) and OOD scores/flags of manifest images, decoded by the run's contract
    (the decoded chunks are appended to ``keep`` when given: the duplicate check's query)."""
    probs, scores, flags = [], [], []
    for i in progress(range(0, len(ids), CHUNK), desc="external"):
        images = load_run_images(manifest, ids[i:i + CHUNK], rec, workers, desc="decode")
        if keep is not None:
            keep.append(images)
        for b in range(0, len(images), 64):
            p, s, f = probabilities_and_ood(predictor, scorer, images[b:b + 64])
            probs.append(p)
            if s is not None:
                scores.append(s)
                flags.append(f)
    return (np.concatenate(probs), np.concatenate(scores) if scores else None,
            np.concatenate(flags) if flags else None)


def _factors(frame: pd.DataFrame) -> dict[str, Any]:
    return {f: frame[f].tolist() for f in FACTORS if f in frame.columns}


def _run_side(run: RunFolder, rec: ModelRecord, predictor: Any, scorer: OodScorer | None,
              workers: int) -> tuple[dict[str, Any], float | None, str]:
    """Composition factors and the OOD-flagged share of the run's own test split (rebuilt from its data)."""
    test = run.read_predictions("test")
    try:
        cfg = run.read_config()
        manifest = build_manifest(cfg)
        frame = run_split(run, cfg, manifest, "test")
    except CxrlabError as e:  # the run's data moved: what its predictions table knows
        return _factors(test), None, f"the run's own test images could not be read again ({e})"
    if scorer is None:
        return _factors(frame), None, ""
    _, _, flags = predict_frame(manifest, frame["image"].tolist(), predictor, scorer, rec, workers)
    return _factors(frame), float(np.mean(flags)), ""


def evaluate_external(run_dir: str | Path, source: str, root: str | Path, options: dict[str, Any] | None = None,
                      name: str | None = None, all_images: bool = False, recalibrate_fraction: float = 0.2,
                      n_boot: int = 1000, seed: int = 0, workers: int = 0, duplicate_check: bool = True,
                      exclude_duplicates: bool = False, subgroups: list[str] | None = None,
                      subgroup_analysis: bool = True) -> ExternalResult:
    """Score a finished run on another dataset; write ``RUN/external/<name>/`` and return its record.

    Args:
        run_dir: the run folder.
        source, root, options: the target, as ``data.source`` / ``data.root`` / ``data.options`` say it.
        name: the folder under ``RUN/external/`` (default: the source name).
        all_images: score every image of the target, not only its test split.
        recalibrate_fraction: share of the target's scored *patients* the recalibration is fitted on
            (never scored); 0 turns recalibration off.
        n_boot: bootstrap resamples (patients) of every CI.
        seed: of the resampling and of the recalibration slice.
        workers: decode processes.
        duplicate_check: look for copies of the run's training images among the scored images
            (``duplicates.json``; off for very large targets: the check holds every decoded image).
        exclude_duplicates: drop those copies from scoring (the record says how many).
        subgroups: attributes of the subgroup analysis (``sex``, ``age``, ``view``, ``site``, ``source``);
            None: every one the target records with two or more values (none: skipped, one line says so).
        subgroup_analysis: False skips it (a cross-site study scores many pairs; its cells have their own).
    """
    if n_boot < 10:
        raise CxrlabError(f"--n-boot must be >= 10 for a 95% CI (1000 is usual), got {n_boot}")
    if not 0 <= recalibrate_fraction < 1:
        raise CxrlabError(f"--recalibrate-fraction must be in [0, 1), got {recalibrate_fraction}")
    if exclude_duplicates and not duplicate_check:
        raise CxrlabError("--exclude-duplicates needs the duplicate check (drop --no-duplicate-check)")
    by = _check_by(subgroups)
    run = run_folder(run_dir)
    rec = _check_run(run)
    files = run.external_files(name or source)
    cfg = run.read_config() if run.config_file.is_file() else None
    # the labels' own spelling: the run's source, or "canonical" for a run over several sources
    run_source = rec.label_source or (cfg.data.source if cfg is not None else "")
    vocab = Vocabulary.load(cfg.data.vocabulary if cfg is not None else None)
    manifest = load_target(source, root, options, seed)
    matches, lacking = vocab.match(rec.labels, run_source, vocabulary_source(source, options), list(manifest.labels))
    if not any(m.evaluable for m in matches):
        raise CxrlabError(f"{root}: none of the run's labels ({', '.join(rec.labels)}) maps to a column of "
                          f"{source!r} ({', '.join(manifest.labels[:8])}{', ...' if len(manifest.labels) > 8 else ''}) "
                          f"in the label vocabulary {vocab.version}; nothing to evaluate")
    frame = manifest.frame if all_images else manifest.split("test")
    if len(frame) == 0:
        raise CxrlabError(f"{root}: the {source} test split is empty; --all-images scores every image")
    by, sub_note = _resolve_by(frame, by, str(root)) if subgroup_analysis else ([], "")  # before decoding: fails fast
    opened = open_model(run)
    scorer = open_scorer(run, opened.predictor)
    decoded: list[np.ndarray] | None = [] if duplicate_check else None
    probs, scores, flags = predict_frame(manifest, frame["image"].tolist(), opened.predictor, scorer, rec, workers,
                                         keep=decoded)
    dups, dup_note = _check_duplicates(run, decoded, frame["image"].astype(str).tolist(), files["duplicates"], workers)
    excluded = 0
    if exclude_duplicates:
        if dups is None:
            raise CxrlabError(f"{run.path}: --exclude-duplicates: {dup_note}")
        keep = ~frame["image"].astype(str).isin(set(dups.leaked)).to_numpy()
        excluded = int((~keep).sum())
        if not keep.any():
            raise CxrlabError(f"{root}: all {len(frame)} scored images copy training images of the run; nothing "
                              "left to score without them")
        frame = frame[keep].reset_index(drop=True)
        probs = probs[keep]
        scores, flags = (None, None) if scores is None else (scores[keep], flags[keep])
    y = target_values(frame, matches)
    table = prediction_table(frame, y, probs, rec.labels)
    for extra in ("age", "sex", "site", "source"):
        if extra in frame.columns:
            table[extra] = frame[extra].to_numpy()
    if scores is not None:
        table["ood_score"], table["ood_flag"] = scores, flags
    files["predictions"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write(files["predictions"], lambda tmp: table.to_csv(tmp, index=False))

    groups = frame["patient"].astype(str).to_numpy()
    run_y, run_p, run_groups = split_prediction_table(run.read_predictions("test"), rec.labels)
    fit = shift.patient_slice(groups, recalibrate_fraction, seed) if recalibrate_fraction > 0 else None
    labels: dict[str, Any] = {}
    for j, m in enumerate(matches):
        # the run's own test AUC for every label, evaluable here or not: what the target could not check
        entry: dict[str, Any] = {**m.to_dict(), "run_prevalence": shift.prevalence(run_y[:, j]),
                                 "run_auc": shift.auc_with_ci(run_y[:, j], run_p[:, j], run_groups, n_boot, seed + j)}
        entry.pop("target_columns", None)
        if m.evaluable:
            thr = float(rec.thresholds.get(m.model_label, 0.5))
            t = shift.transported(y[:, j], probs[:, j], thr, groups, n_boot, seed + j)
            entry.update(n=t["n"], positives=t["positives"], prevalence=t["prevalence"], auc=t["auc"],
                         transported={"threshold": thr, "predicted_positive": t["predicted_positive"],
                                      "operating_point": t["operating_point"]})
            if fit is not None:
                entry["held_out"] = shift.recalibrated(y[:, j], probs[:, j], thr, groups, fit, n_boot, seed + j)
        labels[m.model_label] = entry
    cols = [j for j, m in enumerate(matches) if m.evaluable]
    # the macro AUC of each side averages the same labels: those with both classes on the target and in the run's
    # test split (a label without positives on one side would otherwise drop out of that side's mean only)
    both = [j for j in cols if has_both(y[:, j]) and has_both(run_y[:, j])]
    run_factors, run_ood, run_note = _run_side(run, rec, opened.predictor, scorer, workers)
    ood = None
    if flags is not None:
        from cxrlab.workflows.ood import reliability_note

        ood = {"threshold": scorer.threshold, "run_share": run_ood, "target_share": float(np.mean(flags)),
               "reliable": bool(scorer.summary.get("reliable", True)), "note": reliability_note(scorer.summary) or "",
               "run_note": run_note}
    recal = {"fraction": recalibrate_fraction, "seed": seed, "rule": "youden(target slice)"}
    if fit is not None:
        recal.update(fit_images=int(fit.sum()), fit_patients=int(len(np.unique(groups[fit]))),
                     scored_images=int((~fit).sum()), probabilities="platt (target slice)")
    result = fresh(ExternalResult, {
        "run": str(run.path), "name": files["result"].parent.name, "source": source, "root": str(root),
        "options": dict(options or {}), "scored": "all images" if all_images else "test split",
        "n_images": len(frame), "n_patients": int(len(np.unique(groups))), "vocabulary": vocab.version,
        "labels": labels, "target_only": lacking,
        "macro_auc": shift.macro_with_ci(y[:, both], probs[:, both], groups, n_boot, seed),
        "run_macro_auc": shift.macro_with_ci(run_y[:, both], run_p[:, both], run_groups, n_boot, seed),
        "macro_labels": [rec.labels[j] for j in both],
        "composition": shift.composition(run_factors, _factors(frame), _age_bins()), "ood": ood, "recalibration": recal,
        "n_boot": n_boot, "duplicates": None if dups is None else dups.to_dict(), "duplicate_note": dup_note,
        "duplicates_excluded": excluded})
    run.write_json(files["result"], result.to_dict())
    # a label of one class among the scored images has no AUC or rate in any group: left out, one line says so
    grouped = [j for j in cols if has_both(y[:, j])]
    one_class = [rec.labels[j] for j in cols if j not in grouped]
    skipped = subgroups_skipped(result, one_class) if by else ""
    if by and not grouped:
        by, sub_note, skipped = [], subgroups_skipped(result, one_class, every=True), ""
    for j in set(cols) - set(grouped):  # a stale forest plot of an earlier evaluation goes too
        _figure(run, files, rec.labels[j]).unlink(missing_ok=True)
    sub = _subgroups(run, rec, frame, y[:, grouped], probs[:, grouped], [rec.labels[j] for j in grouped], groups,
                     by, files, str(root), n_boot, seed)
    for line in (sub_note, skipped):
        if line:
            say(line)
    figures = {lab: _figure(run, files, lab) for lab in (m.model_label for m in matches if m.evaluable)}
    render_external(result, files["report"], sub, sub_note, {k: v for k, v in figures.items() if v.is_file()},
                    sub_skipped=skipped)
    return result


def _age_bins() -> tuple[float, ...]:
    """The subgroup analysis's default age bins: the composition table bins ages the same way."""
    from cxrlab.workflows.subgroups import DEFAULT_AGE_BINS

    return tuple(DEFAULT_AGE_BINS)


def _check_by(subgroups: list[str] | None) -> list[str] | None:
    """``--subgroups`` as a list of attributes (None: the target's own), unknown names one line."""
    from cxrlab.workflows.subgroups import ATTRIBUTES

    if subgroups is None:
        return None
    by = [b.strip() for b in subgroups if b.strip()]
    unknown = [b for b in by if b not in ATTRIBUTES]
    if unknown or not by:
        raise CxrlabError(f"--subgroups: unknown attribute {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"one or more of {', '.join(ATTRIBUTES)}")
    return by


def _known(column: pd.Series) -> set[str]:
    values = column.dropna().astype(str).str.strip()
    return set(values[values != ""])


def _figure(run: RunFolder, files: dict[str, Path], label: str) -> Path:
    from cxrlab.report.subgroups_report import figure_key

    return files["figures"] / run.figure("subgroups", figure_key(label)).name


def _resolve_by(frame: pd.DataFrame, by: list[str] | None, root: str) -> tuple[list[str], str]:
    """The attributes to group the scored images by, and (none) the one line that says why not.

    None: every attribute the target records with two or more values (a one-source target's
    ``source`` is one group: nothing to compare).  Named ones the target lacks: one line."""
    from cxrlab.workflows.subgroups import ATTRIBUTES

    if by is None:
        by = [a for a in ATTRIBUTES if a in frame.columns and len(_known(frame[a])) >= 2]
        if not by:
            return [], (f"subgroups: skipped, the target ({root}) records no {', '.join(ATTRIBUTES)} "
                        "with two or more values")
        return by, ""
    lacking = [a for a in by if a not in frame.columns or not _known(frame[a])]
    if lacking:
        have = [a for a in ATTRIBUTES if a in frame.columns and _known(frame[a])]
        raise CxrlabError(f"{root}: --subgroups {', '.join(map(repr, lacking))}: the target does not record it "
                          f"(it records {', '.join(have) or 'none of ' + ', '.join(ATTRIBUTES)})")
    return by, ""


def _subgroups(run: RunFolder, rec: ModelRecord, frame: pd.DataFrame, y: np.ndarray, probs: np.ndarray,
               labels: list[str], groups: np.ndarray, by: list[str], files: dict[str, Path], root: str,
               n_boot: int, seed: int) -> SubgroupResult | None:
    """The subgroup analysis of the scored images at the run's thresholds (``subgroups.json`` and the forest
    plots; None when ``by`` is empty).  Stale files of an earlier evaluation go first."""
    from cxrlab.evaluate.subgroups import subgroup_analysis
    from cxrlab.workflows.subgroups import DEFAULT_AGE_BINS, attribute_groups

    files["subgroups"].unlink(missing_ok=True)
    for lab in labels:
        _figure(run, files, lab).unlink(missing_ok=True)
    if not by:
        return None
    attrs = attribute_groups(frame, by, DEFAULT_AGE_BINS, root)
    thresholds = {lab: float(rec.thresholds.get(lab, 0.5)) for lab in labels}
    result = subgroup_analysis(y, probs, labels, thresholds, attrs, groups, n_boot=n_boot, seed=seed,
                               threshold_rule=f"{rec.threshold_rule} (the run's, transported)",
                               age_bins=list(DEFAULT_AGE_BINS) if "age" in by else None)
    run.write_json(files["subgroups"], result.to_dict())
    _draw_forests(run, files, result)
    return result


def _draw_forests(run: RunFolder, files: dict[str, Path], result: SubgroupResult) -> None:
    """A forest plot per label (each group's AUC minus the rest's, 95% CI), as ``cxrlab subgroups`` draws it."""
    from cxrlab.report import plots_eval
    from cxrlab.report.subgroups_report import forest_rows

    files["figures"].mkdir(parents=True, exist_ok=True)
    for lab in result.labels:
        rows = forest_rows(result, lab)
        if rows and np.isfinite([r[1] for r in rows]).any():
            plots_eval.forest(rows, _figure(run, files, lab), xlabel=f"{lab}: AUC of the group minus the rest")


def _check_duplicates(run: RunFolder, decoded: list[np.ndarray] | None, ids: list[str], out: Path,
                      workers: int) -> tuple[DuplicateResult | None, str]:
    """The scored images checked against the run's training images (``out``: ``duplicates.json``), or
    None and why not.  A stale ``duplicates.json`` of an earlier evaluation is removed first."""
    out.unlink(missing_ok=True)
    if decoded is None:
        return None, "not checked (--no-duplicate-check)"
    images = np.concatenate(decoded) if decoded else np.zeros((0, 1, 1), np.uint8)
    try:
        return duplicates_against_run(run, images, ids, out=out, workers=workers), ""
    except CxrlabError as e:  # the run's data moved: say so on the page, never skip silently
        return None, f"not checked: the run's training images could not be read again ({e})"


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``-o key=value`` pairs as a source's options (values read as YAML: ``true``, ``3``, ``frontal``)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CxrlabError(f"-o {pair!r}: expected key=value (a source option, e.g. -o views=frontal)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
