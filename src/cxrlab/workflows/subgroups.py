"""``cxrlab subgroups RUN``: the run's test predictions per patient group, at its validation-chosen thresholds.

The group columns (``sex``, ``age``, ``view``, ``source``, ``site``) come from ``predictions.csv``
where the run wrote them, else from the run's own manifest joined on the image (runs written before
the prediction tables carried them).  The analysis is :func:`cxrlab.evaluate.subgroups.subgroup_analysis`;
this workflow finds the columns, bins the ages, writes ``subgroups.json`` and a forest plot per
label through the run folder, and refreshes the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError
from cxrlab.evaluate.evaluate import split_prediction_table
from cxrlab.evaluate.records import SubgroupResult
from cxrlab.evaluate.subgroups import age_groups, as_groups, subgroup_analysis
from cxrlab.report.run_report import render_report
from cxrlab.report.subgroups_report import figure_key, forest_rows
from cxrlab.run import UNFINISHED_RULE, RunFolder
from cxrlab.workflows.common import build_manifest, run_folder

#: What ``--by`` can name.
ATTRIBUTES = ("sex", "age", "view", "source", "site")
DEFAULT_BY = ("sex", "age", "view", "source")
DEFAULT_AGE_BINS = (0.0, 40.0, 60.0, 80.0, 120.0)


def _group_columns(run: RunFolder, test: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, str]:
    """The ``by`` columns for the test rows, and where they came from (for errors and the record)."""
    missing = [a for a in by if a not in test.columns]
    if not missing:
        return test[by], run.predictions_file("test").name
    origin = f"{run.predictions_file('test').name} and the run's manifest"
    cfg = run.read_config()
    frame = build_manifest(cfg).frame
    if "source" in missing and "source" not in frame.columns:  # a run of one source: its name
        frame = frame.assign(source=cfg.data.source)
    lacking = [a for a in missing if a not in frame.columns]
    if lacking:
        have = [c for c in ATTRIBUTES if c in test.columns or c in frame.columns]
        raise CxrlabError(f"{run.predictions_file('test')}: no subgroup column {', '.join(map(repr, lacking))} "
                          f"(neither in the predictions nor in the manifest of {cfg.data.root}); "
                          f"columns to group by: {', '.join(have) or 'none'}")
    joined = test[["image"]].merge(frame[["image", *missing]].drop_duplicates("image"), on="image", how="left")
    out = pd.concat([test[[a for a in by if a not in missing]].reset_index(drop=True),
                     joined[missing].reset_index(drop=True)], axis=1)
    return out[by], origin


def _check_values(run: RunFolder, test: pd.DataFrame, attrs: dict[str, np.ndarray], origin: str) -> None:
    """Refuse, before anything is written, an analysis in which no attribute has two values.

    Why: ``--by site`` on a run without sites was one group "unknown"; the command exited 0 with an
    empty worst-group table and overwrote the earlier ``subgroups.json`` and report section.  One
    attribute of several with one value is not an error (the page lists it in one line).
    """
    values = {a: np.unique(v.astype(str)) for a, v in attrs.items()}
    if any(len(v) >= 2 for v in values.values()):
        return
    n = len(test)
    said = "; ".join(f"{a}: one value only (" + (f"all {n} test images '{v[0]}')" if len(v) else "no test images)")
                     for a, v in values.items())
    other = [c for c in ATTRIBUTES if c not in attrs and c in test.columns
             and len(set(as_groups(test[c].to_numpy()))) >= 2]
    hint = f"; try --by {','.join(other)} (two or more values each)" if other else ""
    raise CxrlabError(f"{run.path} ({origin}): {said}: nothing to compare; {run.subgroups_file.name} and the "
                      f"report left as they were{hint}")


def attribute_groups(columns: pd.DataFrame, by: list[str], age_bins: list[float] | tuple[float, ...],
                     origin: str) -> dict[str, np.ndarray]:
    """Each attribute's group per image: ``age`` binned by ``age_bins`` (an age the bins do not cover is one
    line naming ``origin``), the others as recorded (blank: ``unknown``)."""
    attrs = {}
    for a in by:
        if a == "age":
            ages = pd.to_numeric(columns["age"], errors="coerce").to_numpy(dtype=float)
            attrs[a] = age_groups(ages, list(age_bins), f"{origin}: age")
        else:
            attrs[a] = as_groups(columns[a].to_numpy())
    return attrs


def subgroups_run(run_dir: str | Path, by: list[str] | tuple[str, ...] = DEFAULT_BY,
                  age_bins: list[float] | tuple[float, ...] = DEFAULT_AGE_BINS, n_boot: int = 1000, seed: int = 0,
                  intersections: bool = True) -> SubgroupResult:
    """Subgroup analysis of a finished run's test split; writes ``RUN/subgroups.json``, the forest plots
    ``RUN/figures/subgroups_<label>.png`` and refreshes ``RUN/report.html``.

    Args:
        by: attributes to group by (:data:`ATTRIBUTES`); two-way intersections of them too.
        age_bins: age bin edges (``[0, 40, 60, 80, 120]``: 0-39, ..., 80-119); must cover every age.
        n_boot, seed: patient-level bootstrap resamples and their seed.
    """
    by = [b.strip() for b in by if b.strip()]
    unknown = [b for b in by if b not in ATTRIBUTES]
    if unknown or not by:
        raise CxrlabError(f"--by: unknown attribute {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"one or more of {', '.join(ATTRIBUTES)}")
    if n_boot < 10:
        raise CxrlabError(f"--n-boot must be >= 10 for a 95% CI (1000 is usual), got {n_boot}")
    run = run_folder(run_dir)
    rec = run.read_model_record()
    if rec.task == "multiclass":
        raise CxrlabError(f"{run.path}: subgroups needs a multi-label or binary run (a threshold per label); "
                          "this run is multi-class")
    if rec.threshold_rule == UNFINISHED_RULE:
        raise CxrlabError(f"{run.model_json}: thresholds not chosen on validation yet; finish training "
                          "(`cxrlab train --resume`) or run `cxrlab evaluate` first")
    test = run.read_predictions("test")
    columns, origin = _group_columns(run, test, by)
    attrs = attribute_groups(columns, by, age_bins, origin)
    _check_values(run, test, attrs, origin)
    y, p, patients = split_prediction_table(test, rec.labels)
    result = subgroup_analysis(y, p, rec.labels, rec.thresholds, attrs, patients, intersections=intersections,
                               n_boot=n_boot, seed=seed, threshold_rule=rec.threshold_rule,
                               age_bins=list(age_bins) if "age" in by else None)
    run.write_json(run.subgroups_file, result.to_dict())
    write_subgroup_figures(run, result)
    if run.config_file.is_file():
        render_report(run)
    return result


def write_subgroup_figures(run: RunFolder, result: SubgroupResult) -> list[Path]:
    """A forest plot per label: each group's AUC minus the rest's, with its 95% CI."""
    from cxrlab.report import plots_eval

    run.figures.mkdir(parents=True, exist_ok=True)
    out = []
    for lab in result.labels:
        rows = forest_rows(result, lab)
        if rows and np.isfinite([r[1] for r in rows]).any():
            out.append(plots_eval.forest(rows, run.figure("subgroups", figure_key(lab)),
                                         xlabel=f"{lab}: AUC of the group minus the rest"))
    return out
