"""The HTTP service: a FastAPI app over the served models, with its page.

Endpoints (``/docs`` shows them with their schemas, offline):

=====================================  ======================================================================
``GET  /api/v1/health``                liveness; the only endpoint that never needs the token
``GET  /api/v1/version``               medlens, Python and torch versions, the API version
``GET  /api/v1/bundles``               the loaded bundles: kind, labels, threshold, inputs, capabilities
``GET  /api/v1/bundles/{name}``        one bundle, with its model card (Markdown and HTML)
``POST /api/v1/bundles/{name}/predict`` an upload (multipart field ``file``) → the rows of ``medlens predict``;
                                       ``explain``, ``outline`` and ``view`` add the Grad-CAM overlays, the
                                       segmentation outlines and the viewer's arrays
``GET  /``                             the page (``static/``: plain HTML, CSS and JavaScript, no build step)
=====================================  ======================================================================

Safe by default: the command binds to 127.0.0.1; with a token (``--token`` or ``MEDLENS_SERVE_TOKEN``)
every API endpoint but health needs ``Authorization: Bearer <token>`` (the page and the API description
hold no data and stay readable, so that a browser can open them and ask for the token); uploads are
limited in bytes (``Content-Length`` first, then counted), in decoded pixels (from the headers, before
decoding) and in time (:class:`~medlens.serve.uploads.Limits`); each request works in a private
temporary folder removed after the answer (:mod:`medlens.serve.uploads`); every error is a one-line JSON
``{"error": ..., "status": ...}``, never a traceback. API answers carry ``Cache-Control: no-store`` (they
describe patients' images) and the page a content security policy that lets it load nothing from
elsewhere.

Throughput: each bundle is loaded once per process; requests prepare their inputs in a pool of worker
threads as large as the machine's cores, and the model calls of requests that arrive together are
batched (:mod:`medlens.serve.batching`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import anyio
from fastapi import Depends, File, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import medlens
from medlens.errors import MedlensError
from medlens.serve.batching import DynamicBatcher
from medlens.serve.errors import RequestError
from medlens.serve.models import Job, Options, lesion_position, load_served
from medlens.serve.uploads import Limits, Workspace, receive

API_VERSION = 1
TOKEN_ENV = "MEDLENS_SERVE_TOKEN"
PREFIX = "/api/v1"
log = logging.getLogger("medlens.serve")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Settings:
    """What a service serves and how.

    ``bundles`` are bundle folders; each is served under its folder name (made unique with ``-2``...).
    ``token`` None means no token (``MEDLENS_SERVE_TOKEN`` is read by the command, not here).
    ``workers`` is the number of worker threads (default: the cores); ``max_wait`` the batching wait bound in
    seconds and ``max_batch`` the images of a batch (1 switches batching off). ``allowed_hosts``, when given,
    are the only ``Host`` names answered (:data:`LOOPBACK_HOSTS` for a server bound to loopback). ``tmp_dir``
    holds the request workspaces (default :func:`workspace_parent`).
    """

    bundles: list[Path]
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    workers: int | None = None
    max_wait: float = 0.004
    max_batch: int = 64
    allowed_hosts: tuple[str, ...] | None = None
    tmp_dir: Path | None = None


def workspace_parent() -> Path | None:
    """Where request workspaces go by default: ``/dev/shm`` (memory) when it is a writable folder, else the
    system's temporary folder (None). On a disk-backed ``/tmp`` creating and removing a folder per request
    cost 3-4 ms here, more than the whole prediction of a small image, against 0.1 ms in memory; uploads then
    never reach the disk either."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def bundle_names(paths: list[Path]) -> list[str]:
    """URL-safe, unique names of bundle folders (their folder names)."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).resolve().name).strip("-.") or "bundle"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


class Service:
    """The served models, their batchers, the worker-thread limiter and the temporary root."""

    def __init__(self, settings: Settings):
        if not settings.bundles:
            raise MedlensError("serve: give at least one bundle folder")
        self.settings = settings
        self.workers = settings.workers or cores()
        self.models = {name: load_served(path, name)
                       for name, path in zip(bundle_names(settings.bundles), settings.bundles)}
        self.batchers = {name: DynamicBatcher(self._runner(model, self.workers), settings.max_wait,
                                              settings.max_batch, name=f"batcher-{name}")
                         for name, model in self.models.items()}
        self.root = Path(tempfile.mkdtemp(prefix="medlens-serve-", dir=settings.tmp_dir or workspace_parent()))
        self.limiter: anyio.CapacityLimiter | None = None

    @staticmethod
    def _runner(model, workers: int):
        """The batch handler of ``model``: its model calls on as many torch threads as it asks for (one for a few
        images), else ``workers``."""
        def run(jobs: list[Job]) -> list[Job]:
            from medlens.engine.threads import torch_threads

            with torch_threads(model.threads_for(jobs) or workers):
                return model.run(jobs)

        return run

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def model(self, name: str):
        if name not in self.models:
            raise RequestError(404, f"no bundle named {name!r}; loaded: {', '.join(self.models)}")
        return self.models[name]

    async def in_thread(self, function, *args):
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.workers)
        return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter, abandon_on_cancel=True)

    async def predict(self, name: str, parts: list[tuple[str | None, Any]], options: Options) -> dict:
        model, batcher = self.model(name), self.batchers[name]
        workspace = Workspace(self.root)
        try:
            with batcher.expect():
                job = await self.in_thread(self._prepare, model, parts, options, workspace)
            await asyncio.wrap_future(batcher.submit(job, job.size))
            return await self.in_thread(self._answer, model, job, workspace)
        finally:
            workspace.close()

    def _prepare(self, model, parts, options: Options, workspace: Workspace) -> Job:
        with workspace.use(), client_errors(workspace, 422):
            return model.prepare(receive(parts, workspace, self.settings.limits), options, workspace)

    @staticmethod
    def _answer(model, job: Job, workspace: Workspace) -> dict:
        with workspace.use(), client_errors(workspace, 500):
            answer = model.answer(job, workspace)
            answer["notes"] = [workspace.scrub(n) for n in answer.get("notes", [])]
            for row in answer["rows"]:
                for key in ("error", "roi"):
                    if row.get(key):
                        row[key] = workspace.scrub(row[key])
            return answer


@contextmanager
def client_errors(workspace: Workspace, status: int) -> Iterator[None]:
    """Errors of one step as :class:`RequestError` with their messages scrubbed of workspace paths: medlens's
    own errors (a file it cannot read) with ``status``; while reading an upload (``status`` 422) also the
    errors a decoder raises on a malformed file (logged with their traceback)."""
    try:
        yield
    except RequestError as exc:
        raise RequestError(exc.status, workspace.scrub(str(exc))) from exc
    except MedlensError as exc:
        raise RequestError(status, workspace.scrub(str(exc))) from exc
    except (ValueError, OSError, MemoryError) as exc:
        if status != 422:
            raise
        log.exception("reading an upload failed")
        raise RequestError(422, "the upload could not be read: "
                           + workspace.scrub(f"{type(exc).__name__}: {exc}")) from exc


# --------------------------------------------------------------------------------------------------
# ASGI middleware: errors, time limit, body size, headers
# --------------------------------------------------------------------------------------------------
def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": " ".join(str(message).split()), "status": status}).encode()


async def _send_error(send, status: int, message: str, headers: list | None = None) -> None:
    body = error_body(status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def host_name(scope) -> str:
    """The host of a request's ``Host`` header, without its port (``[::1]:8000`` → ``[::1]``)."""
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").strip().lower()
    if host.startswith("["):  # an IPv6 address, with or without a port
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


class Guard:
    """Outermost middleware: request time limit (504), upload size limit (413, from ``Content-Length`` and
    counted while the body arrives), the ``Host`` header (400 for a name the server is not known by: a web
    page that rebinds its own name to 127.0.0.1 cannot reach a loopback server), security headers, and a
    JSON 500 for anything that escapes."""

    def __init__(self, app, limits: Limits, allowed_hosts: tuple[str, ...] | None = None):
        self.app, self.limits, self.allowed_hosts = app, limits, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed_hosts is not None and host_name(scope) not in self.allowed_hosts:
            return await _send_error(send, 400, f"host {host_name(scope)!r} is not a name of this server; "
                                                f"use {' or '.join(self.allowed_hosts[:2])}")
        started = False
        path = scope.get("path", "")
        api = path.startswith("/api/")
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        extra += [(b"cache-control", b"no-store")] if api else []
        if path == "/" or path.startswith("/static/"):
            extra += [(b"content-security-policy", PAGE_POLICY.encode()), (b"x-frame-options", b"DENY")]

        async def send_with_headers(message):
            nonlocal started
            if over_limit:  # the app answers a body that was cut short (FastAPI calls it a parse error): 413
                if message["type"] == "http.response.start":
                    started = True
                    await _send_error(send, 413, f"request body over the upload limit of {limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in present]
            await send(message)

        limit = self.limits.max_upload_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_error(send, 413, f"request body of {int(declared)} bytes is over the upload limit "
                                                f"of {limit} bytes")
        received, over_limit = 0, False

        async def counted_receive():
            nonlocal received, over_limit
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over_limit = True
                    raise RequestError(413, f"request body over the upload limit of {limit} bytes")
            return message

        try:
            with anyio.move_on_after(self.limits.request_seconds) as deadline:
                await self.app(scope, counted_receive, send_with_headers)
        except RequestError as exc:
            if not started:
                await _send_error(send, exc.status, str(exc))
            return
        except Exception:  # noqa: BLE001 - the client gets a JSON line, the log the traceback
            log.exception("unhandled error in %s %s", scope.get("method"), path)
            if not started:
                await _send_error(send, 500, "internal error; the server log has the details")
            return
        if deadline.cancelled_caught and not started:
            await _send_error(send, 504, f"the request did not finish within the time limit of "
                                         f"{self.limits.request_seconds:g} s")


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------
def _card_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def _static_folder() -> Path:
    return Path(str(resources.files("medlens.serve") / "static"))


def create_app(settings: Settings) -> "Guard":
    """The ASGI app serving ``settings.bundles`` (each loaded now, once): the FastAPI app (``.app``) inside
    :class:`Guard`.

    Raises
    ------
    MedlensError
        A bundle folder that does not load (the loader's message names the file).
    """
    from fastapi_offline import FastAPIOffline

    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        service.close()

    app = FastAPIOffline(
        title="medlens serve", version=medlens.__version__, lifespan=lifespan, redoc_url=None,
        description="Predictions of medlens bundles on uploaded images: classifiers (probability per class, "
                    "threshold, label, Grad-CAM) and segmenters (masks, outlines). Research use only, not "
                    "for clinical use. With a token, send `Authorization: Bearer <token>` (the Authorize "
                    "button) to every endpoint but health.")
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="The token given to `medlens serve --token` or "
                                                      f"{TOKEN_ENV}.")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        token = settings.token
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": str(exc), "status": exc.status}, status_code=exc.status, headers=headers)

    @app.exception_handler(MedlensError)
    async def medlens_error(_request: Request, exc: MedlensError):
        return JSONResponse({"error": " ".join(str(exc).split()), "status": 422}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"error": message, "status": 422}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = f"not found: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message, "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get(f"{PREFIX}/health", tags=["service"], summary="Liveness (no token needed)")
    async def health() -> dict:
        return {"status": "ok", "bundles": len(service.models), "token_required": settings.token is not None}

    @app.get(f"{PREFIX}/version", tags=["service"], dependencies=[Depends(authorised)])
    async def version() -> dict:
        import torch

        return {"medlens": medlens.__version__, "api": API_VERSION, "python": platform.python_version(),
                "torch": torch.__version__, "workers": service.workers}

    @app.get(f"{PREFIX}/bundles", tags=["bundles"], dependencies=[Depends(authorised)],
             summary="The loaded bundles and what each reads and returns")
    async def bundles() -> list[dict]:
        return [model.describe() for model in service.models.values()]

    @app.get(f"{PREFIX}/bundles/{{name}}", tags=["bundles"], dependencies=[Depends(authorised)],
             summary="One bundle with its model card (Markdown and HTML)")
    async def bundle(name: str) -> dict:
        model = service.model(name)
        card = model.card()
        return {**model.describe(), "card": {"markdown": card, "html": _card_html(card)}}

    @app.post(f"{PREFIX}/bundles/{{name}}/predict", tags=["predict"], dependencies=[Depends(authorised)],
              summary="Predict an uploaded image",
              description="Send one image as the multipart field `file`: a PNG/JPEG/BMP/TIFF picture, an npz "
                          "archive, a NIfTI volume, a DICOM file, or a DICOM series (a zip, or the files as "
                          "several `file` fields). Classifiers return the rows of `medlens predict` (path, "
                          "index, patient_id, patient_pseudonym, series_uid, roi, p_<label>..., label, threshold, "
                          "out_of_distribution, error); "
                          "segmenters one row per class (voxels, area or volume). `explain` adds Grad-CAM "
                          "overlays (PNG data URLs), `outline` the segmentation or lesion outlines, `view` the "
                          "arrays the page draws (gzip + base64).")
    async def predict(name: str,
                      file: list[UploadFile] = File(..., description="The image, or the files of one DICOM series"),
                      explain: bool = Query(False, description="Add Grad-CAM overlays (CNN classifiers)"),
                      outline: bool = Query(False, description="Add the outline of the segmentation or lesion"),
                      view: bool = Query(False, description="Add the image, mask and heat map arrays for a viewer"),
                      at: str | None = Query(None, description="3D lesion bundles: lesion position 'z,y,x' in "
                                                               "voxels, when the series has no LIDC reader XML"),
                      ) -> JSONResponse:
        service.model(name)
        try:
            options = Options(explain=explain, outline=outline, view=view, at=lesion_position(at) if at else None)
            parts = [(upload.filename, upload.file) for upload in file]
            return JSONResponse(await service.predict(name, parts, options))
        finally:
            for upload in file:
                await upload.close()

    static = _static_folder()
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(static / "index.html", media_type="text/html")

    return Guard(app, settings.limits, settings.allowed_hosts)


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True) -> None:
    """Serve ``settings`` with uvicorn until interrupted."""
    import uvicorn

    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info",
                timeout_keep_alive=5, server_header=False)
