import numpy as np
import pytest

from cxrlab.data.labels import apply_policy, redraw, relabel_uncertain
from cxrlab.errors import CxrlabError

NAN = np.nan
RAW = np.array([[1, 0, -1], [-1, NAN, 0], [-1, -1, NAN], [0, 1, -1]], np.float32)
LABS = ["A", "B", "C"]


def test_ignore_zeros_ones_and_blank():
    ig = apply_policy(RAW, LABS, "ignore").targets
    assert np.isnan(ig[0, 2]) and np.isnan(ig[1, 0]) and ig[1, 1] == 0  # blank -> negative
    assert (apply_policy(RAW, LABS, "zeros").targets[RAW == -1] == 0).all()
    assert (apply_policy(RAW, LABS, "ones").targets[RAW == -1] == 1).all()
    blank_ignored = apply_policy(RAW, LABS, "zeros", blank="ignore").targets
    assert np.isnan(blank_ignored[1, 1]) and np.isnan(blank_ignored[2, 2])


def test_per_label_policies_with_default_and_counts():
    plan = apply_policy(RAW, LABS, {"A": "ones", "default": "zeros"})
    assert plan.targets[1, 0] == 1 and plan.targets[2, 1] == 0 and plan.targets[0, 2] == 0
    assert plan.counts["A"] == {"uncertain": 2, "blank": 0, "policy": "ones"}
    with pytest.raises(CxrlabError, match="unknown labels"):
        apply_policy(RAW, LABS, {"Z": "ones"})
    with pytest.raises(CxrlabError, match="unknown policy"):
        apply_policy(RAW, LABS, "maybe")
    with pytest.raises(CxrlabError, match="expected 1, 0, -1 or blank"):
        apply_policy(np.array([[2.0]]), ["A"])


def test_random_flip_redraws_each_epoch_with_per_label_p():
    raw = np.full((20000, 2), -1, np.float32)
    raw[:10, :] = 1
    plan = apply_policy(raw, ["A", "B"], "random-flip", flip_p={"A": 0.2, "B": 0.8})
    e1 = redraw(plan, np.random.default_rng(1))
    e2 = redraw(plan, np.random.default_rng(2))
    assert (e1[:10] == 1).all()  # certain labels untouched
    assert e1[10:, 0].mean() == pytest.approx(0.2, abs=0.01) and e1[10:, 1].mean() == pytest.approx(0.8, abs=0.01)
    assert (e1 != e2).any() and set(np.unique(e1)) <= {0.0, 1.0}
    assert np.array_equal(redraw(plan, np.random.default_rng(1)), e1)


def test_selftrained_masks_then_relabels_only_uncertain():
    plan = apply_policy(RAW, LABS, {"A": "selftrained", "default": "zeros"})
    assert np.isnan(plan.targets[1, 0]) and np.isnan(plan.targets[2, 0])
    probs = np.full(RAW.shape, 0.7, np.float32)
    t = relabel_uncertain(plan, probs)
    assert t[1, 0] == pytest.approx(0.7) and t[2, 0] == pytest.approx(0.7)
    assert t[0, 0] == 1 and t[2, 1] == 0  # certain entries and other policies kept
    assert relabel_uncertain(plan, probs, hard=True)[1, 0] == 1
