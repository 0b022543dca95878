"""Slow and stalled clients against a real uvicorn server (issue 22.4).

Before: 33 connections that sent their headers and then nothing held all 32 admission
places, and every other ``/predict`` got 503 for as long as they stayed connected.  Now a
body is read in full (within ``--body-timeout``) before the request is admitted, and one
client address holds at most ``--max-per-client`` requests.  The stalled clients are raw
sockets, each bound to its own loopback address (127.0.1.x: Linux routes all of
127.0.0.0/8 to the loopback device), so the per-client cap does not stop them first.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_fixtures import first_images, trained_run

from cxrlab.serve.app import create_app
from cxrlab.serve.limits import Limits
from cxrlab.workflows.service import ModelService


@pytest.fixture(scope="module")
def service(tiny_phantom, tmp_path_factory):
    return ModelService(trained_run(tiny_phantom, tmp_path_factory).path, "torch")


@pytest.fixture(scope="module")
def image(tiny_phantom) -> bytes:
    return first_images(tiny_phantom, 1)[0].read_bytes()


@contextlib.contextmanager
def serving(service: ModelService, limits: Limits) -> Iterator[tuple[str, object]]:
    """A uvicorn server in a thread on a free loopback port: (base URL, app)."""
    import uvicorn

    app = create_app(service=service, limits=limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def stalled(url: str, source: str, length: int = 100_000) -> socket.socket:
    """A connection from ``source`` that sends a /predict request's headers and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((host, int(port)))
    s.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
              f"Content-Length: {length}\r\n\r\n".encode())
    return s


def reading(app, n: int, timeout: float = 10) -> None:
    """Wait until the server holds ``n`` requests (reading their bodies or admitted)."""
    deadline = time.monotonic() + timeout
    while sum(app.state.clients.active.values()) < n:
        assert time.monotonic() < deadline, f"the server holds {app.state.clients.active}, expected {n} requests"
        time.sleep(0.02)


def answer(s: socket.socket) -> bytes:
    """What the server sent on ``s`` until it closed the connection."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_forty_stalled_uploads_do_not_block_twenty_others(service, image):
    limits = Limits()  # the defaults: 32 admitted, 4 per client, 30 s to send a body
    with serving(service, limits) as (url, app):
        hung = [stalled(url, f"127.0.1.{i + 1}") for i in range(40)]
        try:
            reading(app, 40)
            assert app.state.gate.pending == 0  # reading a body takes no admission place

            def one(_: int) -> int:
                with httpx.Client(base_url=url, timeout=30) as c:
                    return c.post("/predict", files=[("files", ("a.png", image, "image/png"))]).status_code

            t0 = time.monotonic()
            with ThreadPoolExecutor(4) as pool:  # 4 at a time: the per-client cap of 127.0.0.1
                codes = list(pool.map(one, range(20)))
            took = time.monotonic() - t0
            assert codes == [200] * 20, codes
            assert took < limits.body_timeout  # served while the stalled ones still hang, not after a timeout
            for s in hung:  # still connected, still waiting: nothing was answered to them
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
        finally:
            for s in hung:
                s.close()


def test_per_client_cap_and_body_timeout(service, image):
    limits = Limits(max_per_client=2, body_timeout=1.0)
    with serving(service, limits) as (url, app):
        a, b = stalled(url, "127.0.2.1"), stalled(url, "127.0.2.1")
        try:
            reading(app, 2)
            t0 = time.monotonic()
            third = stalled(url, "127.0.2.1")  # over this address's cap: refused at once
            reply = answer(third)
            assert reply.startswith(b"HTTP/1.1 429") and b"at most 2 per client" in reply and b"retry-after: 1" in reply
            assert time.monotonic() - t0 < 0.9  # before the stalled ones time out
            third.close()
            with httpx.Client(base_url=url, timeout=30) as c:  # another address is served meanwhile
                assert c.post("/predict", files=[("files", ("a.png", image, "image/png"))]).status_code == 200
            for s in (a, b):  # the stalled ones get 408 after the body timeout, and are let go
                reply = answer(s)
                assert reply.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in reply
            assert time.monotonic() - t0 < 5
        finally:
            a.close()
            b.close()
        reading(app, 0)  # the places are free again: the same address is served
        transport = httpx.HTTPTransport(local_address="127.0.2.1")
        with httpx.Client(base_url=url, timeout=30, transport=transport) as c:
            assert c.post("/predict", files=[("files", ("a.png", image, "image/png"))]).status_code == 200


def test_the_serve_options_are_checked_in_one_line(service):
    from conftest import run_cli

    for option, value, message in (("--body-timeout", "0", "body_timeout must be > 0"),
                                   ("--max-per-client", "0", "max_per_client must be >= 1")):
        r = run_cli("serve", service.run.path, option, value)
        assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
