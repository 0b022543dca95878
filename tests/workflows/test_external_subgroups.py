"""Issue 19 on the external page: ``evaluate --on`` runs the subgroup analysis on the target's scored
images at the run's thresholds (``external/<name>/subgroups.json``, a forest plot per label, a section of
the page); a target without demographics says so in one line.  Shares test_external's run and targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from test_external import external  # noqa: F401  (the module fixture: one run, site A and B targets)

from conftest import run_cli
from cxrlab.evaluate.records import SubgroupResult
from cxrlab.run import RunFolder


def _norm(d):  # the file stores NaN as null
    return json.loads(json.dumps(d, sort_keys=True).replace("NaN", "null"))


def test_site_b_page_shows_the_subgroups_and_the_record_round_trips(external):  # noqa: F811
    run = RunFolder(external["run"])
    files = run.external_files("B")
    res = external["results"]["B"]
    sub = SubgroupResult.read(files["subgroups"])
    assert sub is not None
    assert _norm(SubgroupResult.from_dict(sub.to_dict()).to_dict()) == _norm(json.loads(files["subgroups"].read_text()))
    # the target's scored images, the evaluable labels only, at the run's own thresholds (one for every group)
    assert sub.n == res.n_images and sub.patients == res.n_patients
    assert sub.labels == res.evaluable and "Nodule" not in sub.labels
    rec = run.read_model_record()
    assert sub.thresholds == {lab: rec.thresholds[lab] for lab in sub.labels}
    one_way = {g.name for g in sub.groupings.values() if len(g.attributes) == 1}
    assert {"sex", "age"} <= one_way  # the chexpert layout records both
    sexes = set(sub.groupings["sex"].groups)
    table = pd.read_csv(files["predictions"])
    assert sexes == set(table["sex"].dropna().astype(str))
    # group image counts add up to the scored images
    assert sum(g.images for g in sub.groupings["sex"].groups.values()) == res.n_images
    for lab in sub.labels:
        assert (files["figures"] / f"subgroups_{lab}.png").is_file()
    page = files["report"].read_text()
    assert "<h2>Subgroups</h2>" in page
    for sex in sexes:
        assert f"sex = {sex}" in page
    assert "AUC gap per group" in page  # the forest plots, embedded
    assert "transported, not the recalibrated" in page


def test_clean_target_has_no_sex_gap_excluding_zero_for_most_labels(external):  # noqa: F811
    """No subgroup effect is planted on the site-A phantom: a sex gap whose CI excludes 0 is rare."""
    sub = SubgroupResult.read(RunFolder(external["run"]).external_files("A")["subgroups"])
    excluding = []
    for lab in sub.labels:
        for g in sub.groupings["sex"].groups.values():
            gap = g.per_label[lab].vs_rest.get("auc")
            if gap is not None and np.isfinite(gap.diff.low):
                excluding.append(gap.diff.low > 0 or gap.diff.high < 0)
    assert excluding and np.mean(excluding) <= 0.5, excluding


def _plain_target(external, tmp_path):  # noqa: F811
    """The site-B images as a ``csv`` target with labels and patients only: no sex, age or view."""
    root = external["roots"]["B"]
    chex = pd.read_csv(root / "train.csv") if (root / "train.csv").is_file() else None
    if chex is None:
        chex = pd.read_csv(next(root.rglob("train.csv")))
    base = next(p for p in [root, root.parent] if (p / chex["Path"].iloc[0]).is_file())
    rows = chex.head(60)
    table = pd.DataFrame({"path": [str(base / p) for p in rows["Path"]],
                          "patient": [p.split("/")[-3] for p in rows["Path"]],
                          "Cardiomegaly": rows["Cardiomegaly"].fillna(0).clip(lower=0).astype(int),
                          "Effusion": rows["Pleural Effusion"].fillna(0).clip(lower=0).astype(int)})
    target = tmp_path / "plain"
    target.mkdir()
    table.to_csv(target / "labels.csv", index=False)
    return target


def test_a_target_without_demographics_says_so_in_one_line(external, tmp_path, monkeypatch):  # noqa: F811
    target = _plain_target(external, tmp_path)
    run = RunFolder(external["run"])
    files = run.external_files("plain")
    files["subgroups"].parent.mkdir(parents=True, exist_ok=True)
    files["subgroups"].write_text("{}")  # a stale record of an earlier evaluation is removed, never shown
    monkeypatch.setenv("CXRLAB_QUIET", "0")
    res = run_cli("evaluate", run.path, "--on", "csv", "--root", target, "--all-images", "--name", "plain",
                  "--n-boot", 20, "--no-duplicate-check")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert said.count("subgroups: skipped") == 1 and "records no sex, age, view" in said, res.output
    assert not files["subgroups"].exists()
    page = files["report"].read_text()
    assert "<h2>Subgroups</h2><p>subgroups: skipped" in page


def test_subgroup_attributes_named_wrong_or_missing_are_one_line(external, tmp_path):  # noqa: F811
    run = external["run"]
    res = run_cli("evaluate", run, "--on", "chexpert", "--root", external["roots"]["B"], "--subgroups", "race")
    assert res.exit_code == 2 and "--subgroups: unknown attribute 'race'" in res.output, res.output
    target = _plain_target(external, tmp_path)
    res = run_cli("evaluate", run, "--on", "csv", "--root", target, "--all-images", "--subgroups", "sex,age")
    assert res.exit_code == 2, res.output
    assert "--subgroups 'sex', 'age': the target does not record it" in res.output and "Traceback" not in res.output


def test_subgroups_option_chooses_the_attributes(external):  # noqa: F811
    from cxrlab.workflows.external import evaluate_external

    evaluate_external(external["run"], "chexpert", external["roots"]["B"], name="B_sex", all_images=True,
                      n_boot=20, duplicate_check=False, recalibrate_fraction=0, subgroups=["sex"])
    sub = SubgroupResult.read(RunFolder(external["run"]).external_files("B_sex")["subgroups"])
    assert list(sub.groupings) == ["sex"] and sub.age_bins is None
