"""The NIH reader on the real public label tables (skipped without ../shared/data/real)."""

import pytest

from conftest import REAL, needs_real
from cxrlab.data.io import read_gray
from cxrlab.data.sources.nih import NIH14_LABELS, nih_tables, read_bbox_list

pytestmark = needs_real
LC = REAL / "label_csvs"


@pytest.fixture(scope="module")
def nih():
    return nih_tables(LC / "Data_Entry_2017_v2020.csv.gz", LC / "train_val_list.txt.gz", LC / "test_list.txt.gz")


def test_official_split_sizes_and_no_shared_patient(nih):
    frame, labels = nih
    assert labels == list(NIH14_LABELS)
    assert len(frame) == 112_120
    counts = frame["split"].value_counts()
    assert counts["train"] == 86_524 and counts["test"] == 25_596
    train_p = set(frame.loc[frame["split"] == "train", "patient"])
    test_p = set(frame.loc[frame["split"] == "test", "patient"])
    assert not train_p & test_p
    assert frame["patient"].nunique() == 30_805


def test_label_totals_match_the_published_counts(nih):
    frame, _ = nih
    totals = frame[list(NIH14_LABELS)].sum().astype(int)
    # Wang et al. 2017 / NIH release notes
    assert totals["Hernia"] == 227 and totals["Pneumonia"] == 1431
    assert totals["Infiltration"] == 19_894 and totals["Cardiomegaly"] == 2776
    no_finding = (frame[list(NIH14_LABELS)].sum(axis=1) == 0).sum()
    assert no_finding == 60_361


def test_bbox_list_reads_984_boxes_in_8_known_classes():
    boxes = read_bbox_list(LC / "BBox_List_2017.csv.gz")
    assert len(boxes) == 984
    assert set(boxes["label"]) <= set(NIH14_LABELS) and boxes["label"].nunique() == 8
    assert (boxes[["w", "h"]] > 0).all().all()


def test_real_dicom_monochrome1_is_inverted():
    mono2 = read_gray(REAL / "samples" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    mono1 = read_gray(REAL / "samples" / "Fake_MONOHR1.dcm")  # same pixels, MONOCHROME1 header
    assert mono2.shape == (1024, 1024)
    assert mono2[:40, :40].mean() < 60  # background dark as displayed
    assert abs((mono1 + mono2) - (mono1.max() + mono1.min())).max() < 1e-3
    assert mono1[:40, :40].mean() > 190


def test_real_rgb_jpeg_reads_as_grey():
    img = read_gray(REAL / "samples" / "16747_3_1.jpg")
    assert img.ndim == 2 and img.shape == (885, 1036)
