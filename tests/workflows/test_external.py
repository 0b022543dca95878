"""External validation (issue 18): a run trained on the nih14 phantom scored on a chexpert-layout phantom,
with the site shift planted (site B) and without it (site A); the phantom's site option itself."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import browser_page, needs_browser, run_cli, screenshots, train_tiny
from cxrlab.data.phantom import LABELS, render
from cxrlab.data.phantom_dataset import write_phantom, write_phantom_dataset
from cxrlab.data.phantom_layouts.chexpert import UncertainRule, write_phantom_chexpert
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.records import ExternalResult
from cxrlab.run import RunFolder

#: Certain labels and no faint / look-alike findings: the chexpert-layout phantom differs from the
#: nih14 one by layout and label names only (plus the site, when planted).
CLEAR = UncertainRule(mild=0, lookalike=0, p_mild=0, p_lookalike=0, p_clear=0)


# ---- the phantom's site option ------------------------------------------------------------

def test_site_a_is_the_default_phantom_and_site_b_differs():
    for i in range(3):
        a, d = render(i, 64, 0, site="A"), render(i, 64, 0)
        assert np.array_equal(a.pixels, d.pixels) and a.labels == d.labels
    a = np.stack([render(i, 64, 0).pixels for i in range(6)]).astype(float)
    b = np.stack([render(i, 64, 0, site="B").pixels for i in range(6)]).astype(float)
    assert b.mean() > a.mean() + 30  # over-exposed
    assert b[:, 2:6, 2:12].std() > a[:, 2:6, 2:12].std()  # noisier corner
    top_left = (b[:, 2:6, 2:12] > 230).mean(axis=(1, 2))  # burned-in text in every image
    assert (top_left > 0.1).all()


def test_site_b_halves_the_prevalence_and_boxes_stay_in_the_image():
    n = 300
    a = sum(sum(render(i, 32, 4).labels.values()) for i in range(n))
    b = sum(sum(render(i, 32, 4, site="B").labels.values()) for i in range(n))
    assert 0.35 < b / a < 0.65, (a, b)
    for i in range(20):
        for _, (x, y, w, h) in render(i, 64, 4, site="B").boxes:
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64 and y + h <= 64


def test_cli_writes_a_chexpert_phantom_of_another_site(tmp_path):
    res = run_cli("phantom", "--out", tmp_path / "b", "--kind", "chexpert", "--n", 6, "--size", 32,
                  "--site", "B", "--workers", 1)
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "b" / "CheXpert-v1.0-small" / "phantom.json").read_text())
    assert meta["site"]["name"] == "B"
    bad = run_cli("phantom", "--out", tmp_path / "c", "--site", "Z", "--n", 4, "--size", 32)
    assert bad.exit_code == 2 and "unknown site 'Z'" in bad.output


# ---- the run on another site --------------------------------------------------------------

@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A small CNN trained on the nih14 phantom, scored on chexpert-layout phantoms of site A and B."""
    from cxrlab.workflows.external import evaluate_external

    out = tmp_path_factory.mktemp("external")
    root = write_phantom(out / "nih", n=480, size=64, seed=1, workers=1)
    run = train_tiny(root, out / "runs", "r", 0, image_size=48, width=8, epochs=5, batch_size=32, n_boot=50)
    results, roots = {}, {}
    for site in ("A", "B"):
        roots[site] = write_phantom_chexpert(out / f"cx{site}", n=300, size=64, seed=2, lateral=False,
                                             uncertain_rule=CLEAR, workers=1, site=site)
        results[site] = evaluate_external(run, "chexpert", roots[site], name=site, all_images=True, n_boot=200)
    return {"run": run, "nih": root, "roots": roots, "results": results, "out": out}


def test_label_map_names_the_rename_and_the_missing_labels(external):
    res = external["results"]["A"]
    eff = res.labels["Effusion"]
    assert (eff.target_column, eff.canonical, eff.kind) == ("Pleural Effusion", "Pleural Effusion", "renamed")
    assert res.labels["Cardiomegaly"].kind == "exact"
    for lab in ("Nodule", "Mass"):  # CheXpert has no such column: not evaluable, never negatives
        assert not res.labels[lab].evaluable and res.labels[lab].n == 0
    table = pd.read_csv(RunFolder(external["run"]).external_files("A")["predictions"])
    assert table["Nodule"].isna().all() and table["Mass"].isna().all()
    assert {"Edema", "Atelectasis", "Lung Lesion"} <= set(res.target_only)
    assert "Pleural Effusion" not in res.target_only


def test_auc_drops_with_the_site_shift_and_not_without_it(external):
    a, b = external["results"]["A"], external["results"]["B"]
    assert a.run_macro_auc.value == b.run_macro_auc.value  # the same labels of the same run
    own = a.run_macro_auc
    assert b.macro_auc.high < own.value, (b.macro_auc, own)  # planted: lower, CI excluding the own estimate
    assert a.macro_auc.high >= own.low and own.high >= a.macro_auc.low, (a.macro_auc, own)  # CIs overlap


def test_ood_share_rises_with_the_shift(external):
    a, b = external["results"]["A"].ood, external["results"]["B"].ood
    assert b["target_share"] > a["target_share"] + 0.3
    assert b["target_share"] > b["run_share"] + 0.3


def test_recalibration_moves_the_positive_rate_toward_the_prevalence(external):
    res = external["results"]["B"]
    gaps = []
    for lab in res.evaluable:
        h = res.labels[lab].held_out
        assert h["fit_images"] + h["n"] == res.n_images  # fitted on a slice, scored on the rest
        before = abs(h["transported"]["predicted_positive"] - h["prevalence"])
        after = abs(h["recalibrated"]["predicted_positive"] - h["prevalence"])
        gaps.append((before, after))
    assert np.mean([a for _, a in gaps]) < np.mean([b for b, _ in gaps]), gaps
    fit_patients = res.recalibration["fit_patients"]
    assert 0 < fit_patients < res.n_patients


def test_recalibration_slice_is_patient_disjoint(external):
    from cxrlab.evaluate.shift import patient_slice

    table = pd.read_csv(RunFolder(external["run"]).external_files("B")["predictions"])
    groups = table["patient"].astype(str).to_numpy()
    fit = patient_slice(groups, 0.2, 0)
    assert not set(groups[fit]) & set(groups[~fit])
    assert 0.1 < fit.mean() < 0.3


def test_predictions_are_what_cxrlab_predict_gives_for_the_same_files(external):
    from cxrlab.workflows.predict import predict_images

    run = RunFolder(external["run"])
    table = pd.read_csv(run.external_files("B")["predictions"])
    root = external["roots"]["B"]
    rows = table.head(8)
    paths = [(root.parent / p) if not (root / p).is_file() else root / p for p in rows["image"]]
    direct = predict_images(run.path, paths)
    cols = [f"prob_{lab}" for lab in LABELS]
    np.testing.assert_allclose(direct[cols].to_numpy(), rows[cols].to_numpy(), rtol=0, atol=1e-6)


def test_record_round_trips_and_the_page_shows_the_tables(external):
    run = RunFolder(external["run"])
    files = run.external_files("B")
    back = ExternalResult.read(files["result"])
    def norm(d):  # the file stores NaN as null
        return json.loads(json.dumps(d, sort_keys=True).replace("NaN", "null"))

    assert norm(back.to_dict()) == norm(external["results"]["B"].to_dict())
    assert back.labels["Effusion"].transported.operating_point.rates["ppv"].defined
    assert run.external_results() == {"A": run.external_files("A")["result"], "B": files["result"]}
    page = files["report"].read_text()
    for text in ("Label map", "Pleural Effusion", "renamed", "not evaluable", "Composition shift", "OOD flagged",
                 "Transported results", "Recalibrated results", "never scored"):
        assert text in page, text
    assert "external" in RunFolder.DERIVED  # retraining removes it with the other derived files


# ---- bad input: one line each ---------------------------------------------------------------

def test_a_target_whose_labels_map_to_none_of_the_runs(external, tmp_path):
    ps = write_phantom_dataset("kermany", tmp_path / "k", n=24, size=32, seed=0, workers=1)
    res = run_cli("evaluate", external["run"], "--on", "kermany", "--root", ps.root, "--all-images")
    assert res.exit_code == 2, res.output
    assert "none of the run's labels" in res.output and "Traceback" not in res.output


def test_a_root_not_in_the_sources_layout(external):
    res = run_cli("evaluate", external["run"], "--on", "chexpert", "--root", external["nih"])
    assert res.exit_code == 2 and "does not match the 'chexpert' layout" in res.output, res.output
    assert "train.csv not found" in res.output


def test_a_run_of_another_task(external, tmp_path):
    other = tmp_path / "multiclass_run"
    shutil.copytree(external["run"], other, ignore=shutil.ignore_patterns("external"))
    info = json.loads((other / "model.json").read_text())
    info["task"] = "multiclass"
    (other / "model.json").write_text(json.dumps(info))
    res = run_cli("evaluate", other, "--on", "chexpert", "--root", external["roots"]["A"])
    assert res.exit_code == 2 and "a multiclass run" in res.output, res.output


def test_on_without_root_and_a_bad_fraction(external):
    res = run_cli("evaluate", external["run"], "--on", "chexpert")
    assert res.exit_code == 2 and "--on SOURCE and --root DIR" in res.output
    with pytest.raises(CxrlabError, match="recalibrate-fraction"):
        from cxrlab.workflows.external import evaluate_external

        evaluate_external(external["run"], "chexpert", external["roots"]["A"], recalibrate_fraction=1.5)


def test_the_macro_auc_averages_the_same_labels_on_both_sides(external):
    """A label without positives among the scored target images drops out of both means, not the target's only
    (a new user saw 2 labels on the target against 4 on the run's side, headlined as a -0.457 drop)."""
    for res in external["results"].values():
        labs = res.macro_labels
        assert labs and set(labs) <= set(res.evaluable)
        assert res.run_macro_auc.value == pytest.approx(np.mean([res.labels[lab].run_auc.value for lab in labs]))
        assert res.macro_auc.value == pytest.approx(np.mean([res.labels[lab].auc.value for lab in labs]))
        for lab in set(res.evaluable) - set(labs):  # left out: one side cannot score it
            assert not (res.labels[lab].auc.defined and res.labels[lab].run_auc.defined), lab
    page = RunFolder(external["run"]).external_files("B")["report"].read_text()
    assert "labels both sides can score" in page


def test_a_label_without_positives_on_the_target_leaves_both_means(external, tmp_path):
    from cxrlab.workflows.external import evaluate_external

    root = write_phantom_chexpert(tmp_path / "few", n=24, size=64, seed=0, lateral=False, uncertain_rule=CLEAR,
                                  workers=1, site="B")
    res = evaluate_external(external["run"], "chexpert", root, name="few", all_images=True, n_boot=50,
                            duplicate_check=False, recalibrate_fraction=0)
    left_out = [lab for lab in res.evaluable if lab not in res.macro_labels]
    assert left_out, "the small target was meant to lack positives of some label"
    for lab in left_out:
        assert not res.labels[lab].auc.defined and res.labels[lab].run_auc.defined  # the run side could score it
    assert res.run_macro_auc.value == pytest.approx(np.mean([res.labels[lab].run_auc.value
                                                             for lab in res.macro_labels]))


@needs_browser
def test_the_page_opens_in_headless_chromium_with_its_figures(external, tmp_path):
    page_file = RunFolder(external["run"]).external_files("B")["report"]
    with browser_page(page_file, width=1300) as (page, errors):
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        headings = page.locator("h2").all_inner_texts()
        tables = page.locator("table").count()
        page.screenshot(path=str(screenshots(tmp_path) / "external_report.png"), full_page=True)
    assert errors == []
    for head in ("Label map", "Images scored", "Composition shift", "Transported results", "Recalibrated results",
                 "Subgroups"):
        assert any(h.startswith(head) for h in headings), (head, headings)
    assert tables >= 6
    assert images and all(ok and width > 200 for _, ok, width in images), images  # the forest plots load
