"""The audit's leaf (explain/audit.py) and its statistics (evaluate/audit.py): each number shown once with
the effect PLANTED (found, CI excluding 0) and once without it (not found)."""

import numpy as np
import pytest
import torch

from cxrlab.evaluate.audit import difference_ci, mean_ci
from cxrlab.evaluate.records import AuditLabel, AuditResult, AuditTarget, Estimate
from cxrlab.explain import audit as ex

S = 32


def _lungs(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S]
    one = (((xx - 10) / 5) ** 2 + ((yy - 15) / 9) ** 2 < 1) | (((xx - 22) / 5) ** 2 + ((yy - 15) / 9) ** 2 < 1)
    return np.broadcast_to(one, (n, S, S)).copy()


def _maps(n: int, inside: float, rng: np.random.Generator) -> np.ndarray:
    """Random maps with ``inside`` times more energy per pixel inside the lungs than outside."""
    m = rng.random((n, S, S))
    return np.where(_lungs(n), m * inside, m)


def test_energy_share_finds_a_planted_focus_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    lungs = _lungs(60)
    groups = np.repeat(np.arange(30), 2)  # two images a patient
    focused = ex.energy_share(_maps(60, 5.0, rng), lungs)
    blind = ex.energy_share(_maps(60, 1.0, rng), lungs)
    uniform = ex.uniform_baseline(lungs)["share"]
    assert np.allclose(blind, uniform, atol=0.03)  # a map that ignores the lungs scores the area fraction
    d, p = difference_ci(focused, uniform, groups, paired=True, n_boot=300)
    assert d.low > 0 and p < 0.05  # planted: found
    d0, _ = difference_ci(blind, uniform, groups, paired=True, n_boot=300)
    assert d0.low < 0 < d0.high  # not planted: not found
    est = mean_ci(focused, groups, n_boot=300)
    assert est.low < est.value < est.high and est.n_boot == 300


def test_zero_maps_have_no_share_and_are_left_out_of_the_mean():
    maps = np.zeros((3, S, S))
    maps[0, 10, 10] = 1
    share = ex.energy_share(maps, _lungs(3))
    assert share[0] == 1 and np.isnan(share[1:]).all()
    assert mean_ci(share, n_boot=50).value == 1


def test_pointing_game_iou_and_levels_against_planted_boxes():
    rng = np.random.default_rng(1)
    n = 40
    boxes = [[(float(x), float(y), 6.0, 6.0)] for x, y in rng.integers(0, S - 6, size=(n, 2))]
    masks = ex.boxes_to_masks(boxes, S)
    assert masks.sum(axis=(1, 2)).tolist() == [36] * n
    good = rng.random((n, S, S)) * 0.3 + masks  # brightest inside the box
    noise = rng.random((n, S, S))
    assert ex.pointing_hits(good, masks).mean() == 1
    assert ex.pointing_hits(noise, masks).mean() < 0.3
    assert ex.pointing_hits(np.ones((2, S, S)), masks[:2]).sum() == 0  # a constant map has no maximum
    level = ex.otsu_level(good)
    assert 0.2 < level < 0.9
    assert ex.iou_at(good, masks, level).mean() > 0.9 > ex.iou_at(noise, masks, level).mean()
    assert abs(ex.best_level(good, masks) - 0.5) < 0.3
    g = ex.gaussian_baseline(masks, level)
    assert set(g) == {"share", "hit", "iou"} and ex.uniform_baseline(masks)["hit"][0] == pytest.approx(36 / S**2)


def test_level_comes_from_the_maps_it_is_given_not_from_the_test_masks():
    rng = np.random.default_rng(2)
    val = rng.random((10, S, S)) ** 3
    assert ex.otsu_level(val) == ex.otsu_level(val.copy())  # no mask argument: it cannot see the test's
    assert ex.otsu_level(val) != ex.otsu_level(rng.random((10, S, S)))


def test_spearman_of_identical_and_of_unrelated_maps():
    rng = np.random.default_rng(3)
    a = rng.random((5, S, S))
    assert np.allclose(ex.spearman_per_image(a, a), 1)
    assert np.abs(ex.spearman_per_image(a, rng.random((5, S, S)))).max() < 0.15
    assert np.isnan(ex.spearman_per_image(np.ones((1, S, S)), a[:1])[0])


def test_randomisation_check_gradcam_correlates_less_than_the_input_edges():
    """A trained-ish model's Grad-CAM changes when its top layers are re-initialised; edges do not."""
    from cxrlab.inference import Predictor
    from cxrlab.models import build_model, cam_layer

    torch.manual_seed(0)
    model = build_model("simple_cnn", 2, in_chans=1, width=4, convs=1)
    rng = np.random.default_rng(4)
    imgs = (rng.random((8, S, S)) * 255).astype(np.uint8)
    pred = Predictor.for_model(model, "multilabel")
    layer = cam_layer(model)
    before = [p.detach().clone() for p in model.parameters()]
    maps = ex.cam_maps(pred, layer, imgs, list(range(8)), [0] * 8, "gradcam++")
    twin, twin_layer = ex.randomised_copy(model, layer, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # original untouched
    rmaps = ex.cam_maps(pred, twin_layer, imgs, list(range(8)), [0] * 8, "gradcam++", model=twin)
    cam_r = np.nanmean(ex.spearman_per_image(maps, rmaps))
    edges_r = np.nanmean(ex.spearman_per_image(ex.edge_maps(imgs), ex.edge_maps(imgs)))
    assert cam_r < 0.9 < edges_r
    auc_map = ex.deletion_auc(pred, imgs, maps, [0] * 8)
    auc_rand = ex.deletion_auc(pred, imgs, maps, [0] * 8, order="random")
    assert auc_map.shape == auc_rand.shape == (8,) and np.isfinite(auc_map).all()


def test_audit_record_round_trips():
    e = Estimate(0.4, 0.3, 0.5, 100)
    t = AuditTarget(5, 3, e, e, e, e, e, uniform={"hit": Estimate(0.1)}, gaussian={"hit": Estimate(0.2)})
    r = AuditResult("gradcam", {"Mass": AuditLabel(10, 6, e, e, Estimate(0.2), Estimate(0.3), None, 1, True, t)},
                    level=0.3, level_rule="Otsu", counts={"test_images": 20}, randomisation=e, suspects=[
                        {"image": "a.png", "label": "Mass", "outside": 0.9}], n_boot=100)
    back = AuditResult.from_dict(r.to_dict())
    assert back == r and back.flagged == ["Mass"] and back.to_dict()["format_version"] == 1
