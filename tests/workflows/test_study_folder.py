"""The study folder has one owner (StudyFolder), `study report` only renders, cells are config trees, and each
preset is its paper's shipped recipe plus what its comparison changes."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from cxrlab.config import load_config
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.resolved import flatten
from cxrlab.studies.spec import base_recipe, dotted, list_presets, list_recipes, read_spec
from cxrlab.workflows.study import plan_study, run_study

SRC = Path(__file__).resolve().parents[2] / "src" / "cxrlab"
REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"

STUDY = {
    "name": "tiny_post",
    "recipe": {
        "seed": 0, "task": "multilabel",
        "data": {"source": "nih14", "workers": 1, "val_fraction": 0.2},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "scheduler": "none", "threads": 1},
        "evaluate": {"n_boot": 20}, "explain": {"enabled": False},
    },
    "axes": {"data.image_size": [32, 40]},
    "baseline": "image_size=40",
    "n_boot": 50,
    "post": [{"ensemble": {"groups": {"both": ["image_size=32", "image_size=40"]}}}],
    "phantom": {"kind": "nih14", "n": 120, "size": 48},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-cell phantom study with a post-step ensemble (a few seconds)."""
    tmp = tmp_path_factory.mktemp("study")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    report = run_study(path, phantom=True, out=tmp)
    return path, StudyFolder(report.parent)


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_study_report_twice_changes_no_file_under_runs(finished):
    _, study = finished
    assert study == StudyFolder.of("tiny_post", phantom=True, out=study.path.parent)
    assert (study.run_path("both") / "evaluation.json").is_file()  # `study run` made and evaluated the ensemble
    before = _snapshot(study.runs)
    assert any(name.startswith("both/") for name in before)
    first = run_cli("study", "report", study.path)
    assert first.exit_code == 0, first.stderr
    assert "".join(first.stdout.split()) == "".join(f"wrote{p}" for p in study.report_files())  # (rich wraps)
    again = run_cli("study", "report", study.path, "--n-boot", "60")  # another B: re-evaluated for the page only
    assert again.exit_code == 0, again.stderr
    assert _snapshot(study.runs) == before  # same bytes, same mtimes: nothing under runs/ was rewritten
    data = json.loads(study.result_file.read_text())
    assert data["cells"]["both"]["n_boot"] == 60 and not data["missing"]


def test_a_post_cell_not_made_is_listed_not_built_by_the_report(finished, tmp_path):
    _, study = finished
    copy = StudyFolder(tmp_path / study.path.name)
    shutil.copytree(study.path, copy.path)
    shutil.rmtree(copy.run_path("both"))
    r = run_cli("study", "report", copy.path)
    assert r.exit_code == 0, r.stderr
    data = json.loads(copy.result_file.read_text())
    assert data["missing"] == ["both"] and "both" not in data["cells"]
    assert not copy.run_path("both").exists()  # `study run` makes post cells, the report does not
    assert "Cells not finished:** both" in copy.report_md.read_text()


def test_cell_configs_are_trees_so_a_root_is_never_reparsed_as_yaml(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "phantom": None, "post": []}))
    monkeypatch.chdir(tmp_path)
    for root in ("2024", "null", "on"):  # folder names YAML reads as a number, None, True
        cfgs = [c.cfg for c in plan_study(path, root=root, out=tmp_path / "studies").cells]
        assert [c.data.root for c in cfgs] == [root, root]
    plan = plan_study(path, root="2024", overrides=["train.lr=0.01"], out=tmp_path / "studies")
    assert plan.overrides == ["train.lr=0.01"] and {c.cfg.train.lr for c in plan.cells} == {0.01}
    assert {c.cfg.runs_dir for c in plan.cells} == {str(plan.study.runs)}


def test_study_folder_names_live_only_in_study_folder():
    own = SRC / "studies" / "folder.py"
    only_studies = ['"study.json"', '"study.yaml"', '"preset.yaml"', '"data.json"', '"report.md"',
                    '"submitit"', "'study.json'", "'study.yaml'", "'preset.yaml'"]
    study_modules = [*SRC.glob("workflows/study*.py"), SRC / "cli_study.py", SRC / "report" / "study.py",
                     *SRC.glob("studies/*.py")]
    shared = [r'/ "runs"', r'/ "logs"', r'/ "data"', r'/ "cache"', r'"figures', r'"report.html"', r"'runs'"]
    hits = [f"{p.relative_to(SRC)}: {n}" for p in SRC.rglob("*.py") if p != own
            for n in only_studies if n in p.read_text()]
    hits += [f"{p.relative_to(SRC)}: {n}" for p in study_modules if p != own for n in shared if n in p.read_text()]
    assert hits == []


def test_each_preset_is_its_shipped_recipe_plus_what_its_comparison_changes(tmp_path):
    recipes = list_recipes()
    assert set(recipes) == {p.name for p in REPO_RECIPES.glob("*.yaml")}  # recipes/ is the package's folder
    for name, path in sorted(list_presets().items()):
        spec = read_spec(path)
        base = base_recipe(path, spec)
        assert spec.base and base == recipes[spec.base], name
        assert base.samefile(REPO_RECIPES / spec.base), name
        recipe = flatten(yaml.safe_load(base.read_text()))
        copied = {k: v for k, v in flatten(spec.recipe).items() if recipe.get(k) == v}
        assert copied == {}, f"{name} repeats its recipe's values"
        if spec.sites:  # a cross-site study's cells read data.sources (tests/workflows/test_cross_site.py)
            continue
        plan = plan_study(name, root=str(tmp_path / "data"), out=tmp_path / "studies")
        for cell, planned in zip(spec.grid(), plan.cells, strict=True):
            # the recipe as `cxrlab train --config RECIPE key=value ...` would read it
            expected = load_config(base, [*dotted(flatten(spec.recipe)), *dotted(cell.overrides),
                                          f"data.root={tmp_path / 'data'}", f"name={cell.name}",
                                          f"runs_dir={plan.study.runs}"])
            assert planned.cfg == expected, f"{name}/{cell.name}"


def test_recipes_state_the_papers_settings():
    """Where a preset once stated the paper's value and its recipe another, the recipe now states the paper's."""
    fusion = load_config(list_recipes()["nih14_fusion_focal.yaml"])  # project report, Table 1 and Data
    assert (fusion.train.epochs, fusion.train.weight_decay, fusion.data.patient_fraction) == (25, 0.0, 0.5)
    assert (fusion.train.lr, fusion.train.early_stop_on) == (1e-3, "score")
    witon = load_config(list_recipes()["cxr5_resnet18_clahe.yaml"])  # "12 Epochs or until the loss increased"
    assert (witon.train.epochs, witon.train.early_stop, witon.train.early_stop_on) == (12, 1, "loss")
    wollek = load_config(list_recipes()["nih14_densenet121.yaml"])  # batch 16 at 256 px
    assert wollek.train.batch_size == 16 and wollek.data.image_size == 256
    single = load_config(list_recipes()["nih14_fusion_focal.yaml"], ["model.name=densenet121"])
    assert single.model.options == {}  # the recipe's "single backbones: model.name=..." needs nothing else


def test_a_base_recipe_that_is_missing_is_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "base": "no_such_recipe.yaml"}))
    r = run_cli("study", "run", path, "--root", tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert re.search(r"s\.yaml: base recipe no_such_recipe\.yaml not found .*nih14_densenet121\.yaml", r.stderr)
