"""What the external page and ``evaluate --on`` explain (a new user's finding 4): the run's own AUC of every
label, why an AUC is n/a, a small scored test split, thresholds recalibration kept, views the run's test
split lacks, labels of one class left out of the subgroups, one age binning, what the OOD score is.

One tiny run (simple_cnn, 32 px, 2 epochs on 200 nih14-phantom images) scored through the CLI on the
default test split of a 120-study chexpert phantom of site B with lateral views: 21 images, most labels
without positives, AP and LATERAL views the run's PA-only test split lacks.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from conftest import run_cli, train_tiny
from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.data.phantom_layouts.chexpert import write_phantom_chexpert
from cxrlab.evaluate.records import ExternalResult, SubgroupResult
from cxrlab.report import present
from cxrlab.report.external_report import SMALL_SCORED, scored_hint, subgroups_skipped, view_warning
from cxrlab.run import RunFolder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("external_page")
    root = write_phantom(out / "nih", n=200, size=48, seed=1, workers=1)
    run = train_tiny(root, out / "runs", "r", 0, image_size=32, width=4, epochs=2, batch_size=32, n_boot=20)
    target = write_phantom_chexpert(out / "cx", n=120, size=48, seed=2, lateral=True, uncertain_rule=None,
                                    workers=1, site="B")
    res = run_cli("evaluate", run, "--on", "chexpert", "--root", target, "--n-boot", 20, "--name", "small")
    assert res.exit_code == 0, res.output
    files = RunFolder(run).external_files("small")
    return {"run": RunFolder(run), "files": files, "result": ExternalResult.read(files["result"]),
            "said": " ".join(res.output.split()), "page": files["report"].read_text()}


def _section(page: str, title: str) -> str:
    return page.split(f"<h2>{title}</h2>", 1)[1].split("<h2>", 1)[0]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#x27;", "'").replace("&quot;", '"').replace("&gt;", ">").split())


def test_the_runs_own_auc_is_known_for_labels_the_target_lacks(small):
    from cxrlab.evaluate.evaluate import split_prediction_table
    from cxrlab.evaluate.shift import auc_with_ci

    res, run = small["result"], small["run"]
    lacking = [lab for lab in res.labels.values() if not lab.evaluable]
    assert {lab.model_label for lab in lacking} == {"Nodule", "Mass"}
    labels = run.read_model_record().labels
    y, p, g = split_prediction_table(run.read_predictions("test"), labels)
    for lab in lacking:
        j = labels.index(lab.model_label)
        assert lab.run_auc.defined
        assert lab.run_auc.value == pytest.approx(auc_with_ci(y[:, j], p[:, j], g, 20, 0)["value"])
        assert f"{lab.model_label} -> not evaluable (the target lacks it): run test {present.ci(lab.run_auc)}" \
            in small["said"]
    table = _text(_section(small["page"], "Transported results"))
    assert f"Nodule {present.ci(res.labels['Nodule'].run_auc)} not evaluable" in table


def test_an_auc_that_is_na_says_why(small):
    res = small["result"]
    one_class = [lab for lab in res.labels.values() if lab.evaluable and not lab.auc.defined]
    assert one_class, "the small target was meant to lack positives of some label"
    table = _text(_section(small["page"], "Transported results"))
    for lab in one_class:
        assert lab.positives == 0 and lab.n == res.n_images
        why = f"no positives among the {lab.n} scored images"
        assert f"{lab.model_label} -> {lab.target_column} ({lab.kind}): AUC n/a, {why}" in small["said"]
        assert f"{lab.model_label} {present.ci(lab.run_auc)} n/a ({why})" in table
    assert "(run test n/a)" not in small["said"]


def test_a_small_test_split_says_how_many_and_hints_all_images(small):
    res = small["result"]
    assert res.scored == "test split" and res.n_images < SMALL_SCORED
    line = f"only {res.n_images} images of {res.n_patients} patients scored"
    assert f"warning: {line}" in small["said"] and "--all-images" in small["said"]
    scored = _text(_section(small["page"], "Images scored"))
    assert line.capitalize() in scored and "--all-images scores every image" in scored
    assert scored_hint(dataclasses.replace(res, scored="all images")) == ""
    assert scored_hint(dataclasses.replace(res, n_images=SMALL_SCORED)) == ""


def test_kept_run_thresholds_are_said_on_the_page(small):
    res = small["result"]
    kept = {k: v.held_out for k, v in res.labels.items() if v.held_out and v.held_out["kept_run_threshold"]}
    assert kept, "the 20% slice of 12 patients was meant to lack positives of some label"
    text = _text(_section(small["page"], "Recalibrated results"))
    for lab, h in kept.items():
        assert h["fit_positives"] == 0
        line = re.search(rf"Kept the run's threshold: the fit slice of {h['fit_images']} images had 0 positives "
                         r"for ([^;]+);", text)
        assert line and lab in line.group(1).split(", "), text
    assert text.count("the run's kept") == len(kept)  # the recalibrated row of each says so too


def test_views_the_runs_test_split_lacks_are_warned_about(small):
    res = small["result"]
    views = res.composition["view"]
    new = {c: b for c, (a, b) in views.items() if a == 0 and b > 0}
    assert "LATERAL" in new and views["PA"][0] == 1.0
    warning = view_warning(res)
    for view, share in new.items():
        assert f"{view} {present.percent(share)}" in warning
    assert "the target has views the run's test split lacks" in small["said"] and "-o views=frontal" in small["said"]
    assert "Views the run was not tested on" in small["page"]
    same = {"view": {c: [b, b] for c, (_, b) in views.items()}}
    assert view_warning(dataclasses.replace(res, composition=same)) == ""


def test_subgroups_leave_out_labels_of_one_class_in_one_line(small):
    res, files = small["result"], small["files"]
    sub = SubgroupResult.read(files["subgroups"])
    both = [k for k, v in res.labels.items() if v.evaluable and v.auc.defined]
    left = [k for k, v in res.labels.items() if v.evaluable and not v.auc.defined]
    assert both and left
    assert sub.labels == both
    section = _section(small["page"], "Subgroups")
    for lab in left:
        assert f"<h3>{lab}</h3>" not in section
        assert not (files["figures"] / f"subgroups_{lab}.png").exists()
    line = f"left out {', '.join(left)} (no positives among the {res.n_images} scored images): one class only"
    assert line in _text(section)
    every = subgroups_skipped(res, left, every=True)
    assert every.startswith("subgroups: skipped, every label has one class only") and left[0] in every


def test_one_age_binning_on_the_page_the_subgroups_default(small):
    from cxrlab.evaluate.shift import age_bin
    from cxrlab.evaluate.subgroups import age_groups
    from cxrlab.workflows.subgroups import DEFAULT_AGE_BINS

    sub = SubgroupResult.read(small["files"]["subgroups"])
    ages = set(small["result"].composition["age"]) - {"unknown"}
    assert ages and ages <= set(age_groups(np.arange(0, 120, 1.0), list(DEFAULT_AGE_BINS)))
    assert {g for g in sub.groupings["age"].groups if g != "unknown"} <= ages
    assert [age_bin(a) for a in (0, 17, 39, 40, 80, 119.5)] == list(
        age_groups(np.array([0, 17, 39, 40, 80, 119.5]), list(DEFAULT_AGE_BINS)))
    assert age_bin(130) == "120+" and age_bin(None) == "unknown"
    assert "18-39" not in small["page"]


def test_the_ood_score_is_said_to_be_a_mahalanobis_distance(small):
    assert small["result"].ood is not None
    text = _text(_section(small["page"], "Composition shift"))
    assert "OOD score > " in text
    assert "OOD score: the Mahalanobis distance of an image's penultimate-layer features" in text
    assert "docs/serve.md" in text
