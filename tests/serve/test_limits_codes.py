"""Upload limits answered by cxrlab with the documented codes, not by the framework's parser (issue 22.8).

Starlette's own limits answered ``400 Too many files`` past 1,000 files and ``400 Invalid
multipart data`` for a part header over 4 KiB (a long file name); docs/serve.md promises
413 for too many files and a file name cut to 80 characters.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serve_fixtures import first_images, trained_run

from cxrlab.serve.app import create_app
from cxrlab.serve.multipart import PART_HEADER_BYTES
from cxrlab.workflows.service import ModelService


@pytest.fixture(scope="module")
def served_run(tiny_phantom, tmp_path_factory):
    return trained_run(tiny_phantom, tmp_path_factory)


@pytest.fixture(scope="module")
def client(served_run):
    return TestClient(create_app(service=ModelService(served_run.path, "torch")))


@pytest.fixture(scope="module")
def image(tiny_phantom) -> bytes:
    return first_images(tiny_phantom, 1)[0].read_bytes()


def multipart(*parts: tuple[bytes, bytes], boundary: bytes = b"cxrlabBOUNDARY") -> tuple[bytes, dict[str, str]]:
    """A hand-made multipart body of (Content-Disposition value, data) parts, and its headers."""
    body = b"".join(b"--" + boundary + b"\r\nContent-Disposition: " + disp + b"\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n" for disp, data in parts)
    return body + b"--" + boundary + b"--\r\n", {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


def file_part(name: str, data: bytes, field: str = "files") -> tuple[bytes, bytes]:
    return f'form-data; name="{field}"; filename="{name}"'.encode(), data


def test_more_than_a_thousand_files_is_413_with_the_count(client, image):
    limit = client.app.state.limits.max_files
    body, headers = multipart(*[file_part(f"f{i}.png", b"x") for i in range(1001)])
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"1001 files in one request; the limit is {limit}"
    # just over cxrlab's limit: the same answer with that count, nothing decoded
    body, headers = multipart(*[file_part(f"f{i}.png", image) for i in range(limit + 1)])
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 413 and r.json()["detail"].startswith(f"{limit + 1} files in one request")


def test_a_5000_character_file_name_is_cut_to_80(client, image):
    name = "x" * 4996 + ".png"
    body, headers = multipart(file_part(name, image))
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 200, r.text
    shown = r.json()["results"][0]["file"]
    assert shown == name[:80] and len(shown) == 80
    # the same through an ordinary client (httpx builds the multipart body)
    r = client.post("/predict", files=[("files", (name, image, "image/png"))])
    assert r.status_code == 200 and r.json()["results"][0]["file"] == name[:80]


def test_a_part_header_past_the_limit_is_413_in_one_line(client, image):
    body, headers = multipart(file_part("y" * (PART_HEADER_BYTES + 10), image))
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "part header is longer than 64 KiB" in detail and "\n" not in detail


def test_malformed_bodies_text_fields_and_other_fields(client, image):
    body, headers = multipart(file_part("a.png", image))
    r = client.post("/predict", content=body[:-30], headers=headers)  # cut before the closing boundary
    assert r.status_code == 400 and "ends before its closing boundary" in r.json()["detail"]
    body, headers = multipart((b'form-data; name="files"', b"hello"))
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 422 and "holds text, not a file" in r.json()["detail"]
    # a file in another field is not an image for /predict: the usual "no image" answer
    body, headers = multipart(file_part("a.png", image, field="file"))
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 422 and "no image" in r.json()["detail"]
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "no image" in r.json()["detail"]
    r = client.post("/predict", content=body, headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["detail"]


def test_explain_takes_exactly_one_file(client, image):
    two = [("file", ("a.png", image, "image/png")), ("file", ("b.png", image, "image/png"))]
    r = client.post("/explain", files=two)
    assert r.status_code == 422 and "2 files in the field 'file'" in r.json()["detail"]
    r = client.post("/explain", files=[("files", ("a.png", image, "image/png"))])
    assert r.status_code == 422 and "no image" in r.json()["detail"]
    r = client.post("/explain", files=[("file", ("a.png", image, "image/png"))])
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"


def test_openapi_still_documents_the_upload_fields(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, field, kind in (("/predict", "files", "array"), ("/explain", "file", "string")):
        schema = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert schema["required"] == [field] and schema["properties"][field]["type"] == kind
