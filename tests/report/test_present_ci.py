"""``ci`` and ``diff_ci`` share one body: the same rules for missing values and bounds, and the
difference only in the sign of every number."""

from __future__ import annotations

import pytest

from cxrlab.evaluate.records import Estimate
from cxrlab.report import present

NAN = float("nan")


@pytest.mark.parametrize(("args", "plain", "signed"), [
    ((0.8123, 0.7701, 0.8512), "0.812 [0.770, 0.851]", "+0.812 [+0.770, +0.851]"),
    ((-0.0341, -0.06, 0.0124), "-0.034 [-0.060, 0.012]", "-0.034 [-0.060, +0.012]"),
    ((0.5, None, 0.6), "0.500", "+0.500"),  # a missing bound: the value alone
    ((0.5, 0.4, NAN), "0.500", "+0.500"),
    ((NAN, 0.1, 0.2), "n/a", "n/a"),  # no value, no interval
    ((None, 0.1, 0.2), "n/a", "n/a"),
    ((3, 1, 4), "3 [1, 4]", "+3.000 [+1.000, +4.000]"),  # integers stay integers unsigned only
])
def test_ci_and_diff_ci_follow_one_rule(args, plain, signed):
    assert present.ci(*args) == plain
    assert present.diff_ci(*args) == signed


def test_an_estimate_gives_its_bounds_and_digits_apply_to_all_three():
    e = Estimate(0.81234, 0.76, 0.86)
    assert present.ci(e) == "0.812 [0.760, 0.860]"
    assert present.diff_ci(e, digits=1) == "+0.8 [+0.8, +0.9]"
    assert present.ci(e, 0.0, 1.0) == present.ci(e)  # an Estimate's own bounds win over the arguments
    assert present.ci(Estimate(NAN, 0.1, 0.2)) == present.diff_ci(Estimate(NAN, 0.1, 0.2)) == "n/a"
