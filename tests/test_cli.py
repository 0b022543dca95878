"""The CLI as a thin layer: each command runs in process (typer's CliRunner) and says what it wrote."""

import json

from conftest import run_cli


def test_demo_command_runs_small_and_twice(tmp_path):
    args = ["demo", "--out", tmp_path, "--n", 120, "--size", 64, "train.epochs=1", "data.image_size=32",
            "explain.max_images=10", "evaluate.n_boot=10"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output + r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= s["macro_auc"] <= 1 and "report" in r.stdout
    assert run_cli(*args).exit_code == 0  # the demo owns its run folder: a second demo replaces it


def test_help_of_every_command():
    for cmd in ["demo", "train", "evaluate", "compare", "explain", "localize", "uncertainty", "ensemble",
                "predict", "export", "report", "prepare", "data"]:
        r = run_cli(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.stdout, cmd


def test_version_option_and_output_option_names():
    r = run_cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("cxrlab ")
    r = run_cli("predict", "--help")
    assert "--out" in r.stdout and "--csv" not in r.stdout  # the old name still works, hidden
    r = run_cli("compare", "--help")
    assert "--json" in r.stdout and "--out" in r.stdout
