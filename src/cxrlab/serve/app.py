"""``cxrlab serve``: a local web page and JSON API for one trained run (FastAPI + uvicorn).

=========================  ==========================================================
``GET /``                  the web page (static HTML + JS + CSS, no build step)
``GET /healthz``           liveness: engine, model name and version (no token needed)
``GET /model``             the model card (``workflows.card``) and what the page needs
``POST /predict``          multipart ``files`` (1..max_files images) -> probabilities,
                           decisions at the validation-chosen thresholds, OOD score;
                           ``?mc_passes=N`` adds MC-dropout mean/std
``POST /explain``          multipart ``file`` -> the Grad-CAM (or ``method``) overlay
                           PNG for ``label`` (default: the most probable); headers
                           ``X-Label``, ``X-Probability``, ``X-Map-Flat`` (1: no location)
``GET /docs``              OpenAPI documentation (``/openapi.json``)
=========================  ==========================================================

The model is loaded once (:class:`cxrlab.workflows.service.ModelService`);
images become model inputs by the run's preprocessing contract, as in
``cxrlab predict``.  Limits and status codes: :mod:`cxrlab.serve.limits`; the
multipart body is parsed by :mod:`cxrlab.serve.multipart` (cxrlab's limits and
codes), so the upload fields are declared to OpenAPI by hand (:func:`_multipart_doc`).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from cxrlab import __version__
from cxrlab.errors import CxrlabError
from cxrlab.serve.limits import (
    BODY_KEY,
    ClientCounter,
    Decoder,
    LimitMiddleware,
    Limits,
    RequestGate,
    fail,
)
from cxrlab.serve.multipart import Form, read_form
from cxrlab.workflows.service import ModelService, Overlay

STATIC = Path(__file__).parent / "static"
#: The page's stylesheet: the reports' one CSS (``cxrlab/report/page.css``), served at ``/static/style.css``.
PAGE_CSS = resources.files("cxrlab.report").joinpath("page.css")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token (one line)."""
    if not is_loopback(host) and not token:
        raise CxrlabError(f"--host {host} is reachable from other machines: give --token T as well (clients "
                          "then send 'Authorization: Bearer T'), or keep the default 127.0.0.1")


def _auth(token: str | None) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False, description="Only when the server was started with --token.")

    def check(cred: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:  # noqa: B008
        if token is None:
            return
        given = cred.credentials if cred is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise fail(401, "missing or wrong bearer token (send 'Authorization: Bearer T')")

    return check


def _guard(fn: Callable[[], Any]) -> Callable[[], Any]:
    """A user mistake found while computing (e.g. MC dropout on a model without dropout) is a 422."""

    def run() -> Any:
        try:
            return fn()
        except CxrlabError as e:
            raise fail(422, str(e)) from None

    return run


def _multipart_doc(name: str, many: bool, description: str) -> dict[str, Any]:
    """The OpenAPI request body of an upload endpoint (the body is parsed by ``read_form``, not by FastAPI)."""
    item = {"type": "string", "format": "binary"}
    prop = {"type": "array", "items": item} if many else item
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [name], "properties": {name: {**prop, "description": description}}}}}}}


def _form(request: Request, name: str, max_files: int, limits: Limits) -> Form:
    """The files of field ``name`` in the body the middleware read (worker thread)."""
    return read_form(request.scope[BODY_KEY], request.headers.get("content-type"), name, max_files,
                     limits.max_file_bytes)


def create_app(run_dir: str | Path | None = None, engine: str = "auto", token: str | None = None,
               limits: Limits | None = None, service: ModelService | None = None) -> FastAPI:
    """The ASGI app for a run (the model is loaded here, once).

    Args:
        run_dir: the run folder (or pass an opened ``service``).
        engine: ``auto`` (ONNX Runtime when ``RUN/model.onnx`` exists), ``torch`` or ``onnx``.
        token: require ``Authorization: Bearer <token>`` on the data endpoints.
        limits: upload and concurrency limits (:class:`Limits`).
    """
    if service is None:
        if run_dir is None:
            raise CxrlabError("serve: give a run folder")
        service = ModelService(run_dir, engine)
    limits = limits or Limits()
    decoder = Decoder(service.record.preprocess, limits)
    gate, clients = RequestGate(limits.max_pending), ClientCounter(limits.max_per_client)
    app = FastAPI(title="cxrlab serve", version=__version__,
                  description=f"Chest X-ray classifier **{service.card['name']}** ({service.engine}). "
                              "Research use only; not a medical device.")
    app.state.service, app.state.limits, app.state.gate, app.state.clients = service, limits, gate, clients
    app.add_middleware(LimitMiddleware, limits=limits, gate=gate, clients=clients)
    auth = [Depends(_auth(token))]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/style.css", include_in_schema=False)
    def style() -> Response:  # the one stylesheet of every cxrlab page; the app's rules sit under .serve-app
        return Response(PAGE_CSS.read_text(encoding="utf-8"), media_type="text/css")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", summary="Liveness and what is served")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "engine": service.engine, "model": service.card["name"],
                "version": service.card["version"]}

    @app.get("/model", dependencies=auth, summary="The model card (metadata.json) and serving details")
    def model() -> dict[str, Any]:
        return {**service.card, "serving": {**service.info(), "limits": {
            "max_files": limits.max_files, "max_file_mb": limits.max_file_bytes // 2**20,
            "max_pixels": limits.max_pixels}}}

    @app.post("/predict", dependencies=auth, summary="Probabilities, decisions and OOD scores for images",
              openapi_extra=_multipart_doc("files", True, f"1 to {limits.max_files} PNG, JPEG or DICOM images"))
    async def predict(
        request: Request,
        mc_passes: Annotated[int, Query(ge=0, le=100, description="MC-dropout passes (0 = off)")] = 0,
        tta: Annotated[bool, Query(description="Average with the mirrored image")] = False,
    ) -> dict[str, Any]:
        def work() -> list[dict[str, Any]]:
            form = _form(request, "files", limits.max_files, limits)
            try:
                decoder.check_count(form.count)
                images, names = decoder.decode(form.files)
            finally:
                form.close()
            return service.predict(images, names, mc_passes=mc_passes, tta=tta)

        results = await run_in_threadpool(_guard(work))
        return {"engine": service.engine, "labels": service.labels, "task": service.record.task,
                "threshold_rule": service.card["threshold_rule"], "results": results}

    @app.post("/explain", dependencies=auth, response_class=Response, summary="Attribution overlay (PNG)",
              responses={200: {"content": {"image/png": {}}}},
              openapi_extra=_multipart_doc("file", False, "One PNG, JPEG or DICOM image"))
    async def explain(
        request: Request,
        label: Annotated[str | None, Query(description="Label to explain (default: the most probable)")] = None,
        method: Annotated[str, Query(description="gradcam | gradcam++ | saliency")] = "gradcam",
    ) -> Response:
        def work() -> Overlay:
            form = _form(request, "file", 1, limits)
            try:
                if form.count == 0:
                    raise fail(422, "no image: send one file in the multipart field 'file'")
                if form.count > 1:
                    raise fail(422, f"{form.count} files in the field 'file'; /explain explains one image")
                images, _ = decoder.decode(form.files)
            finally:
                form.close()
            return service.explain_png(images[0], label, method)

        o = await run_in_threadpool(_guard(work))
        return Response(o.png, media_type="image/png", headers={
            "X-Label": o.label.encode("ascii", "replace").decode(), "X-Probability": f"{o.probability:.6f}",
            "X-Map-Flat": "1" if o.flat else "0"})

    return app


def serve_run(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto",
              token: str | None = None, limits: Limits | None = None,
              announce: Callable[[str], None] | None = None) -> None:
    """Load the run and serve it with uvicorn until interrupted; ``announce`` gets the URL first."""
    import uvicorn

    check_host(host, token)
    if not 0 < port < 65536:
        raise CxrlabError(f"--port must be 1..65535, got {port}")
    app = create_app(run_dir, engine, token, limits)
    shown = f"[{host}]" if ":" in host else host
    if announce:
        announce(f"http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
