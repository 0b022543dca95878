"""Commands that take RUN (issue 16.9): a mistyped run name is "no such run folder" for every one of them,
`explain --top 0` is one line, and an ensemble folder is reportable."""

import pytest

from conftest import run_cli, train_tiny


@pytest.fixture(scope="module")
def cli_run(tiny_phantom, tmp_path_factory):
    path = train_tiny(tiny_phantom, tmp_path_factory.mktemp("cli_runs"), "demo", seed=6)
    return path


COMMANDS = [
    ["evaluate", "{bad}"], ["compare", "{good}", "{bad}"], ["explain", "{bad}", "-i", "{img}"],
    ["localize", "{bad}"], ["uncertainty", "{bad}"], ["ensemble", "{good}", "{bad}", "--out", "{tmp}/ens"],
    ["predict", "{bad}", "-i", "{img}"], ["card", "{bad}"], ["serve", "{bad}"], ["export", "{bad}"],
    ["report", "{bad}"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_mistyped_run_name_says_no_such_run_folder_for_every_command(argv, cli_run, tiny_phantom, tmp_path):
    img = sorted((tiny_phantom / "images").glob("*.png"))[0]
    bad = cli_run.parent / "dmeo"  # a typo of "demo"
    args = [a.format(bad=bad, good=cli_run, img=img, tmp=tmp_path) for a in argv]
    r = run_cli(*args)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.output
    assert f"no such run folder: {bad}" in err and "model.json" not in err
    assert f"did you mean {cli_run}" in err


def test_explain_top_must_be_at_least_one(cli_run, tiny_phantom, tmp_path):
    img = sorted((tiny_phantom / "images").glob("*.png"))[0]
    r = run_cli("explain", cli_run, "-i", img, "--top", "0", "--out", tmp_path)
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "--top must be >= 1" in r.stderr
    r = run_cli("explain", cli_run, "-i", img, "--top", "1", "--out", tmp_path)
    assert r.exit_code == 0, r.output


def test_an_ensemble_folder_is_reportable(cli_run, tmp_path):
    ens = tmp_path / "ens"
    assert run_cli("ensemble", cli_run, cli_run, "--out", ens).exit_code == 0
    r = run_cli("report", ens)  # before evaluate: a report that says so
    assert r.exit_code == 0, r.output
    assert "not evaluated yet" in r.stdout
    html = (ens / "report.html").read_text()
    assert "cxrlab ensemble: ens" in html and "Not evaluated yet" in html and str(cli_run) in html
    r = run_cli("evaluate", ens, "--n-boot", "20")
    assert r.exit_code == 0, r.output
    r = run_cli("report", ens)
    assert r.exit_code == 0 and "not evaluated yet" not in r.stdout
    html = (ens / "report.html").read_text()
    assert "Classification (test split)" in html and "data:image/png;base64" in html  # ROC etc. embedded
    assert "macro AUC" in html and "the mean" in html and "config.yaml" not in html


def test_evaluate_takes_a_threshold_rule_a_prevalence_and_a_calibration(cli_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    r = run_cli("evaluate", run, "--n-boot", 20, "--threshold-rule", "sensitivity:0.8",
                "--prevalence", "Effusion=0.05", "--calibration", "platt")
    assert r.exit_code == 0, r.output
    model = json.loads((run / "model.json").read_text())
    assert model["threshold_rule"].startswith("sensitivity") and model["calibration"]["method"] == "platt"
    for bad in (["--prevalence", "Effusion=2"], ["--prevalence", "Effusion"], ["--threshold-rule", "sens:x"],
                ["--calibration", "magic"]):
        r = run_cli("evaluate", run, "--n-boot", 20, *bad)
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.output)
