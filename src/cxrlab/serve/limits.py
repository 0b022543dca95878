"""What the server accepts: sizes, counts, types, pixels and concurrency, each with its status code.

=====  ===========================================================================
code   when
=====  ===========================================================================
400    a malformed multipart body
408    the body did not arrive within ``body_timeout`` seconds
413    request body, one file, the number of files or a part header over the limit
415    a file that is not PNG, JPEG or DICOM *by its content* (the name is ignored)
422    empty, undecodable, truncated, DICOM without pixels, multi-frame DICOM, or
       more pixels than ``max_pixels`` (a decompression bomb): one-line reason
429    ``max_per_client`` requests from this client's address already in the server
503    ``max_pending`` requests already admitted (retry later)
=====  ===========================================================================

A request's body is read in full (within ``body_timeout``, into a spooled
temporary file) *before* it is admitted: a client that sends headers and then
stalls holds its connection and one of its own ``max_per_client`` places, never
one of the ``max_pending`` places that other clients' requests need.

Uploads are copied into a fresh temporary folder under server-made names
(``upload-0`` ...), decoded there by the preprocessing contract
(:func:`cxrlab.data.preprocess.load_image`) and the folder is removed when the
request ends; a client's file name is only echoed back, never used as a path.
"""

from __future__ import annotations

import asyncio
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
    max_body_bytes: int | None = None
    """A whole request body; unset: room for two files of ``max_file_bytes`` plus the form, at least
    64 MiB (``max(64 MiB, 2 x max_file_bytes)``)."""
    max_pixels: int = 36_000_000
    """About 6,000 x 6,000: larger than any radiograph; a decoded float image stays under 150 MB."""
    max_pending: int = 32
    """Requests admitted at once (waiting or working); more are answered 503 at once."""
    decoders: int = 2
    """Requests decoding images at the same time (bounds peak memory)."""
    body_timeout: float = 30.0
    """Seconds a request's whole body may take to arrive (64 MiB in 30 s is about 2.2 MiB/s); then 408."""
    max_per_client: int = 4
    """Requests from one peer address in the server at once (reading their body or admitted); more get 429."""

    def __post_init__(self) -> None:
        if self.max_body_bytes is None:
            object.__setattr__(self, "max_body_bytes", max(64 * MiB, 2 * self.max_file_bytes))
        for k in ("max_files", "max_file_bytes", "max_body_bytes", "max_pixels", "max_pending", "decoders",
                  "max_per_client"):
            if getattr(self, k) < 1:
                raise CxrlabError(f"serve: {k} must be >= 1, got {getattr(self, k)}")
        if not self.body_timeout > 0:
            raise CxrlabError(f"serve: body_timeout must be > 0 seconds, got {self.body_timeout}")


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


class ClientCounter:
    """Requests in the server per peer address (event-loop state only).

    Behind a reverse proxy every client has the proxy's address: raise ``max_per_client`` there.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.active: dict[str, int] = {}

    def try_enter(self, peer: str) -> bool:
        if self.active.get(peer, 0) >= self.limit:
            return False
        self.active[peer] = self.active.get(peer, 0) + 1
        return True

    def leave(self, peer: str) -> None:
        self.active[peer] -= 1
        if not self.active[peer]:
            del self.active[peer]


BODY_KEY = "cxrlab.body"
"""Where :class:`LimitMiddleware` leaves the request's body (a file object, read from its start) in the scope."""


class Refused(Exception):
    """An answer given by the middleware instead of the app (status, one-line detail, extra headers)."""

    def __init__(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or []


class Disconnected(Exception):
    """The client went away before its body was in."""


async def _answer(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A refusal of the middleware; it closes the connection (a body it did not read is not drained)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LimitMiddleware:
    """ASGI middleware for the upload endpoints: per-client cap, body size and read timeout, admission.

    In order: 429 when the client already has ``max_per_client`` requests in the server; 413
    from ``Content-Length`` before reading; the body read in full into a spooled temporary file
    (counted as it arrives, since a client may lie about or omit its length: 413; not in within
    ``body_timeout``: 408); only then 503 when ``max_pending`` requests are admitted.  The app
    finds the body at ``scope[BODY_KEY]`` (:func:`cxrlab.serve.multipart.read_form` parses it).
    """

    def __init__(self, app: Any, limits: Limits, gate: RequestGate, paths: tuple[str, ...] = ("/predict", "/explain"),
                 clients: ClientCounter | None = None):
        self.app, self.limits, self.gate, self.paths = app, limits, gate, paths
        self.clients = clients or ClientCounter(limits.max_per_client)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        peer = str((scope.get("client") or ("unknown",))[0])
        if not self.clients.try_enter(peer):
            await _answer(send, 429, f"too many requests at once from {peer}: at most {self.clients.limit} per "
                                     "client (--max-per-client); retry shortly", [(b"retry-after", b"1")])
            return
        body = None
        try:
            body = await self._read_body(scope, receive)
            if not self.gate.try_enter():
                raise Refused(503, f"server busy: {self.gate.limit} requests in progress; retry shortly",
                              [(b"retry-after", b"1")])
            try:
                await self.app({**scope, BODY_KEY: body}, _replayed(receive), send)
            finally:
                self.gate.leave()
        except Refused as r:
            await _answer(send, r.status, r.detail, r.headers)
        except Disconnected:
            pass
        finally:
            if body is not None:
                body.close()
            self.clients.leave(peer)

    async def _read_body(self, scope: Any, receive: Any) -> Any:
        """The whole body in a spooled temporary file (in memory up to 1 MiB), or :class:`Refused`."""
        limit = self.limits.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise Refused(413, f"request of {int(length) / MiB:.1f} MiB exceeds the limit of {limit // MiB} MiB")
        body = tempfile.SpooledTemporaryFile(max_size=MiB)
        seen = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise Disconnected
                    chunk = message.get("body", b"")
                    seen += len(chunk)
                    if seen > limit:
                        raise Refused(413, f"request body exceeds the limit of {limit // MiB} MiB")
                    body.write(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            body.close()
            raise Refused(408, f"request body not received within {self.limits.body_timeout:g} s (--body-timeout); "
                               f"{seen} bytes arrived") from None
        except BaseException:
            body.close()
            raise
        body.seek(0)
        return body


def _replayed(receive: Any) -> Any:
    """``receive`` for the app: the body was consumed (it is at ``scope[BODY_KEY]``); later calls pass through."""
    done = False

    async def again() -> Any:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return again
