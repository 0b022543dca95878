import numpy as np
import pytest

from cxrlab.explain.boxes import heatmap_to_boxes, iou, normalize, random_boxes_like, score_image


def test_iou_hand_computed():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 4, 4), (1, 1, 2, 2)) == pytest.approx(4 / 16)


def test_two_blobs_give_two_boxes_in_xywh():
    h = np.zeros((50, 60))
    h[10:20, 5:15] = 1.0  # 10 x 10 at x=5, y=10
    h[30:34, 40:52] = 0.8  # 12 wide, 4 high at x=40, y=30
    boxes = heatmap_to_boxes(h, threshold=0.5)
    assert boxes == [(5.0, 10.0, 10.0, 10.0), (40.0, 30.0, 12.0, 4.0)]


def test_threshold_is_on_the_min_max_normalised_map():
    h = np.full((20, 20), 10.0)
    h[5:8, 5:8] = 12.0  # normalised: 1 inside, 0 outside
    h[12:15, 12:15] = 10.9  # normalised 0.45: below 0.5
    assert heatmap_to_boxes(h, 0.5) == [(5.0, 5.0, 3.0, 3.0)]
    assert len(heatmap_to_boxes(h, 0.4)) == 2


def test_constant_map_gives_no_box():
    assert heatmap_to_boxes(np.ones((8, 8))) == []
    assert normalize(np.ones((3, 3))).max() == 0


def test_diagonal_pixels_are_one_component():
    h = np.zeros((6, 6))
    h[1, 1] = h[2, 2] = h[3, 3] = 1
    assert heatmap_to_boxes(h) == [(1.0, 1.0, 3.0, 3.0)]


def test_score_image_precision_and_hit():
    truth = [(0, 0, 10, 10)]
    pred = [(0, 0, 10, 10), (50, 50, 5, 5)]
    prec, hit = score_image(pred, truth, 0.1)
    assert prec == 0.5 and hit
    assert score_image([], truth) == (0.0, False)
    assert score_image([(8, 8, 10, 10)], truth, 0.1) == (0.0, False)  # IoU 4/196 < 0.1


def test_random_boxes_keep_sizes_and_stay_inside():
    rng = np.random.default_rng(0)
    pred = [(1, 2, 30, 20), (0, 0, 5, 5)]
    for _ in range(50):
        out = random_boxes_like(pred, 100, 80, rng)
        assert [(w, h) for _, _, w, h in out] == [(30, 20), (5, 5)]
        for x, y, w, h in out:
            assert 0 <= x <= 100 - w and 0 <= y <= 80 - h
