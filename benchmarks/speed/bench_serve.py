"""Load test of `medlens serve` on loopback, and the issue #26 latency targets.

Starts `medlens serve` (BreastMNIST CNN and LIDC nodule CNN bundles, a bearer token, no access log) as its
own process on a free 127.0.0.1 port, then, from this process (httpx; the client shares the machine's
cores with the server, which this script cannot avoid):

1. **one by one**: one client sends BreastMNIST test images (PNG) one after the other for ``--single-seconds``;
2. **16 clients, batching off**: ``--clients`` concurrent clients for ``--seconds``, server started with
   ``--max-batch 1`` (one model call per request);
3. **16 clients, batching on**: the same against the default server (dynamic batching);
4. **2D image → probability + Grad-CAM**: ``--explain-requests`` sequential requests with ``explain=true``;
5. **LIDC-IDRI-0001 zipped series → nodule calls**: ``--lidc-requests`` requests, plain and as the page sends
   them (``explain``, ``outline``, ``view``).

Every phase is bounded in time or count and stops by itself. For each: requests, errors (non-200 answers or
failed connections), requests/s, latency p50 / p99; the server's peak RSS (``VmHWM``) after the load phases;
the target checks. Results go to ``--out`` (JSON) and are printed as Markdown.

Bundles: trained into ``--bundles`` with quick params when missing (BreastMNIST `cnn`: ResNet, 2 epochs;
LIDC `cnn3d`, 240 cubes, LIDC-IDRI-0001 left out), which is the same network as the full training, so the
timings hold for it.

Run (figures in benchmarks/results/serve.md):
    MEDLENS_DATA=/work/shared/data PYTHONPATH=src .venv/bin/python benchmarks/speed/bench_serve.py
Smoke run: add ``--clients 4 --seconds 5 --single-seconds 3 --explain-requests 20 --lidc-requests 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-token-0123456789"
BOUNDARY = "medlens-bench-5c1f0e"
LIDC_0001 = ("lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192")


def data_root() -> Path:
    root = os.environ.get("MEDLENS_DATA")
    if not root:
        sys.exit("set MEDLENS_DATA to the shared data folder")
    return Path(root)


def make_bundles(folder: Path) -> dict[str, Path]:
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle

    bundles = {"breast": folder / "breast", "nodules": folder / "nodules"}
    if not (bundles["breast"] / "manifest.json").is_file():
        train_bundle(load_config(REPO / "src/medlens/configs/breastmnist_official.yaml"), bundles["breast"], "cnn",
                     quick=True, quiet=True)
    if not (bundles["nodules"] / "manifest.json").is_file():
        train_bundle(load_config(REPO / "src/medlens/configs/lidc_nodules.yaml"), bundles["nodules"], "cnn3d",
                     quick=True, max_samples=240, quiet=True, exclude_groups=["LIDC-IDRI-0001"])
    return bundles


def breast_pngs(n: int = 156) -> list[bytes]:
    images = np.load(data_root() / "medmnist/breastmnist.npz")["test_images"][:n]
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def lidc_zip() -> bytes:
    series = data_root() / LIDC_0001
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(series.iterdir()):
            archive.write(file, file.name)
    return buffer.getvalue()


def multipart(name: str, data: bytes) -> bytes:
    """The body of a multipart upload of ``data`` as the field ``file``, encoded once (httpx would encode it
    for every request, client work that competes with the server for the same cores)."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n")
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`medlens serve` in its own process; stopped on exit."""

    def __init__(self, bundles: list[Path], *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-c", "import sys; from medlens.cli import app; sys.argv[0] = 'medlens'; app()",
                   "serve", *map(str, bundles), "--port", str(self.port), "--no-access-log", *extra]
        env = {**os.environ, "MEDLENS_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(REPO / "src")}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server stopped: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start within 120 s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, coroutine) -> dict:
        """Run one load phase; add the server's CPU time per answered request (less disturbed by other jobs on
        the machine than requests/s)."""
        before = self.cpu_seconds()
        result = asyncio.run(coroutine)
        answered = result["requests"] - result["errors"]
        result["server_cpu_ms_per_request"] = round(1000 * (self.cpu_seconds() - before) / max(answered, 1), 2)
        return result

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def summary(latencies: list[float], errors: int, seconds: float) -> dict:
    ordered = sorted(latencies)
    pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else (lambda q: None)
    return {"requests": len(latencies) + errors, "errors": errors, "seconds": round(seconds, 2),
            "requests_per_s": round(len(latencies) / seconds, 1) if seconds else None,
            "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
            "p99_ms": round(pick(0.99), 1) if ordered else None}


async def load(url: str, path: str, files: list[bytes], clients: int, seconds: float, name: str = "image.png",
               params: dict | None = None, max_requests: int | None = None) -> dict:
    """``clients`` concurrent loops, each posting the next file until ``seconds`` (or ``max_requests``) run out."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    bodies = [multipart(name, data) for data in files]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120, headers=headers) as client:
        start = time.perf_counter()
        end = start + seconds

        async def one_client(k: int) -> None:
            nonlocal errors, sent
            i = k
            while time.perf_counter() < end and (max_requests is None or sent < max_requests):
                sent += 1
                t0 = time.perf_counter()
                try:
                    answer = await client.post(path, params=params, content=bodies[i % len(bodies)])
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += clients

        await asyncio.gather(*(one_client(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
    return summary(latencies, errors, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=Path, default=Path(tempfile.gettempdir()) / "medlens-bench-serve")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--single-seconds", type=float, default=30.0)
    parser.add_argument("--explain-requests", type=int, default=200)
    parser.add_argument("--lidc-requests", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve.json")
    args = parser.parse_args()

    bundles = make_bundles(args.bundles)
    pngs, series = breast_pngs(), lidc_zip()
    predict = "/api/v1/bundles/{}/predict"
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "cpu_cores": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg(),
                     "python": platform.python_version(), "clients": args.clients, "seconds": args.seconds}

    with Server(list(bundles.values()), "--max-batch", "1") as server:
        asyncio.run(load(server.url, predict.format("breast"), pngs, 1, 2.0))  # warm-up
        results["one_by_one"] = server.measure(load(server.url, predict.format("breast"), pngs, 1, args.single_seconds))
        results["concurrent_batching_off"] = server.measure(
            load(server.url, predict.format("breast"), pngs, args.clients, args.seconds))
        results["concurrent_batching_off"]["peak_rss_mb"] = round(server.peak_rss_mb(), 1)

    with Server(list(bundles.values())) as server:
        asyncio.run(load(server.url, predict.format("breast"), pngs, args.clients, 2.0))  # warm-up
        results["concurrent_batching_on"] = server.measure(
            load(server.url, predict.format("breast"), pngs, args.clients, args.seconds))
        results["concurrent_batching_on"]["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
        results["one_image_gradcam"] = server.measure(load(server.url, predict.format("breast"), pngs, 1, 3600,
                                                        params={"explain": "true"},
                                                        max_requests=args.explain_requests))
        asyncio.run(load(server.url, predict.format("nodules"), [series], 1, 3600, name="LIDC-IDRI-0001.zip",
                         max_requests=1))  # warm-up
        results["lidc_series_calls"] = server.measure(load(server.url, predict.format("nodules"), [series], 1, 3600,
                                                        name="LIDC-IDRI-0001.zip", max_requests=args.lidc_requests))
        results["lidc_series_page"] = server.measure(load(
            server.url, predict.format("nodules"), [series], 1, 3600, name="LIDC-IDRI-0001.zip",
            params={"explain": "true", "outline": "true", "view": "true"}, max_requests=args.lidc_requests))
        results["peak_rss_mb_after_all"] = round(server.peak_rss_mb(), 1)

    on, single = results["concurrent_batching_on"], results["one_by_one"]
    results["targets"] = {
        "load_test_errors_zero": on["errors"] == 0,
        "batching_gain_vs_one_by_one": round(on["requests_per_s"] / single["requests_per_s"], 2),
        "batching_gain_at_least_1.5": on["requests_per_s"] >= 1.5 * single["requests_per_s"],
        "gradcam_p50_at_most_50_ms": results["one_image_gradcam"]["p50_ms"] <= 50,
        "lidc_calls_at_most_3_s": results["lidc_series_calls"]["p50_ms"] <= 3000,
    }
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print(f"\n{results['when']}, {results['cpu_cores']} cores, load average at start "
          f"{results['load_average_at_start'][0]:.2f}, at end {results['load_average_at_end'][0]:.2f}\n")
    print("| phase | requests | errors | requests/s | p50 ms | p99 ms | server CPU ms / request | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ("one_by_one", "concurrent_batching_off", "concurrent_batching_on", "one_image_gradcam",
                "lidc_series_calls", "lidc_series_page"):
        r = results[key]
        print(f"| {key} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['server_cpu_ms_per_request']} | {r.get('peak_rss_mb', '')} |")
    print("\n" + json.dumps(results["targets"], indent=2))


if __name__ == "__main__":
    main()
