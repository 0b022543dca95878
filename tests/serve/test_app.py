"""The serve API with FastAPI's TestClient: every endpoint, every refused upload, tokens and limits."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib

import cv2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from serve_fixtures import first_images, trained_run

from conftest import run_cli
from cxrlab.data.phantom import LABELS
from cxrlab.errors import CxrlabError
from cxrlab.serve.app import check_host, create_app
from cxrlab.serve.limits import Limits, client_name
from cxrlab.workflows.service import ModelService

PROBS = [f"prob_{k}" for k in LABELS]


@pytest.fixture(scope="module")
def served_run(tiny_phantom, tmp_path_factory):
    return trained_run(tiny_phantom, tmp_path_factory)


@pytest.fixture(scope="module")
def phantom_images(tiny_phantom):
    return first_images(tiny_phantom)


@pytest.fixture(scope="module")
def service(served_run):
    return ModelService(served_run.path, "torch")


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service=service))


def png_bytes(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def dicom_bytes(arr: np.ndarray | None, frames: int = 1) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = 40, 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if arr is not None:
        ds.PixelData = np.repeat(arr[None], frames, 0).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A tiny, valid-looking PNG whose header claims 10,000 x 10,000 pixels (more than 36 MP, less than PIL's own bomb limit)."""
    raw = bytearray(png_bytes(np.zeros((8, 8), np.uint8)))
    ihdr = bytearray(raw[12:29])  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", 10_000, 10_000)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def post(client, *files, **params):
    return client.post("/predict", files=[("files", (n, b, "application/octet-stream")) for n, b in files],
                       params=params)


def test_health_model_card_page_and_openapi(client, served_run):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["engine"] == "torch" and h["model"] == "served"
    card = client.get("/model").json()
    assert card["labels"] == list(LABELS) and card["task"] == "multilabel"
    assert card["data"]["split"]["hash"] and card["metrics"]["macro_auc"]["ci_low"] is not None
    assert card["network_data_format"]["inputs"]["image"]["preprocess"]["size"] == 32
    assert card["ood"]["percentile"] == 99.0 and "mean" not in card["ood"]
    assert card["serving"]["thresholds"] == pytest.approx(served_run.read_model_record().thresholds)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/explain", "/model", "/healthz"} <= set(paths)


def test_predict_cli_and_api_agree(client, served_run, phantom_images, tmp_path):
    files = phantom_images[:4]
    for engine, c in (("torch", client), ("onnx", TestClient(create_app(served_run.path, "auto")))):
        out = tmp_path / f"{engine}.csv"
        r = run_cli("predict", served_run.path, *[a for f in files for a in ("-i", f)], "--engine", engine,
                    "--out", out)
        assert r.exit_code == 0, r.output
        cli = pd.read_csv(out)
        assert {"ood_score", "ood_flag"} <= set(cli.columns)
        api = post(c, *[(f.name, f.read_bytes()) for f in files]).json()
        assert api["engine"] == engine
        got = np.array([[res["probabilities"][k] for k in LABELS] for res in api["results"]])
        assert np.abs(got - cli[PROBS].to_numpy()).max() < 1e-6
        assert np.abs(np.array([res["ood"]["score"] for res in api["results"]]) - cli["ood_score"]).max() < 1e-5
        assert [res["prediction"] for res in api["results"]] == cli["prediction"].fillna("").tolist()
    js = tmp_path / "p.json"
    assert run_cli("predict", served_run.path, "-i", files[0], "--out", js).exit_code == 0
    assert pd.read_json(js).shape[0] == 1
    r = run_cli("predict", served_run.path, "-i", files[0], "--out", tmp_path / "p.txt")
    assert r.exit_code == 2 and "must end in .csv or .json" in r.stderr


def test_predict_answers_thresholded_decisions_mc_dropout_and_ood(client, phantom_images):
    f = phantom_images[0]
    r = post(client, (f.name, f.read_bytes()), mc_passes=3)
    assert r.status_code == 200
    res = r.json()["results"][0]
    assert set(res["probabilities"]) == set(LABELS) and res["file"] == f.name
    assert set(res["mc_dropout"]) == {"passes", "mean", "std"} and res["mc_dropout"]["passes"] == 3
    assert set(res["ood"]) == {"score", "threshold", "flag"}
    r = post(client, (f.name, f.read_bytes()), mc_passes=1000)
    assert r.status_code == 422


def test_explain_returns_an_overlay_png(client, phantom_images):
    data = phantom_images[1].read_bytes()
    r = client.post("/explain", files={"file": ("a.png", data, "image/png")}, params={"label": "Mass"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and r.headers["x-label"] == "Mass"
    assert cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape == (384, 384, 3)
    r = client.post("/explain", files={"file": ("a.png", data, "image/png")}, params={"method": "saliency"})
    assert r.status_code == 200
    r = client.post("/explain", files={"file": ("a.png", data, "image/png")}, params={"label": "Hernia"})
    assert r.status_code == 422 and "unknown label 'Hernia'" in r.json()["detail"]
    r = client.post("/explain", files={"file": ("a.png", data, "image/png")}, params={"method": "magic"})
    assert r.status_code == 422 and "unknown explanation method" in r.json()["detail"]


def _png_noise() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))


BAD = [
    ("text.png", b"hello, not an image", 415, "not a PNG, JPEG or DICOM"),
    ("pic.bmp", cv2.imencode(".bmp", np.zeros((9, 9), np.uint8))[1].tobytes(), 415, "judged by its content"),
    ("empty.png", b"", 422, "empty file"),
    ("trunc.png", _png_noise()[:300], 422, "truncated PNG"),
    ("garbage.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9", 422, "garbage.jpg: corrupt JPEG"),
    ("nopix.dcm", dicom_bytes(None), 422, "no pixel data"),
    ("multi.dcm", dicom_bytes(np.ones((40, 48)), frames=3), 422, "multi-frame DICOM (3 frames)"),
    ("bomb.png", bomb_png(), 422, "exceeds the limit of 36,000,000 pixels"),
]


@pytest.mark.parametrize(("name", "data", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_get_a_status_and_a_one_line_reason(client, name, data, status, message):
    r = post(client, (name, data))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert message in detail and "\n" not in detail and "cxrlab-upload" not in detail and detail.startswith(name)


def test_type_is_judged_by_content_and_names_are_never_paths(client, phantom_images, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    good = phantom_images[0].read_bytes()
    dcm = dicom_bytes(np.tile(np.arange(48, dtype=np.uint16) * 50, (40, 1)))
    r = post(client, ("../../evil.txt", good), ("C:\\x\\scan", dcm), ("/etc/passwd", good))
    assert r.status_code == 200, r.text
    assert [x["file"] for x in r.json()["results"]] == ["evil.txt", "scan", "passwd"]
    assert list(tmp_path.iterdir()) == []  # the upload folder is gone
    assert client_name("", 2) == "file 3" and client_name("\x00\x1b[31mred.png", 0) == "[31mred.png"


def test_count_size_and_concurrency_limits(service, phantom_images):
    data = phantom_images[0].read_bytes()
    small = TestClient(create_app(service=service, limits=Limits(max_files=2, max_file_bytes=len(data) - 1,
                                                                 max_body_bytes=4 * len(data) + 2000, max_pending=1)))
    r = post(small, *[("a.png", b"x")] * 3)
    assert r.status_code == 413 and "3 files in one request; the limit is 2" in r.json()["detail"]
    r = post(small, ("big.png", data))
    assert r.status_code == 413 and "big.png: file larger than the limit" in r.json()["detail"]
    r = post(small, ("a.png", data * 5))
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    r = post(small)
    assert r.status_code == 422 and "no image" in r.json()["detail"]
    small.app.state.gate.pending = 1  # one request in flight: the next is refused at once
    r = post(small, ("a.png", b"x"))
    assert r.status_code == 503 and "busy" in r.json()["detail"] and r.headers["retry-after"] == "1"
    small.app.state.gate.pending = 0
    assert small.get("/healthz").status_code == 200


def test_token_and_loopback(service, phantom_images, served_run):
    c = TestClient(create_app(service=service, token="s3cret"))
    assert c.get("/healthz").status_code == 200
    r = c.get("/model")
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]
    assert c.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    f = phantom_images[0]
    assert post(c, (f.name, f.read_bytes())).status_code == 401
    check_host("127.0.0.1", None)
    check_host("::1", None)
    check_host("0.0.0.0", "t")
    with pytest.raises(CxrlabError, match="reachable from other machines"):
        check_host("0.0.0.0", None)
    r = run_cli("serve", served_run.path, "--host", "0.0.0.0")
    assert r.exit_code == 2 and "--token" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("serve", served_run.path, "--engine", "tensorflow")
    assert r.exit_code == 2 and "unknown engine" in r.stderr


def test_card_command_writes_card_and_metadata_and_fits_ood_for_older_runs(served_run):
    trained = served_run.read_json(served_run.ood_file)
    served_run.ood_file.unlink()  # as a run trained before the OOD step: card fits it from the run's data
    r = run_cli("card", served_run.path)
    assert r.exit_code == 0, r.output
    assert "ood.json" in r.stdout and "card.md" in r.stdout and "metadata.json" in r.stdout
    refit = served_run.read_json(served_run.ood_file)
    assert refit["threshold"] == pytest.approx(trained["threshold"], rel=1e-5)
    assert refit["n_train"] == trained["n_train"] and refit["n_val"] == trained["n_val"]
    md = served_run.card_file.read_text()
    for part in ("Intended use", "Limitations", "synthetic phantom", "Macro AUC", "split hash", "Preprocessing",
                 "Out-of-distribution", "torch"):
        assert part in md, part
    meta = served_run.read_json(served_run.metadata_file)
    assert meta["thresholds"] and meta["library_versions"]["torch"] and meta["version"].startswith("0.")
