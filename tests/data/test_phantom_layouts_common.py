"""The phantom writers' shared pieces: one DICOM writer (VinDr, RSNA) and one phantom.json writer."""

from __future__ import annotations

import json

import numpy as np
import pydicom

from cxrlab.data.phantom_layouts import common, kermany, rsna, tbx11k, vindr


def test_one_dicom_writer_serves_the_vindr_and_rsna_phantoms(tmp_path):
    assert vindr.save_dicom is common.save_dicom and rsna.save_dicom is common.save_dicom
    pixels = (np.arange(24 * 32) % 251).astype(np.uint8).reshape(24, 32)
    path = tmp_path / "a" / "x.dcm"
    common.save_dicom(path, pixels, PatientSex="F", PatientAge="51", ViewPosition="PA")
    ds = pydicom.dcmread(path)
    assert (str(ds.PatientSex), str(ds.PatientAge), str(ds.ViewPosition)) == ("F", "51", "PA")
    assert (ds.Rows, ds.Columns, ds.PhotometricInterpretation) == (24, 32, "MONOCHROME2")
    assert np.array_equal(ds.pixel_array, pixels)


def test_phantom_json_starts_alike_and_keeps_each_layouts_fields_in_order(tmp_path):
    common.write_meta(tmp_path, "x", 5, 32, 7, b=1, a=[2])
    text = (tmp_path / "phantom.json").read_text()
    assert text == json.dumps({"generator": "cxrlab.phantom", "layout": "x", "n": 5, "size": 32, "seed": 7,
                               "b": 1, "a": [2]}, indent=2) + "\n"
    head = ["generator", "layout", "n", "size", "seed"]
    out = tbx11k.write_phantom_tbx11k(tmp_path / "t", n=12, size=32, seed=1, workers=1)
    meta = json.loads((out / "phantom.json").read_text())
    assert list(meta) == [*head, "tb_fraction", "sick_fraction", "val_fraction", "counts"]
    assert sum(meta["counts"].values()) == 12
    for masks in (False, True):
        out = kermany.write_phantom_kermany(tmp_path / f"k{masks}", n=24, size=32, seed=1, workers=1,
                                            val_per_class=0, masks=masks)
        meta = json.loads((out / "phantom.json").read_text())
        tail = ["pneumonia_fraction", "test_fraction", "val_per_class", "shared_patients", "counts"]
        assert list(meta) == [*head, *tail, *(["masks"] if masks else [])]
        assert meta["layout"] == "kermany" and sum(meta["counts"].values()) == 24
