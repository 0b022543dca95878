"""What the server accepts: sizes, counts, types, pixels and concurrency, each with its status code.

=====  ===========================================================================
code   when
=====  ===========================================================================
413    request body, one file or the number of files over the limit
415    a file that is not PNG, JPEG or DICOM *by its content* (the name is ignored)
422    empty, undecodable, truncated, DICOM without pixels, multi-frame DICOM, or
       more pixels than ``max_pixels`` (a decompression bomb): one-line reason
503    ``max_pending`` requests already admitted (retry later)
=====  ===========================================================================

Uploads are copied into a fresh temporary folder under server-made names
(``upload-0`` ...), decoded there by the preprocessing contract
(:func:`cxrlab.data.preprocess.load_image`) and the folder is removed when the
request ends; a client's file name is only echoed back, never used as a path.
"""

from __future__ import annotations

import json
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import numpy as np
from fastapi import HTTPException

from cxrlab.data.io import sniff
from cxrlab.data.preprocess import Preprocess, load_image
from cxrlab.errors import CxrlabError

MiB = 2**20


@dataclass(frozen=True)
class Limits:
    """The server's limits (see the module's table for what each answers)."""

    max_files: int = 16
    max_file_bytes: int = 32 * MiB
    max_body_bytes: int = 64 * MiB
    max_pixels: int = 36_000_000
    """About 6,000 x 6,000: larger than any radiograph; a decoded float image stays under 150 MB."""
    max_pending: int = 32
    """Requests admitted at once (waiting or working); more are answered 503 at once."""
    decoders: int = 2
    """Requests decoding images at the same time (bounds peak memory)."""

    def __post_init__(self) -> None:
        for k in ("max_files", "max_file_bytes", "max_body_bytes", "max_pixels", "max_pending", "decoders"):
            if getattr(self, k) < 1:
                raise CxrlabError(f"serve: {k} must be >= 1, got {getattr(self, k)}")


class Upload(Protocol):
    """What the server reads of an uploaded file (FastAPI's ``UploadFile`` is one)."""

    filename: str | None
    file: BinaryIO


def client_name(filename: str | None, index: int) -> str:
    """A printable, short name to echo back for an upload (its last path part; never used as a path)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if unicodedata.category(c)[0] not in "CZ" or c == " ").strip()
    return name[:80] or f"file {index + 1}"


def fail(status: int, detail: str) -> HTTPException:
    """An HTTP error with a one-line reason (``{"detail": "..."}``)."""
    return HTTPException(status_code=status, detail=" ".join(detail.split()))


def _copy(src: BinaryIO, dst: Path, limit: int, name: str) -> int:
    """Copy at most ``limit`` bytes; 413 past it (the upload's declared size is not trusted)."""
    src.seek(0)
    n = 0
    with open(dst, "wb") as out:
        while chunk := src.read(MiB):
            n += len(chunk)
            if n > limit:
                raise fail(413, f"{name}: file larger than the limit of {limit // MiB} MiB")
            out.write(chunk)
    return n


def _decode(path: Path, name: str, pre: Preprocess) -> np.ndarray:
    if sniff(path) not in ("png", "jpeg", "dicom"):
        raise fail(415, f"{name}: not a PNG, JPEG or DICOM image (judged by its content, not its name)")
    try:
        return load_image(path, pre)
    except CxrlabError as e:
        raise fail(422, str(e).replace(str(path), name)) from None


class Decoder:
    """Turns uploads into model inputs by the run's preprocessing contract, within :class:`Limits`."""

    def __init__(self, pre: Preprocess, limits: Limits):
        self.pre = replace(pre, max_pixels=limits.max_pixels)  # not a pixel setting: same pixels
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.decoders)

    def check_count(self, n: int) -> None:
        if n == 0:
            raise fail(422, "no image: send one or more files in the multipart field 'files'")
        if n > self.limits.max_files:
            raise fail(413, f"{n} files in one request; the limit is {self.limits.max_files}")

    def decode(self, uploads: list[Upload]) -> tuple[np.ndarray, list[str]]:
        """(N, S, S) uint8 model inputs and the names to answer with; HTTP errors as above."""
        self.check_count(len(uploads))
        names = [client_name(u.filename, i) for i, u in enumerate(uploads)]
        with self._slots, tempfile.TemporaryDirectory(prefix="cxrlab-upload-") as tmp:
            images = []
            for i, (u, name) in enumerate(zip(uploads, names, strict=True)):
                path = Path(tmp) / f"upload-{i}"
                if _copy(u.file, path, self.limits.max_file_bytes, name) == 0:
                    raise fail(422, f"{name}: empty file")
                images.append(_decode(path, name, self.pre))
                path.unlink()
        return np.stack(images), names


class RequestGate:
    """Admission control: at most ``limit`` requests in the server at once (event-loop state only)."""

    def __init__(self, limit: int):
        self.limit, self.pending = limit, 0

    def try_enter(self) -> bool:
        if self.pending >= self.limit:
            return False
        self.pending += 1
        return True

    def leave(self) -> None:
        self.pending -= 1


async def _answer(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LimitMiddleware:
    """ASGI middleware for the upload endpoints: 413 before reading an oversized body, 503 when full.

    The body is counted as it arrives too (a client may lie about or omit its length).
    """

    def __init__(self, app: Any, limits: Limits, gate: RequestGate, paths: tuple[str, ...] = ("/predict", "/explain")):
        self.app, self.limits, self.gate, self.paths = app, limits, gate, paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _answer(send, 413, f"request of {int(length) / MiB:.1f} MiB exceeds the limit of "
                                     f"{limit // MiB} MiB")
            return
        if not self.gate.try_enter():
            await _answer(send, 503, f"server busy: {self.gate.limit} requests in progress; retry shortly",
                          [(b"retry-after", b"1")])
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise fail(413, f"request body exceeds the limit of {limit // MiB} MiB")
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.gate.leave()
