"""The CLI prints what each workflow wrote and spells no run-folder file name (issue 17).

``wrote`` lines come from the writes themselves (:mod:`cxrlab.workflows.outputs`), so each printed path was
written by the command and each file the command wrote in the run folder is printed; the threshold rule of
``evaluate`` and the body-size rule of ``serve`` live below the CLI.
"""

import re
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

SRC = Path(__file__).resolve().parents[1] / "src" / "cxrlab"


def _entries(output: str) -> list[str]:
    return [line.removeprefix("wrote ").strip() for line in output.splitlines() if line.startswith("wrote ")]


def _covered(path: Path, entries: list[str]) -> bool:
    for e in entries:
        folded = re.fullmatch(r"(.*)/ \((\d+) files\)", e)
        if (folded and Path(folded[1]) in path.parents) or Path(e) == path:
            return True
    return False


def _changed_since(folder: Path, t0: float) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= t0}


def _assert_lists_exactly(output: str, folder: Path, t0: float) -> list[str]:
    entries = _entries(output)
    assert entries, output
    for e in entries:  # everything printed exists and was written now
        folded = re.fullmatch(r"(.*)/ \((\d+) files\)", e)
        p = Path(folded[1] if folded else e)
        assert p.exists() and (folded or p.stat().st_mtime >= t0), e
    missing = sorted(str(p) for p in _changed_since(folder, t0) if not _covered(p, entries))
    assert not missing, f"written but not printed: {missing}"
    return entries


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    from cxrlab.data.phantom import LABELS

    tmp = tmp_path_factory.mktemp("written")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "w", "seed": 1, "runs_dir": str(tmp / "runs"),
        "data": {"source": "nih14", "root": str(tiny_phantom), "labels": list(LABELS), "image_size": 32,
                 "val_fraction": 0.2, "workers": 1, "cache_dir": str(tmp / "cache")},
        "model": {"name": "simple_cnn", "options": {"width": 4, "convs": 1}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "threads": 1},
        "evaluate": {"n_boot": 10}, "explain": {"enabled": False}}))
    t0 = time.time() - 1
    r = run_cli("train", "--config", recipe)
    assert r.exit_code == 0, r.output
    return tmp / "runs" / "w", r.output, t0


def test_cli_spells_no_run_folder_internals():
    text = (SRC / "cli.py").read_text()
    assert not re.search(r"from cxrlab\.run\b|runio", text)
    for name in ("config.yaml", "split.json", "model.json", "predictions.csv", "evaluation.json", "report.html",
                 "mc_dropout_std", "figures"):
        assert f'"{name}' not in text and f"/ {name!r}" not in text, name


def test_train_prints_exactly_what_it_wrote(trained):
    run, output, t0 = trained
    entries = _assert_lists_exactly(output, run, t0)
    # what the old hand-written list left out is printed now
    for name in ("predictions_val.csv", "ood.json", "model.json", "summary.json", "report.html"):
        assert str(run / name) in entries, name
    assert any(e.startswith(f"{run / 'figures'}/ (") for e in entries)  # a folder of figures is one line


def test_evaluate_prints_model_json_only_where_thresholds_were_rechosen(trained, tmp_path):
    import shutil

    run, _, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    t0 = time.time() - 1e-3
    time.sleep(0.01)
    r = run_cli("evaluate", copy, "--n-boot", "10", "--json", tmp_path / "ev.json")
    assert r.exit_code == 0, r.output
    entries = _assert_lists_exactly(r.output, copy, t0)
    assert str(copy / "model.json") in entries and str(tmp_path / "ev.json") in entries
    (copy / "predictions_val.csv").unlink()  # no validation table: thresholds stay, model.json untouched
    t1 = time.time()
    time.sleep(0.01)
    r = run_cli("evaluate", copy, "--n-boot", "10")
    assert r.exit_code == 0, r.output
    entries = _assert_lists_exactly(r.output, copy, t1)
    assert str(copy / "model.json") not in entries and str(copy / "evaluation.json") in entries


def test_serve_body_limit_follows_the_file_limit_below_the_cli(monkeypatch, tmp_path):
    from cxrlab.serve import app as serve_app
    from cxrlab.serve.limits import Limits, MiB

    assert Limits().max_body_bytes == 64 * MiB
    assert Limits(max_file_bytes=50 * MiB).max_body_bytes == 100 * MiB
    assert Limits(max_file_bytes=50 * MiB, max_body_bytes=MiB).max_body_bytes == MiB
    got = {}
    monkeypatch.setattr(serve_app, "serve_run", lambda run, host, port, engine, token, limits, announce:
                        got.setdefault("limits", limits))
    (tmp_path / "run").mkdir()
    r = run_cli("serve", tmp_path / "run", "--max-file-mb", "50")
    assert r.exit_code == 0, r.output
    assert got["limits"].max_body_bytes == 100 * MiB and got["limits"].max_file_bytes == 50 * MiB


def test_recording_sees_every_write_once_and_nests(tmp_path):
    from cxrlab.runio import append_jsonl, atomic_write_json, atomic_write_text
    from cxrlab.workflows.outputs import outputs

    with outputs() as outer:
        atomic_write_text(tmp_path / "a.txt", "x")
        with outputs() as inner:
            atomic_write_json(tmp_path / "b.json", {"v": float("nan")})
            append_jsonl(tmp_path / "m.jsonl", {"e": 1})
            atomic_write_text(tmp_path / "a.txt", "y")
    atomic_write_text(tmp_path / "c.txt", "z")  # outside: seen by nobody
    assert inner.paths == [tmp_path / "b.json", tmp_path / "m.jsonl", tmp_path / "a.txt"]
    assert outer.paths == [tmp_path / "a.txt", tmp_path / "b.json", tmp_path / "m.jsonl"]


def test_package_version_is_0_2_and_agrees_with_pyproject():
    from cxrlab import __version__

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"] == "0.2.0"
    r = run_cli("--version")
    assert r.exit_code == 0 and r.output.strip() == "cxrlab 0.2.0"
