"""The result records: one name for an estimate and its CI, versions, older files read in one place."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cxrlab.evaluate.evaluate import (
    evaluate_multiclass,
    evaluate_multilabel,
    evaluate_tables,
    evaluation_of,
    split_prediction_table,
)
from cxrlab.evaluate.metrics import per_label_auc
from cxrlab.evaluate.records import (
    Comparison,
    Estimate,
    Evaluation,
    Localization,
    RunSummary,
    Uncertainty,
    fresh,
)
from cxrlab.runio import json_safe
from cxrlab.tables import prediction_table


def _table(y, p, labels):
    frame = pd.DataFrame({"image": [f"i{i}" for i in range(len(y))], "patient": [f"p{i // 2}" for i in range(len(y))]})
    return prediction_table(frame, y, p, labels)


def _same(a, b, path=""):
    """Equal JSON trees, NaN equal to NaN and to null (a file stores NaN as null)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b, strict=True)):
            _same(x, z, f"{path}[{i}]")
    elif a is None or (isinstance(a, float) and math.isnan(a)):
        assert b is None or (isinstance(b, float) and math.isnan(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def tables():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random((60, 2)), 0, 1)
    yc = np.eye(3)[rng.integers(0, 3, 60)]
    pc = np.clip(0.5 * yc + rng.random((60, 3)), 0, None)
    return {"multilabel": (_table(y, p, ["A", "B"]), ["A", "B"]), "binary": (_table(y[:, :1], p[:, :1], ["A"]), ["A"]),
            "multiclass": (_table(yc, pc / pc.sum(1, keepdims=True), list("abc")), list("abc"))}


@pytest.mark.parametrize("task", ["multilabel", "binary", "multiclass"])
def test_evaluation_json_keeps_its_keys_and_gains_a_version(tables, task):
    table, labels = tables[task]
    raw = (evaluate_multiclass(table, labels, n_boot=30) if task == "multiclass"
           else evaluate_multilabel(table, labels, table, n_boot=30, operating=True))  # every label's point
    written = evaluate_tables(table, labels, task, table, n_boot=30)
    assert written.pop("format_version") == Evaluation.FORMAT_VERSION and written.pop("task") == task
    assert written.pop("calibration_effect")["method"] == "none"  # added by the calibration issue (19)
    _same(raw, written)  # every key older readers and the study code read is still there, same numbers
    back = Evaluation.from_dict(json.loads(json.dumps(json_safe(evaluate_tables(table, labels, task, table, 30)))))
    _same(back.to_dict(), evaluate_tables(table, labels, task, table, n_boot=30))  # a file reads back whole
    assert not back.outdated and back.task == task


def test_an_estimate_is_read_from_auc_or_value_keys_and_from_ci_lists():
    for d in ({"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9}, {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}):
        e = Estimate.from_dict(d)
        assert (e.value, e.low, e.high) == (0.8, 0.7, 0.9) and e.has_ci
    e = Estimate.from_dict({"auc": None, "ci_low": None, "ci_high": None})
    assert math.isnan(e.value) and not e.defined and not e.has_ci
    assert Estimate.of(0.5, [0.4, 0.6]).interval() == [0.4, 0.6]
    assert not Estimate.of(0.5, None).has_ci


def test_a_format_1_evaluation_reads_through_the_record_and_says_it_is_outdated(tables):
    table, labels = tables["binary"]
    old = evaluate_tables(table, labels, "binary", table, n_boot=30)
    for k in ("format_version", "task"):
        old.pop(k)
    for v in old["per_label"].values():  # as cxrlab 0.1 wrote it before AP, PPV and operating points
        for k in ("operating_point", "average_precision", "ppv", "threshold_rule"):
            v.pop(k)
    ev = Evaluation.from_dict(old, task="binary")
    assert ev.outdated and ev.format_version == 1
    (lab, d), = ev.per_label.items()
    assert ev.operating_point is None and math.isnan(d.average_precision) and math.isnan(d.ppv)
    assert d.threshold_rule == "rule not recorded"
    assert ev.headline[0] == "AUC" and ev.headline[1].value == d.auc.value  # one label: its AUC, not "macro"
    multiclass = evaluate_tables(*tables["multiclass"], "multiclass", n_boot=30)
    multiclass.pop("task")
    assert Evaluation.from_dict(multiclass).task == "multiclass"  # format 1 had no task: inferred from its shape


def test_headline_and_thresholds_come_from_the_record(tables):
    ml = evaluation_of(*tables["multilabel"], "multilabel", tables["multilabel"][0], n_boot=30)
    assert ml.headline == ("macro AUC", ml.macro_auc) and ml.single is None
    assert set(ml.thresholds) == {"A", "B"} and ml.micro_auc.n_boot == 30
    mc = evaluation_of(*tables["multiclass"], "multiclass", n_boot=30)
    assert mc.headline == ("accuracy", mc.accuracy) and set(mc.aucs) == set("abc") and mc.thresholds == {}
    b = evaluation_of(*tables["binary"], "binary", tables["binary"][0], n_boot=30)
    assert b.operating_point is not None and set(b.operating_point.rates) == {"accuracy", "sensitivity",
                                                                             "specificity", "ppv", "npv"}


def test_run_summary_takes_its_aucs_from_the_evaluation_and_keeps_unknown_keys(tables):
    ev = evaluation_of(*tables["multilabel"], "multilabel", tables["multilabel"][0], n_boot=30)
    table, labels = tables["multilabel"]
    y, p, _ = split_prediction_table(table, labels)
    assert ev.aucs == per_label_auc(y, p, labels)  # the numbers training used to compute a second time
    s = RunSummary.of("r", ev, epochs_run=2, wall_seconds=1.5)
    d = s.to_dict()
    assert d["macro_auc"] == ev.macro_auc.value and d["per_label_auc"] == ev.aucs
    assert d["macro_auc_ci"] == [ev.macro_auc.low, ev.macro_auc.high] and d["format_version"] == RunSummary.FORMAT_VERSION
    old = {"name": "r", "macro_auc": 0.7, "per_label_auc": {"A": 0.7}, "report": "x/report.html"}  # 0.1, demo
    back = RunSummary.from_dict(old)
    assert back.format_version == 1 and not back.macro_auc.has_ci and back.to_dict()["report"] == "x/report.html"


def test_localization_uncertainty_and_comparison_records_read_their_files():
    found = {"method": "gradcam++", "threshold": 0.5, "iou": 0.1, "cases": 2, "mean_accuracy": 0.5,
             "random_mean_accuracy": 0.1, "mean_precision": 0.4, "random_mean_precision": 0.05,
             "per_class": {"Mass": {"n": 2, "accuracy": 0.5, "random_accuracy": 0.1, "precision": 0.4,
                                    "random_precision": 0.05, "mean_box_area": 90.0}}}
    loc = fresh(Localization, found, key="gradcam++_bbox", matching={"boxes": 3, "matched": 2})
    d = loc.to_dict()
    assert d["key"] == "gradcam++_bbox" and d["format_version"] == Localization.FORMAT_VERSION
    assert d["box_file"] is None and d["per_class"]["Mass"]["mean_box_area"] == 90.0
    assert Localization.from_dict(found, key="gradcam").key == "gradcam"  # format 1: key from its file name
    assert Localization.from_dict(found).format_version == 1
    unc = fresh(Uncertainty, {"threshold": 0.1, "uncertain_fraction": 0.2, "per_label": {
        "A": {"uncertain_fraction": 0.2, "mean_std": 0.05, "auc_all": 0.8, "auc_confident": 0.85,
              "auc_uncertain": None}}}, passes=5, images=10)
    assert unc.to_dict()["passes"] == 5 and math.isnan(unc.per_label["A"].auc_uncertain)
    cmp = Comparison.from_dict({"run_a": "a", "run_b": "b", "n": 10, "note": "",
                                "per_label": {"A": {"auc_a": 0.8, "auc_b": 0.7, "diff": 0.1, "se": 0.05, "p": 0.04,
                                                    "p_holm": 0.04}},
                                "macro_auc_difference": {"diff_mean": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p": 0.0,
                                                         "n_boot": 50}})
    assert cmp.macro.value == 0.1 and cmp.p_resolution == 1 / 50  # format 1: no diff, no p_resolution
    assert cmp.significant == ["A"] and cmp.per_label["A"].difference.low == pytest.approx(0.1 - 1.96 * 0.05, 1e-3)
