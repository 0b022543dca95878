"""What a new user meets first: the demo's phantom can be audited as it is, ``--out`` naming a file is one
line, ``--help`` reads without the docs, and each common mistake says what to do instead (a key's spelling,
the runs under a folder, the CheXpert subfolder, the command that writes a phantom's masks)."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import shlex
from pathlib import Path

import pytest

from conftest import one_line, run_cli, train_tiny

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = Path(__file__).resolve().parents[1] / "README.md"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


@pytest.fixture(scope="module")
def plain_run(tiny_phantom, tmp_path_factory):
    """A run on the shared tiny phantom, which was written without masks."""
    assert not (tiny_phantom / "masks").exists()
    return train_tiny(tiny_phantom, tmp_path_factory.mktemp("hint_runs"), "hint", seed=5)


# --- finding 6: the demo's phantom has masks; a phantom without them names the command -----------------

def test_the_demo_writes_its_phantom_with_masks_and_the_same_images(tmp_path, monkeypatch):
    from cxrlab.data.phantom_dataset import write_phantom
    from cxrlab.workflows import demo

    monkeypatch.setattr(demo, "run_experiment", lambda cfg, overwrite: {})  # the phantom step only
    old = write_phantom(tmp_path / "d" / "phantom", n=8, size=32, seed=0, workers=1)  # an earlier demo's
    plain = _digests(old)
    demo.run_demo(tmp_path / "d", n=8, size=32, seed=0)
    ph = tmp_path / "d" / "phantom"
    assert "masks" in json.loads((ph / "phantom.json").read_text())
    assert {p.stem for p in (ph / "masks" / "left_lung").iterdir()} == {Path(n).stem for n in plain}
    assert _digests(ph) == plain  # the masks change no image


def test_the_demo_prints_audit_among_its_next_steps(plain_run, tmp_path, monkeypatch):
    from cxrlab.run import RunFolder

    summary = {**json.loads((RunFolder(plain_run).summary_file).read_text()), "wall_seconds": 1.0,
               "report": str(plain_run / "report.html")}
    monkeypatch.setattr("cxrlab.workflows.demo.run_demo", lambda *a, **k: summary)
    r = run_cli("demo", "--out", tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert f"cxrlab audit {plain_run}" in r.output.replace("\n", " ")


def test_audit_without_masks_names_the_phantom_command_that_writes_them(plain_run, tiny_phantom, caplog):
    from cxrlab.run import RunFolder
    from cxrlab.workflows.audit import audit_run

    msg = one_line(lambda: audit_run(plain_run, sanity=0, n_boot=20))
    command = re.search(r"`(cxrlab phantom [^`]+)`", msg)
    assert command, msg
    args = shlex.split(command.group(1))[1:]
    assert "--masks" in args and ["--n", "120"] == args[args.index("--n"):args.index("--n") + 2]
    r = run_cli(*args, "--workers", "1")
    assert r.exit_code == 0, r.output
    masks = Path(msg.rsplit("--masks ", 1)[1])
    assert masks.is_dir() and _digests(masks.parent) == _digests(tiny_phantom)  # the same images

    test = RunFolder(plain_run).read_split()["test"]
    with caplog.at_level(logging.WARNING, logger="cxrlab.data.masks"):
        audit_run(plain_run, masks, sanity=0, n_boot=20)
    lines = [x.getMessage() for x in caplog.records if "left out" in x.getMessage()]
    assert any(f"masks of {120 - len(test)} image(s) left out: not among the {len(test)} images scored "
               "(the test split)" in x for x in lines), lines
    assert not any("not an image of the set" in x for x in lines)


@pytest.mark.parametrize("opts", [
    {"site": "B", "subtle": True},
    {"shortcut": "Mass:0.9:0.1", "subgroup_gap": "age=60-89:0.4", "seed": 4},
])
def test_the_masks_command_repeats_a_phantoms_planted_options(tmp_path, opts):
    from cxrlab.data.phantom_dataset import write_phantom
    from cxrlab.workflows.audit import phantom_masks_command

    opts = {"seed": 2, **opts}
    root = write_phantom(tmp_path / "ph", n=12, size=32, workers=1, **opts)
    command, masks = phantom_masks_command(root)
    r = run_cli(*shlex.split(command)[1:], "--workers", "1")
    assert r.exit_code == 0, r.output
    assert _digests(masks.parent) == _digests(root) and (masks / "heart").is_dir()


def test_no_masks_command_for_what_is_no_phantom_or_cannot_have_masks(tmp_path):
    from cxrlab.workflows.audit import phantom_masks_command

    assert phantom_masks_command(tmp_path) is None
    (tmp_path / "phantom.json").write_text(json.dumps({"generator": "cxrlab.phantom", "layout": "chexpert",
                                                       "n": 3, "size": 32, "seed": 0}))
    assert phantom_masks_command(tmp_path) is None


def test_the_mask_warning_counts_images_and_names_the_scored_set(tmp_path, caplog):
    import cv2
    import numpy as np

    from cxrlab.data.masks import read_masks

    for structure in ("left_lung", "right_lung", "heart"):
        (tmp_path / structure).mkdir()
        for name in ("00000001_000", "00000002_000", "00000003_000"):
            cv2.imwrite(str(tmp_path / structure / f"{name}.png"), np.full((8, 8), 255, np.uint8))
    with caplog.at_level(logging.WARNING, logger="cxrlab.data.masks"):
        ms = read_masks(tmp_path, ["00000001_000"], scored="the test split")
    assert ms.ids() == ["00000001_000"] and ms.left_out["not an image of the set"] == 6  # mask files
    lines = [x.getMessage() for x in caplog.records]
    assert any("masks of 2 image(s) left out: not among the 1 images scored (the test split)" in x for x in lines)


# --- finding 7: --out naming a file ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["demo", "phantom"])
@pytest.mark.parametrize("below", [False, True])
def test_out_naming_a_file_is_one_line(tmp_path, command, below):
    f = tmp_path / "afile"
    f.write_text("x")
    out = f / "sub" if below else f
    r = run_cli(command, "--out", out, *(["--n", "4", "--size", "32", "--workers", "1"] if command == "phantom" else []))
    assert r.exit_code == 2 and "Traceback" not in r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and f"--out {out}" in err[0] and "a file" in err[0], r.output
    assert f.read_text() == "x"


# --- finding 10: --help ------------------------------------------------------------------------------

def _commands():
    import typer.main

    from cxrlab.cli import app

    def walk(group, prefix):
        for name, cmd in getattr(group, "commands", {}).items():
            yield f"{prefix}{name}", cmd
            yield from walk(cmd, f"{prefix}{name} ")

    return dict(walk(typer.main.get_command(app), ""))


def test_no_help_text_breaks_a_line_mid_sentence():
    broken = [name for name, cmd in _commands().items()
              for para in inspect.cleandoc(cmd.help or "").split("\n\n") if "\n" in para.strip()]
    broken += [f"{name} {p.name}" for name, cmd in _commands().items() for p in cmd.params
               if "\n" in (getattr(p, "help", None) or "")]
    assert not broken


def test_help_marks_and_explains_what_it_means():
    cmds = _commands()
    config = next(p for p in cmds["train"].params if p.name == "config")
    assert config.required
    phantom = {p.name: p.help for p in cmds["phantom"].params}
    assert "(n per set)" not in phantom["kind"] and "nlmtb" in phantom["n"] and "per set" not in phantom["kind"]
    level = next(p.help for p in cmds["audit"].params if p.name == "level")
    assert "Otsu" in level and "validation" in level and "mIoU" in level
    r = run_cli("train")
    assert r.exit_code == 2 and "--config" in r.output


def test_docs_list_every_phantom_kind_and_the_demos_run_path():
    from cxrlab.data.phantom_dataset import KINDS

    cli = (DOCS / "cli.md").read_text()
    synopsis = cli.split("## `cxrlab phantom`", 1)[1].split("```")[1]
    kinds = re.search(r"--kind ([\w|]+)", synopsis).group(1).split("|")
    assert kinds == list(KINDS)
    serve = (DOCS / "serve.md").read_text()
    assert "cxrlab serve runs/demo" not in serve and "cxrlab serve cxrlab-demo/runs/demo" in serve


def test_readme_gives_the_cpu_wheel_index_and_the_thread_count():
    text = README.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "OMP_NUM_THREADS=1" in text and "pip install -e . && cxrlab demo" in text


# --- the user-mistake hints ----------------------------------------------------------------------------

@pytest.mark.parametrize("override,near", [
    ("train.epoch=3", "train.epochs"),
    ("data.imge_size=64", "data.image_size"),
    ("train.augment.rotate=5", "train.augment.rotate_deg"),
    ("epochs=3", "train.epochs"),
    ("data.sources=[{source: nih14, root: x, rooot: y}]", "data.sources.0.root"),
])
def test_an_unknown_key_suggests_the_closest_known_one(override, near):
    from cxrlab.config import load_config

    msg = one_line(lambda: load_config(None, [override]))
    assert f"unknown key; did you mean {near}?" in msg


def test_a_far_unknown_key_suggests_nothing():
    from cxrlab.config import load_config

    msg = one_line(lambda: load_config(None, ["train.zzqqxx=1"]))
    assert msg.endswith("train.zzqqxx: unknown key")


def test_a_folder_that_holds_runs_lists_them(plain_run, tmp_path):
    from cxrlab.workflows.common import run_folder

    top = tmp_path / "cxrlab-demo"
    for name in ("demo", "other"):
        (top / "runs" / name).mkdir(parents=True)
        (top / "runs" / name / "model.json").write_text("{}")
    (top / "phantom" / "images").mkdir(parents=True)
    msg = one_line(lambda: run_folder(top))
    assert "not a cxrlab run folder" in msg and f"{top / 'runs' / 'demo'}, {top / 'runs' / 'other'}" in msg
    r = run_cli("evaluate", top / "runs")
    assert r.exit_code == 2 and str(top / "runs" / "demo") in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert run_folder(plain_run).path == Path(plain_run)  # a run itself is still a run


def test_a_chexpert_root_one_level_too_high_names_the_subfolder(tmp_path):
    from cxrlab.data.sources.chexpert import chexpert

    inner = tmp_path / "CheXpert-v1.0-small"
    inner.mkdir()
    (inner / "train.csv").write_text("Path,Sex,Age,Frontal/Lateral,AP/PA\n")
    msg = one_line(lambda: chexpert(str(tmp_path)))
    assert "train.csv not found" in msg and f"{inner} has it" in msg
    (tmp_path / "empty").mkdir()
    msg = one_line(lambda: chexpert(str(tmp_path / "empty")))
    assert "train.csv not found" in msg and "has it" not in msg
