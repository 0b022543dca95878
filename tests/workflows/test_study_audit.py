"""Each study cell's lung-energy share (issue 20, "In studies"): the Kermany and Witon presets' phantom forms
write masks, `study run` audits every trained cell, and `study report` (which only renders) prints the
lung-energy column and the paired difference with the baseline; a study without masks says so in the column."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_cli
from cxrlab.data.phantom_dataset import write_phantom_dataset
from cxrlab.run import RunFolder
from cxrlab.studies.folder import StudyFolder
from cxrlab.studies.spec import list_presets, load_study
from cxrlab.workflows.study import run_study

FAST = ["train.epochs=1", "evaluate.n_boot=20", "explain.enabled=false"]


def _preset_copy(name: str, tmp: Path, **phantom) -> Path:
    """The shipped preset as a file in ``tmp`` with a smaller phantom form (its base recipe is found by name)."""
    tree = yaml.safe_load(list_presets()[name].read_text())
    tree["phantom"].update(phantom)
    tree["n_boot"] = 200
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _paired_mean(study: StudyFolder, a: str, b: str, label: str | None) -> float:  # NaN: no defined pair
    """mean(share A - share B) over the images both cells audited, straight from their per-image tables."""
    ta, tb = (pd.read_csv(RunFolder(study.run_path(c)).audit_images_file("gradcam")) for c in (a, b))
    if label is not None:
        ta, tb = ta[ta["label"] == label], tb[tb["label"] == label]
    both = ta.merge(tb, on=["image", "label"], suffixes=("_a", "_b"))
    d = (both["lung_share_a"] - both["lung_share_b"]).to_numpy(float)
    return float(d[np.isfinite(d)].mean()) if np.isfinite(d).any() else float("nan")


def _check_audit_column(report: Path, labels: list[str]) -> dict:
    study = StudyFolder(report.parent)
    data = json.loads(study.result_file.read_text())
    assert data["audit"]["masks"] == str(study.data_masks)
    trained = [n for n, r in data["cells"].items() if r.get("setup")]
    for name in trained:
        a = data["cells"][name]["audit"]
        assert "missing" not in a, (name, a)
        assert a["n_boot"] == 200
        for lab in labels:
            s = a["share"][lab]
            assert 0.0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1.0, (name, lab, s)
    pairs = data["audit"]["comparisons"]
    assert pairs and {p["b"] for p in pairs} == {data["baseline"]}
    for pair in pairs:
        assert {r["label"] for r in pair["rows"]} >= set(labels)
        for r in pair["rows"]:
            assert r["paired"] and r["images"] >= 3
            expected = _paired_mean(study, pair["a"], pair["b"], None if r["label"] == "all test images" else r["label"])
            if np.isnan(expected):  # every map of one cell without energy (a class a 1-epoch model never finds)
                assert r["diff"]["value"] is None
                continue
            assert r["diff"]["value"] == pytest.approx(expected, abs=1e-9)
            assert r["diff"]["ci_low"] <= r["diff"]["value"] <= r["diff"]["ci_high"]
    html, md = study.report_html.read_text(), study.report_md.read_text()
    for text in (html, md):
        assert "Where the model looks" in text and "lung-energy share" in text and "[95% CI, B=200]" in text
        assert "Lung-energy share against the baseline" in text
    first = pairs[0]["rows"][0]
    row = next(line for line in md.splitlines()
               if line.startswith(f"| {pairs[0]['a']} | {pairs[0]['b']} | {first['label']} |"))
    assert f"{first['diff']['value']:+.3f} [" in row and f"{first['images']} (paired)" in row
    return data


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    """The Kermany preset's phantom form (both cells, its 300 images), 1 epoch a cell."""
    tmp = tmp_path_factory.mktemp("kermany")
    return run_study(_preset_copy("kermany2025_pneumonia", tmp), overrides=FAST, phantom=True, out=tmp)


def test_kermany_phantom_form_prints_lung_energy_and_paired_difference(kermany):
    data = _check_audit_column(kermany, ["Pneumonia"])
    row = next(line for line in kermany.with_suffix(".md").read_text().splitlines() if line.startswith("| densenet121"))
    assert row.count("[") >= 1 and "no masks" not in row  # a number with its CI, not the no-masks text
    assert data["cells"]["densenet121"]["audit"]["counts"]["without_masks"] == 0


def test_study_report_twice_changes_no_file_under_runs_and_keeps_the_column(kermany):
    study = StudyFolder(kermany.parent)
    before = _snapshot(study.runs)
    assert any(k.endswith("audit_gradcam.csv") for k in before)  # `study run` audited the cells
    for extra in ([], ["--n-boot", "60"]):
        r = run_cli("study", "report", study.path, *extra)
        assert r.exit_code == 0, r.stderr
    assert _snapshot(study.runs) == before
    data = json.loads(study.result_file.read_text())
    assert all(p["n_boot"] == 60 for p in data["audit"]["comparisons"])  # the paired test at the page's B
    assert "lung-energy share [95% CI, B=200]" in study.report_md.read_text()  # the shares keep the audit's B


def test_witon_phantom_form_prints_per_class_and_all_images(tmp_path):
    """The Witon preset's phantom form (its two ResNet-18 cells, 200 images): per class and over all images."""
    path = _preset_copy("witon_cxr5", tmp_path, n=200, only=["resnet18_clahe", "resnet18_noclahe"])
    report = run_study(path, overrides=FAST, phantom=True, out=tmp_path)
    spec, _ = load_study(path)
    data = _check_audit_column(report, ["all test images"])
    shares = data["cells"][spec.baseline]["audit"]["share"]
    assert len(shares) >= 3  # classes with an audited positive, and the mean over every audited image
    assert "all test images: lung-energy share [95% CI, B=200]" in report.read_text()


def test_a_study_without_masks_says_so_then_masks_audit_it(tmp_path):
    """--root data without masks: the column reads "no masks (...)"; the same study with masks= is audited
    without retraining (the cells are done)."""
    root = tmp_path / "data"
    ps = write_phantom_dataset("nih14", root, n=120, size=48, seed=0, masks=True)
    masks = root / "masks"
    hidden = tmp_path / "hidden_masks"
    masks.rename(hidden)  # as a real dataset: masks kept elsewhere, if at all
    study = {"name": "tiny_masks", "n_boot": 50,
             "recipe": {"seed": 0, "task": "multilabel",
                        "data": {"source": "nih14", "workers": 1, "val_fraction": 0.2, "image_size": 32,
                                 "labels": list(ps.labels)},
                        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
                        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "scheduler": "none", "threads": 1},
                        "evaluate": {"n_boot": 20}, "explain": {"enabled": False}},
             "axes": {"train.lr": [0.003, 0.01]}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    report = run_study(path, root=str(ps.root), out=tmp_path / "studies")
    data = json.loads(report.with_name("study.json").read_text())
    assert all(r["audit"] == {"missing": "no masks (cxrlab audit --masks SPEC)"} for r in data["cells"].values())
    md = report.with_suffix(".md").read_text()
    assert "no masks (cxrlab audit --masks SPEC)" in md and "Where the model looks" in md
    mtimes = {c: (report.parent / "runs" / c / "model.json").stat().st_mtime_ns for c in data["cells"]}
    report = run_study(path, root=str(ps.root), out=tmp_path / "studies", masks=hidden)
    data = json.loads(report.with_name("study.json").read_text())
    assert {c: (report.parent / "runs" / c / "model.json").stat().st_mtime_ns for c in data["cells"]} == mtimes
    assert all(r["audit"]["mask_source"] == str(hidden) for r in data["cells"].values())
    assert data["audit"]["masks"] == str(hidden) and data["audit"]["comparisons"][0]["rows"]
    assert "no masks" not in report.with_suffix(".md").read_text()
    study = StudyFolder(report.parent)
    cell = next(iter(data["cells"]))
    RunFolder(study.run_path(cell)).audit_file("gradcam").unlink()  # an audit that stopped at `study run`
    assert run_cli("study", "report", study.path).exit_code == 0
    row = next(line for line in study.report_md.read_text().splitlines()
               if line.startswith(f"| {cell}") and "lung" not in line and "not audited" in line)
    assert "not audited (cxrlab audit RUN --masks SPEC says why)" in row


def test_masks_that_do_not_exist_and_an_unknown_audit_method_are_one_line(tmp_path):
    from cxrlab.errors import CxrlabError
    from cxrlab.workflows.study import plan_study

    tree = yaml.safe_load(list_presets()["kermany2025_pneumonia"].read_text())
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(CxrlabError, match=r"^--masks .*nowhere: no such mask folder or file$"):
        plan_study(path, root=str(tmp_path), out=tmp_path / "s", masks=tmp_path / "nowhere")
    path.write_text(yaml.safe_dump({**tree, "audit": {"method": "gradcamm"}}))
    with pytest.raises(CxrlabError, match=r"audit.method: unknown explanation method 'gradcamm'"):
        plan_study(path, root=str(tmp_path), out=tmp_path / "s")
