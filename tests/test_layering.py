"""The import contracts bite (issue 17): each forbidden import, added alone, breaks `lint-imports`.

A contract nobody has seen fail is not yet a check.  Each case copies ``src/`` and
``pyproject.toml`` into a temporary folder, adds one import to one module of the
copy, and runs ``lint-imports --no-cache`` there with the copy first on
``PYTHONPATH`` (about 0.3 s a run: grimp parses ~100 files).  The untouched copy
must pass, so a failure is caused by the added line alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

# (case id, module file of the copy to edit, line to add, contract that must break)
CASES = [
    ("train->report", "train/losses.py", "import cxrlab.report.html", "layers:"),
    ("report->train", "report/html.py", "import cxrlab.train.losses", "layers:"),
    ("report->models", "report/html.py", "import cxrlab.models.registry", "report draws"),
    ("report->inference", "report/plots.py", "import cxrlab.inference", "report draws"),
    ("report->data.sources", "report/setup.py", "import cxrlab.data.sources", "report draws"),
    # a chain: explain.localize imports the inference path, so the report may not import it
    ("report->explain.localize", "report/html.py", "import cxrlab.explain.localize", "report draws"),
    ("evaluate->config", "evaluate/metrics.py", "import cxrlab.config", "evaluate is"),
    ("evaluate->data.preprocess", "evaluate/stats.py", "import cxrlab.data.preprocess", "evaluate is"),
    ("evaluate->run", "evaluate/ensemble.py", "import cxrlab.run", "evaluate is"),
    ("explain->run", "explain/boxes.py", "import cxrlab.run", "explain is"),
    ("train->cli_show", "train/stopping.py", "import cxrlab.cli_show", "layers:"),
    ("data->inference", "data/manifest.py", "import cxrlab.inference", "data reads"),
    ("evaluate->explain", "evaluate/metrics.py", "import cxrlab.explain.boxes", "layers:"),
]


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "tree"
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "COLUMNS": "400"}  # one line per contract, so a name is found whole
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120)


def _broken(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.rstrip().endswith(" BROKEN")]


def test_untouched_tree_keeps_every_contract(tmp_path: Path) -> None:
    res = _lint(_copy(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout and _broken(res.stdout) == []


@pytest.mark.parametrize(("module", "line", "contract"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    target = tree / "src" / "cxrlab" / module
    target.write_text(target.read_text() + f"\n{line}  # added by test_layering\n")
    res = _lint(tree)
    assert res.returncode != 0, f"{line!r} in {module} kept every contract:\n{res.stdout}"
    broken = _broken(res.stdout)
    assert any(b.startswith(contract) for b in broken), f"expected {contract!r} broken, got {broken}"
    importer = "cxrlab." + module.removesuffix(".py").replace("/", ".")
    assert importer in res.stdout  # the report names the offending module


def test_a_new_top_level_module_must_be_placed_in_a_layer(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    (tree / "src" / "cxrlab" / "stray.py").write_text('"""A module no layer names."""\n')
    res = _lint(tree)
    assert res.returncode != 0 and "cxrlab.stray" in res.stdout, res.stdout


def test_prediction_schema_lives_below_run_and_evaluate() -> None:
    """`cxrlab.run` re-exports the schema of `cxrlab.tables`; evaluation loads neither torch nor run.py."""
    import numpy as np
    import pandas as pd

    import cxrlab.run as run
    import cxrlab.tables as tables

    for name in ("PROB_PREFIX", "prob_column", "prob_columns", "prediction_table"):
        assert getattr(run, name) is getattr(tables, name)
    frame = pd.DataFrame({"image": ["a.png", "b.png"], "patient": ["p1", "p2"], "view": ["PA", "AP"]})
    y, p = np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.3, 0.7]])
    table = tables.prediction_table(frame, y, p, ["Mass", "Nodule"])
    assert list(table.columns) == ["image", "patient", "view", "Mass", "Nodule", "prob_Mass", "prob_Nodule"]
    assert tables.prob_labels(table.columns) == ["Mass", "Nodule"]
    np.testing.assert_allclose(table[tables.prob_columns(["Nodule", "Mass"])].to_numpy(), p[:, ::-1])
    code = ("import sys, cxrlab.evaluate.evaluate, cxrlab.evaluate.ensemble, cxrlab.evaluate.compare; "
            "print(sorted(m for m in ('torch', 'cv2', 'cxrlab.run', 'cxrlab.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
