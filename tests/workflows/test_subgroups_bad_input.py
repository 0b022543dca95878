"""``cxrlab subgroups --by ATTR`` where ATTR has one value (no sites recorded): one error line, exit 2, and the
earlier analysis (``subgroups.json``, the report's section) left as it was (finding 3 of the new-user pass)."""

from __future__ import annotations

import pytest

from conftest import one_line, run_cli, train_tiny
from cxrlab.workflows.subgroups import subgroups_run


@pytest.fixture(scope="module")
def run(tiny_phantom, tmp_path_factory):
    path = train_tiny(tiny_phantom, tmp_path_factory.mktemp("runs"), "sub_bad", 0)
    subgroups_run(path, ["sex"], n_boot=20)  # the earlier analysis a wrong --by must not overwrite
    return path


def test_one_value_attribute_is_one_error_line_and_nothing_is_overwritten(run):
    before = {f: (run / f).read_bytes() for f in ("subgroups.json", "report.html")}
    msg = one_line(lambda: subgroups_run(run, ["site"], n_boot=20))
    assert "site: one value only (all " in msg and "test images 'unknown')" in msg
    assert "left as they were" in msg and "--by sex" in msg  # what to group by instead
    res = run_cli("subgroups", run, "--by", "site", "--n-boot", "20")
    assert res.exit_code == 2
    out = (res.stdout + res.stderr).strip()
    assert "site: one value only" in out and len(out.splitlines()) == 1 and "Traceback" not in out
    assert {f: (run / f).read_bytes() for f in before} == before


def test_one_value_attribute_beside_others_is_analysed_and_listed(run):
    r = subgroups_run(run, ["sex", "site"], n_boot=20)
    assert list(r.groupings["site"].groups) == ["unknown"] and len(r.groupings["sex"].groups) == 2
    assert "One value only in these images (nothing to compare, no rows): site (unknown)." in \
        (run / "report.html").read_text()
