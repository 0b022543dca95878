"""The cross-site study preset (issue 18): train on each site, test on every site, leave one site out.

Its phantom form has the shift planted: three phantom hospitals, one in the CheXpert layout with site B's
acquisition (over-exposed, noisy, tight field of view, burned-in text, half the prevalence) and one in the
NIH layout with site C's.  A model trained at one site must lose AUC at the others, and the model trained
at site B must lose to each site's own model on that site's images (paired CI excluding zero).  The
control is the same study with three site-A phantoms of the NIH layout: no site differs, so the own-site
model is not better than the others on the same images.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import browser_page, needs_browser, run_cli, screenshots
from cxrlab.errors import ConfigError, CxrlabError
from cxrlab.evaluate.records import StudyResult
from cxrlab.studies.spec import list_presets, load_study
from cxrlab.workflows.study import plan_study, run_study

SITES = ("nih", "chexpert", "mimic")


def _preset_tree() -> dict:
    return yaml.safe_load(list_presets()["cross_site"].read_text())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cross_site")
    report = run_study("cross_site", phantom=True, out=out)
    return report.parent, StudyResult.read(report.parent / "study.json")


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """The same study with three phantom hospitals drawn alike (site A, NIH layout): nothing planted."""
    out = tmp_path_factory.mktemp("cross_site_control")
    tree = _preset_tree()
    tree["name"] = "cross_site_control"
    tree["leave_one_out"] = False  # the check reads the single-site cells only
    tree["phantom"]["sites"] = {s: {"kind": "nih14", "seed": 11 + k} for k, s in enumerate(SITES)}
    path = out / "control.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    report = run_study(path, phantom=True, out=out)
    return StudyResult.read(report.parent / "study.json")


def test_the_preset_makes_one_cell_per_site_and_one_per_site_left_out():
    spec, _ = load_study("cross_site")
    cells = {c.name: c.sites for c in spec.grid()}
    assert cells == {"train=nih": ("nih",), "train=chexpert": ("chexpert",), "train=mimic": ("mimic",),
                     "without=nih": ("chexpert", "mimic"), "without=chexpert": ("nih", "mimic"),
                     "without=mimic": ("nih", "chexpert")}


def test_cells_train_on_their_sites_with_each_sites_own_label_names(planted):
    folder, _ = planted
    plan = plan_study("cross_site", phantom=True, out=folder.parent)
    by_name = {c.name: c.cfg for c in plan.cells}
    assert all(c.status == "done" for c in plan.cells)  # a rerun trains nothing
    nih = by_name["train=nih"].data.sources
    assert [s.name for s in nih] == ["nih"] and "Effusion" in nih[0].labels  # NIH's spelling
    chexpert = by_name["train=chexpert"].data.sources[0]
    assert "Pleural Effusion" in chexpert.labels and chexpert.source == "chexpert"
    assert [s.name for s in by_name["without=nih"].data.sources] == ["chexpert", "mimic"]
    assert by_name["train=nih"].data.labels == ["Cardiomegaly", "Pleural Effusion", "Consolidation"]


def test_every_cell_is_scored_on_every_site_and_the_diagonal_is_its_own_test_split(planted):
    _, res = planted
    t = res.transfer
    assert t is not None and t.sites == list(SITES) and not t.missing
    assert len(t.entries) == 6 * 3
    for cell, on in t.trained_on.items():
        for site in SITES:
            e = t.entry(cell, site)
            assert e.own == (site in on) and e.macro.has_ci and e.n_images > 40, (cell, site)
            assert e.duplicates == 0  # distinct phantom images: no copy of a training image
    for site in SITES:  # a column holds the same images for every row
        assert len({t.entry(c, site).n_images for c in t.cells}) == 1
        own = t.entry(f"train={site}", site).macro.value
        # scored through `evaluate --on` exactly as the cell's own test evaluation scored it
        assert own == pytest.approx(res.cells[f"train={site}"].macro_auc.value, abs=1e-6)


def test_planted_site_shift_drops_auc_away_from_the_training_site(planted):
    _, res = planted
    t = res.transfer
    for site in SITES:  # each single-site model is best on its own site
        own = t.entry(f"train={site}", site).macro.value
        others = [t.entry(f"train={site}", s).macro.value for s in SITES if s != site]
        assert own > max(others) + 0.05, (site, own, others)
    by_pair = {(c["site"], c["b"]): c for c in t.comparisons}
    assert len(t.comparisons) == 3 * 3  # per site: the two other single-site models and the one left out
    for site in ("nih", "mimic"):  # site B's model on the others' images: lower, paired CI excluding zero
        d = by_pair[site, "train=chexpert"]["macro_auc_difference"]
        assert d["ci_low"] > 0, (site, d)
        assert by_pair[site, "train=chexpert"]["n"] == t.entry("train=chexpert", site).n_images


def _gaps(t) -> list[float]:
    """Each single-site model's own-site macro AUC minus its macro AUC on each other site."""
    return [t.entry(f"train={site}", site).macro.value - t.entry(f"train={site}", s).macro.value
            for site in SITES for s in SITES if s != site]


def test_no_drop_without_a_site_shift(control, planted):
    # Two models trained apart also differ by chance (sample, seed), on the same images, in either direction:
    # a site effect is the drop across the whole matrix, measured by the mean gap.
    control_gap, planted_gap = np.mean(_gaps(control.transfer)), np.mean(_gaps(planted[1].transfer))
    assert abs(control_gap) < 0.05, _gaps(control.transfer)
    assert planted_gap > 0.15, _gaps(planted[1].transfer)


def test_the_report_shows_the_matrix_the_tests_and_the_heat_map(planted):
    folder, res = planted
    html = (folder / "report.html").read_text()
    for text in ("Across sites: macro AUC", "(own)", "Own site vs other sites, on the same images",
                 "DeLong per label (Holm p)", "Across sites per label", "without=nih (chexpert, mimic)"):
        assert text in html, text
    assert "Tests against the baseline" not in html  # cells of other sites are not compared on one test split
    md = (folder / "report.md").read_text()
    assert "| train=nih |" in md
    figures = sorted(p.name for p in (folder / "figures").iterdir())
    assert "across_sites_macro_auc_trained_on_rows_x_tested_on_columns.png" in figures
    assert all(ch not in name for name in figures for ch in ":(),")
    back = StudyResult.from_dict(json.loads((folder / "study.json").read_text()))
    assert back.transfer.to_dict() == res.transfer.to_dict()


def test_a_rerun_scores_nothing_again(planted):
    from cxrlab.workflows.study import run_transfers

    folder, _ = planted
    plan = plan_study("cross_site", phantom=True, out=folder.parent)
    assert run_transfers(plan) == []
    shutil.rmtree(folder / "runs" / "train=nih" / "external" / "mimic")
    assert run_transfers(plan) == ["train=nih@mimic"]


# ---- bad input: one line each ---------------------------------------------------------------

def test_a_real_data_run_needs_a_folder_per_site(tmp_path):
    r = run_cli("study", "run", "cross_site", "--out", tmp_path)
    assert r.exit_code == 2 and "no folder for site nih, chexpert, mimic" in r.stderr, r.stderr
    r = run_cli("study", "run", "cross_site", "--root", "/data/nih", "--out", tmp_path)
    assert r.exit_code == 2 and "give --root SITE=DIR for each of its sites (nih, chexpert, mimic)" in r.stderr
    r = run_cli("study", "run", "cross_site", "--root", "padchest=/data/p", "--out", tmp_path)
    assert r.exit_code == 2 and "--root padchest=/data/p" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(CxrlabError, match="no folder for site chexpert, mimic"):
        plan_study("cross_site", root=["nih=/data/nih"], out=tmp_path)


def test_a_site_folder_not_in_its_layout_is_one_line(tmp_path):
    roots = ["nih=" + str(tmp_path / "nih"), "chexpert=" + str(tmp_path), "mimic=" + str(tmp_path)]
    (tmp_path / "nih").mkdir()
    r = run_cli("study", "run", "cross_site", *sum((["--root", x] for x in roots), []), "--out", tmp_path / "s")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(tmp_path / "nih") in r.stderr


def test_study_files_with_sites_are_checked(tmp_path):
    tree = _preset_tree()
    bad = tmp_path / "bad.yaml"
    for change, message in [({"axes": {"data.image_size": [32]}}, "drop axes and cells"),
                            ({"sites": {"nih": {"source": "nih14"}}}, "two or more sites"),
                            ({"sites": {"a b": {"source": "nih14"}, "c": {"source": "nih14"}}}, "site names"),
                            ({"phantom": {**tree["phantom"], "sites": {"nih": {}}}}, "phantom.sites must name")]:
        bad.write_text(yaml.safe_dump({**tree, **change}, sort_keys=False))
        with pytest.raises(ConfigError, match=message):
            load_study(bad)
    two = {**tree, "sites": {k: tree["sites"][k] for k in ("nih", "chexpert")}, "phantom": None}
    bad.write_text(yaml.safe_dump(two, sort_keys=False))
    names = [c.name for c in load_study(bad)[0].grid()]
    assert names == ["train=nih", "train=chexpert"]  # two sites: leaving one out is the other's cell


@needs_browser
def test_the_report_opens_in_headless_chromium_with_the_heat_map(planted, tmp_path):
    folder, _ = planted
    with browser_page(folder / "report.html", width=1300) as (page, errors):
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        headings = page.locator("h2").all_inner_texts()
        matrix = page.locator("h2", has_text="Across sites: macro AUC").locator("xpath=following::table[1]")
        rows = matrix.locator("tbody tr").count()
        page.screenshot(path=str(screenshots(tmp_path) / "cross_site_report.png"), full_page=True)
    assert errors == []
    assert headings[:4] == ["What ran", "Results per cell", "Across sites: macro AUC, trained on (rows) x tested on "
                            "(columns)", "Own site vs other sites, on the same images"]
    assert rows == 6  # one row per cell
    heat = [i for i in images if i[0].startswith("Across sites")]
    assert heat and all(ok and width > 400 for _, ok, width in heat), images


def test_the_real_form_plans_each_site_with_its_own_columns_of_the_competition_labels(tmp_path):
    roots = [f"{s}={tmp_path / s}" for s in SITES]
    plan = plan_study("cross_site", root=roots, out=tmp_path / "studies")
    cfg = {c.name: c.cfg for c in plan.cells}
    nih, = cfg["train=nih"].data.sources
    assert nih.root == str(tmp_path / "nih") and nih.source == "nih14"
    assert nih.labels == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion"]
    chexpert, mimic = cfg["without=nih"].data.sources
    assert chexpert.options == {"views": "frontal"} and mimic.source == "mimic"
    assert set(chexpert.labels) == set(mimic.labels) == {"Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                                                         "Pleural Effusion"}
    assert plan.root == " ".join(roots) and plan.sites["mimic"]["root"] == str(tmp_path / "mimic")
    assert cfg["train=nih"].model.name == "densenet121" and cfg["train=nih"].data.image_size == 224  # the recipe
