import numpy as np
import pandas as pd
import pytest

from cxrlab.data.phantom import LABELS, PREVALENCE, patient_of, render
from cxrlab.data.sources import load_source


def test_same_seed_same_image_and_different_seed_differs():
    a, b = render(5, size=96, seed=1), render(5, size=96, seed=1)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.labels == b.labels and a.boxes == b.boxes
    c = render(5, size=96, seed=2)
    assert not np.array_equal(a.pixels, c.pixels)


def test_image_is_grey_uint8_of_requested_size():
    img = render(0, size=80, seed=0)
    assert img.pixels.shape == (80, 80) and img.pixels.dtype == np.uint8
    assert img.pixels.std() > 10  # not a blank image


@pytest.mark.parametrize("size", [64, 256])
def test_boxes_lie_inside_the_image_and_match_labels(size):
    for i in range(40):
        item = render(i, size=size, seed=4)
        boxed = {lab for lab, _ in item.boxes}
        assert boxed == {k for k, v in item.labels.items() if v}
        for _, (x, y, w, h) in item.boxes:
            assert w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size


def test_label_frequencies_follow_the_prevalence():
    n = 400
    counts = dict.fromkeys(LABELS, 0)
    none = 0
    for i in range(n):
        lab = render(i, size=48, seed=11).labels
        none += not any(lab.values())
        for k in LABELS:
            counts[k] += lab[k]
    for k in LABELS:
        p = PREVALENCE[k]
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(counts[k] / n - p) < 4 * sd, (k, counts[k] / n, p)
    assert none / n > 0.15  # "No Finding" images exist


def test_patients_are_stable_and_own_consecutive_images():
    ids = [patient_of(i, 0) for i in range(30)]
    assert ids == [patient_of(i, 0) for i in range(30)]
    patients = [p for p, _ in ids]
    # follow-ups of a patient count up from 0
    for p in set(patients):
        fus = [f for q, f in ids if q == p]
        assert fus == list(range(len(fus)))
    assert len(set(patients)) < len(patients)  # some patients have several images


def test_written_dataset_is_nih_layout_read_by_the_nih_source(tiny_phantom):
    m = load_source("nih14", str(tiny_phantom), labels=list(LABELS), val_fraction=0.2, seed=0)
    assert len(m.frame) == 120
    assert set(m.frame["split"]) == {"train", "val", "test"}
    groups = m.frame.groupby("split")["patient"].apply(set)
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert not (groups["val"] & groups["test"])
    assert m.boxes is not None and len(m.boxes) > 0
    entry = pd.read_csv(tiny_phantom / "Data_Entry_2017.csv", header=None, skiprows=1)
    assert entry.shape[1] == 11  # NIH's header quirk: 9 names, 11 fields
    # every labelled lesion has a box and vice versa
    for img, row in m.frame.set_index("image").iterrows():
        name = img.split("/")[-1]
        boxed = set(m.boxes.loc[m.boxes["image"] == img, "label"])
        assert boxed == {k for k in LABELS if row[k] == 1}, name
