"""The upload endpoints' multipart parser: cxrlab's limits and status codes, not the framework's.

Starlette's form parser (what FastAPI's ``File()`` parameters use) answers its own
limits with ``400`` and its own words: over 1,000 parts ``400 Too many files``, a part
header over 4 KiB (a file name of a few thousand characters) ``400 Invalid multipart
data``, and the header limit cannot be set through it.  The body has been read in full by
:class:`cxrlab.serve.limits.LimitMiddleware` already, so it is parsed here, in the worker
thread, with python-multipart's parser (the one Starlette uses) set from
:class:`~cxrlab.serve.limits.Limits`: every file is counted (the answer names the real
count), only the first ``max_files`` are kept, each kept file is cut off at
``max_file_bytes``, and a part header may be :data:`PART_HEADER_BYTES` long so that any
sane file name reaches :func:`~cxrlab.serve.limits.client_name` (which cuts it to 80).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from cxrlab.serve.limits import MiB, client_name, fail

PART_HEADER_BYTES = 64 * 1024
"""Longest header line of one part (``Content-Disposition`` with the file name): 16x a path's 4,096."""
SPOOL_BYTES = MiB
"""Each kept file stays in memory up to this size, then moves to an anonymous temporary file."""


@dataclass
class Part:
    """One uploaded file (the :class:`~cxrlab.serve.limits.Upload` protocol): the client's name and its bytes."""

    filename: str | None
    file: BinaryIO


@dataclass
class Form:
    """The files sent in one field: the first ``max_files`` kept, all of them counted."""

    files: list[Part] = field(default_factory=list)
    count: int = 0

    def close(self) -> None:
        for p in self.files:
            p.file.close()


class _Reader:
    """python-multipart callbacks that keep the files of one field, within the limits."""

    def __init__(self, name: str, max_files: int, max_file_bytes: int):
        self.name, self.max_files, self.max_file_bytes = name, max_files, max_file_bytes
        self.form = Form()
        self._header, self._value = b"", b""
        self._disposition = b""
        self._target: IO[bytes] | None = None
        self._size = 0
        self._shown = ""

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data}

    def part_begin(self) -> None:
        self._disposition, self._target, self._size = b"", None, 0

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name", b"").decode("latin-1") != self.name:
            return  # another field: not ours, its bytes are skipped
        if b"filename" not in options:
            raise fail(422, f"the multipart field '{self.name}' holds text, not a file: send each image as a file")
        self.form.count += 1
        if self.form.count > self.max_files:
            return  # counted for the answer, not kept
        raw = options[b"filename"]
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("latin-1")
        self._shown = client_name(name, self.form.count - 1)
        self._target = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.form.files.append(Part(name, self._target))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target is None:
            return
        self._size += end - start
        if self._size > self.max_file_bytes:
            raise fail(413, f"{self._shown}: file larger than the limit of {self.max_file_bytes // MiB} MiB")
        self._target.write(data[start:end])


def _parser(boundary: bytes, callbacks: dict[str, Any]) -> MultipartParser:
    """python-multipart's parser with a part header of :data:`PART_HEADER_BYTES`.

    Releases before the header limits (2026) take no such argument and have no such limit.
    """
    try:
        return MultipartParser(boundary, callbacks, max_header_size=PART_HEADER_BYTES)
    except TypeError:
        return MultipartParser(boundary, callbacks)


def read_form(body: BinaryIO, content_type: str | None, name: str, max_files: int, max_file_bytes: int) -> Form:
    """The files of field ``name`` in a multipart body held in ``body``.

    Args:
        body: the whole request body (read from its start).
        content_type: the request's ``Content-Type`` (a body of another type has no files).
        name: the multipart field (``files`` for ``/predict``, ``file`` for ``/explain``).
        max_files: files kept (all are counted: the caller answers 413 with the count).
        max_file_bytes: longest file; 413 naming the file past it.

    Returns:
        The kept files (each read from its start) and how many were sent; close it when done.

    Raises:
        HTTPException: 413 (a file or a part header over its limit), 422 (text where a file belongs),
            400 (a malformed multipart body), each with a one-line reason.
    """
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        return Form()
    boundary = params.get(b"boundary")
    if not boundary:
        raise fail(400, "multipart body without a boundary in its Content-Type header")
    reader = _Reader(name, max_files, max_file_bytes)
    try:
        parser = _parser(boundary, reader.callbacks())
        body.seek(0)
        while chunk := body.read(MiB):
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise fail(400, "malformed multipart body: it ends before its closing boundary")
    except MultipartParseError as e:
        reader.form.close()
        if "header size" in str(e):
            raise fail(413, f"a multipart part header is longer than {PART_HEADER_BYTES // 1024} KiB "
                            "(a file name that long?)") from None
        raise fail(400, f"malformed multipart body: {e}") from None
    except BaseException:
        reader.form.close()
        raise
    for p in reader.form.files:
        p.file.seek(0)
    return reader.form
