"""``medlens serve``: bundles behind an HTTP API and a web page."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from medlens.commands._common import console, reports_errors
from medlens.errors import ConfigError
from medlens.network import is_loopback


@reports_errors
def serve(
    bundles: list[Path] = typer.Argument(..., help="Bundle folders: classifiers of `medlens train`, segmenters of "
                                                   "`medlens segment train`. Each is served under its folder name."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. The default answers this machine "
                                                         "only; 0.0.0.0 opens the service to the network."),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port."),
    token: str = typer.Option(None, "--token", help="Bearer token required by every endpoint but health. "
                                                    "Default: the MEDLENS_SERVE_TOKEN environment variable, "
                                                    "else none."),
    max_upload_mb: float = typer.Option(1024, "--max-upload-mb", min=0.001, help="Largest request body, in MiB."),
    max_voxels: int = typer.Option(1 << 28, "--max-voxels", min=1, help="Most pixel values an upload may decode "
                                                                        "to, read from its headers first."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="Longest time for one request, in seconds."),
    workers: int = typer.Option(None, "--workers", min=1, help="Worker threads. Default: the CPU cores."),
    batch_wait_ms: float = typer.Option(4.0, "--batch-wait-ms", min=0.0, help="Longest wait of a request for "
                                        "others to share its model call (only while others are on their way)."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Images per model call; 1 turns batching off."),
    tmp_dir: Path = typer.Option(None, "--tmp-dir", help="Folder for the private per-request folders. Default: "
                                                         "/dev/shm (memory) where writable, else the system's "
                                                         "temporary folder."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log one line per request."),
) -> None:
    """Serve bundles over HTTP, with a page to drop images on: `http://HOST:PORT/`.

    The page shows the image (slice slider and lung / soft-tissue / bone windows for CT volumes), the
    probability per class, the threshold and the label, Grad-CAM and segmentation overlays, and the model
    card. The API: `GET /api/v1/bundles`, `POST /api/v1/bundles/NAME/predict` with the image as the
    multipart field `file` (PNG/JPEG/BMP/TIFF, npz, NIfTI, DICOM, a zipped DICOM series), `?explain=true`
    for Grad-CAM, `?outline=true` for outlines; `GET /api/v1/health`; the OpenAPI docs at `/docs`.
    Concurrent requests to one bundle are batched for the model.

    Safe by default: binds to 127.0.0.1 and then answers only the names 127.0.0.1, localhost and [::1]
    (no DNS rebinding); with --token (or MEDLENS_SERVE_TOKEN) every endpoint but health
    needs `Authorization: Bearer TOKEN`; uploads are limited in size, decoded pixels and time, kept in
    private temporary folders removed after the answer; errors are one-line JSON.

    Example: `T=$(openssl rand -hex 16); medlens serve bundles/breast bundles/nodules --port 8000 --token $T`,
    then `curl -H "Authorization: Bearer $T" -F file=@lesion.png
    'http://127.0.0.1:8000/api/v1/bundles/breast/predict?explain=true'`.
    """
    from medlens.serve.app import LOOPBACK_HOSTS, TOKEN_ENV, Settings, run
    from medlens.serve.uploads import Limits

    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and len(token) < 8:
        raise ConfigError("--token: use at least 8 characters (e.g. `openssl rand -hex 16`)")
    if not is_loopback(host) and token is None:
        console.print(f"[yellow]warning:[/] serving on {host} without a token: anyone who reaches this port can "
                      f"use the models; set --token or {TOKEN_ENV}", highlight=False)
    limits = Limits(max_upload_bytes=int(max_upload_mb * (1 << 20)), max_voxels=max_voxels, request_seconds=timeout)
    settings = Settings(bundles=list(bundles), token=token, limits=limits, workers=workers,
                        max_wait=batch_wait_ms / 1000.0, max_batch=max_batch,
                        allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else None, tmp_dir=tmp_dir)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"medlens serve: http://{shown}:{port}/ (API docs: /docs){' - token required' if token else ''}",
                  highlight=False)
    run(settings, host=host, port=port, access_log=access_log)
