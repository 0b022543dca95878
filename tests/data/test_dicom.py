"""DICOM reading: rescale, VOI window, MONOCHROME1, multi-frame and corrupt files."""

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrlab.data.io import read_gray, to_uint8_resized
from cxrlab.data.sources import load_source
from cxrlab.errors import CxrlabError


def write_dicom(path, arr, photometric="MONOCHROME2", slope=None, intercept=None, window=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = "P1"
    frames = arr.shape[0] if arr.ndim == 3 else 1
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = (np.arange(64)[None, :].repeat(48, 0) * 60).astype(np.uint16)  # 0..3780, 12-bit


def test_rescale_slope_intercept_kept_at_full_precision(tmp_path):
    img = read_gray(write_dicom(tmp_path / "a.dcm", RAMP, slope=2, intercept=-100))
    assert img.dtype == np.float32 and img.shape == (48, 64)
    assert np.allclose(img, RAMP * 2.0 - 100)


def test_window_and_monochrome1(tmp_path):
    win = read_gray(write_dicom(tmp_path / "w.dcm", RAMP, window=(1000, 400)))
    assert win[0, 0] == win.min() and win[0, -1] == win.max()
    assert np.isclose(win[0, 20], win.max())  # 1200 is above the window: saturated
    m1 = read_gray(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1"))
    assert m1[0, 0] == m1.max() and m1[0, -1] == m1.min()  # inverted: bright = dense
    small = to_uint8_resized(m1, 16)
    assert small[0, 0] == 255 and small[0, -1] < 10


def test_multiframe_and_corrupt_dicom_are_clear_errors(tmp_path):
    multi = write_dicom(tmp_path / "multi.dcm", np.stack([RAMP, RAMP]))
    with pytest.raises(CxrlabError, match="multi.dcm: multi-frame DICOM"):
        read_gray(multi)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 10)
    with pytest.raises(CxrlabError, match="bad.dcm: cannot read DICOM"):
        read_gray(bad)


def test_dicom_referenced_from_a_csv_source(tmp_path):
    for i in range(6):
        write_dicom(tmp_path / f"{i}.dcm", RAMP + i)
    pd.DataFrame({"path": [f"{i}.dcm" for i in range(6)], "label": ["a", "b"] * 3}).to_csv(
        tmp_path / "labels.csv", index=False)
    m = load_source("csv", str(tmp_path))
    assert read_gray(m.root / m.frame["image"].iloc[0]).shape == (48, 64)
