"""The study report's subgroup section (issue 19): `study run` analyses each trained cell whose predictions carry
sex/age (``cxrlab subgroups``), and the report shows the worst group per label with its AUC gap and CI; the
planted phantom's affected group is found there, with a CI that excludes 0."""

import json

import yaml

from cxrlab.data.phantom_dataset import write_phantom
from cxrlab.evaluate.records import StudyResult, SubgroupResult
from cxrlab.report import present
from cxrlab.run import RunFolder
from cxrlab.studies.folder import StudyFolder
from cxrlab.workflows.study import run_study

LABELS = ["Cardiomegaly", "Effusion"]


def _study(tmp_path, gap):
    """A one-cell study on the NIH phantom (``gap``: the planted subgroup effect, or None); its folder."""
    root = write_phantom(tmp_path / "ph", n=900, size=48, seed=11, test_fraction=0.5, workers=1, subgroup_gap=gap)
    study = {"name": "tiny_subgroups", "n_boot": 200,
             "recipe": {"seed": 0, "task": "multilabel",
                        "data": {"source": "nih14", "workers": 1, "val_fraction": 0.2, "image_size": 48,
                                 "labels": LABELS},
                        "model": {"name": "simple_cnn", "options": {"width": 8, "convs": 1}},
                        "train": {"epochs": 6, "batch_size": 32, "lr": 3e-3, "scheduler": "cosine", "threads": 1},
                        "evaluate": {"n_boot": 20}, "explain": {"enabled": False}},
             "axes": {"train.lr": [3e-3]}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    return StudyFolder(run_study(path, root=str(root), out=tmp_path / "studies").parent)


def test_study_report_shows_the_planted_worst_group_per_label(tmp_path):
    folder = _study(tmp_path, "sex=F:0.35")
    result = StudyResult.read(folder.result_file)
    assert result.format_version == StudyResult.FORMAT_VERSION
    (name, cell), = result.cells.items()
    run = RunFolder(folder.run_path(name))
    sub = SubgroupResult.read(run.subgroups_file)  # written by `study run`, not by the report
    assert sub is not None and sub.n_boot == 200 and cell.extras["subgroups"] == sub.to_dict()
    md = folder.report_md.read_text()
    assert "Subgroups: the worst group per label" in md
    for lab in ("Effusion", "Cardiomegaly"):
        worst = sub.groupings["sex"].worst[lab]
        assert worst == "F", (lab, worst)  # the planted group is the worst one
        gap = sub.groupings["sex"].groups["F"].per_label[lab].vs_rest["auc"].diff
        assert gap.high < 0, (lab, gap)  # ... and its CI excludes 0
        row = f"| {name} | {lab} | sex = F | "
        assert any(line.startswith(row) and present.diff_ci(gap) in line for line in md.splitlines()), row
    # the old dict reads through the record: no format_version is format 1, same cells
    old = json.loads(folder.result_file.read_text())
    old.pop("format_version")
    again = StudyResult.from_dict(old)
    assert again.format_version == 1 and again.cells[name].per_label == cell.per_label


def test_clean_phantom_study_shows_no_gap_for_the_same_group(tmp_path):
    folder = _study(tmp_path, None)
    (name, cell), = StudyResult.read(folder.result_file).cells.items()
    sub = SubgroupResult.from_dict(cell.extras["subgroups"])
    gap = sub.groupings["sex"].groups["F"].per_label["Effusion"].vs_rest["auc"].diff
    assert gap.low <= 0 <= gap.high, gap  # no effect planted: the CI of the same gap holds 0
    assert "Subgroups: the worst group per label" in folder.report_md.read_text()


def test_one_stylesheet_and_the_app_rules_are_scoped():
    """Issue 17's search: a CSS string in one file only; the serve app's rules sit under ``.serve-app`` (its
    page's class), so the report pages, which carry the same file, keep their look."""
    from pathlib import Path

    import cxrlab
    from cxrlab.report.html import CSS
    from cxrlab.serve.app import PAGE_CSS

    src = Path(cxrlab.__file__).parent
    hits = [p for p in src.rglob("*") if p.is_file() and p.suffix in (".py", ".css", ".html", ".js")
            and ("font-family" in p.read_text(errors="ignore") or "border-collapse" in p.read_text(errors="ignore"))]
    assert [p.relative_to(src).as_posix() for p in hits] == ["report/page.css"]
    assert PAGE_CSS.read_text(encoding="utf-8") == CSS
    assert 'class="serve-app"' in (src / "serve/static/index.html").read_text()
    app_part = CSS[CSS.index("*/", CSS.index("/* The serve app")) + 2:]  # after its comment, to the end
    rules = [r.split("{")[0].strip() for r in app_part.split("}") if "{" in r and not r.strip().startswith("@")]
    assert len(rules) > 50 and all("serve-app" in r for r in rules), [r for r in rules if "serve-app" not in r]
