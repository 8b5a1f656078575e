"""`medlens serve` as a user starts it: its own process, a loopback port, the token from the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from medlens.cli import app
from realdata import REPO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_folders() -> set[Path]:
    from medlens.serve.app import workspace_parent

    return set((workspace_parent() or Path(tempfile.gettempdir())).glob("medlens-serve-*"))


def test_command_serves_with_the_token_from_the_environment(bundles, breast_png):
    port, before = free_port(), server_folders()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "import sys; from medlens.cli import app; sys.argv[0] = 'medlens'; app()",
               "serve", str(bundles["breast"]), str(bundles["tumour-seg"]), "--port", str(port), "--no-access-log"]
    env = {**os.environ, "MEDLENS_SERVE_TOKEN": "from-the-environment", "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/api/v1/bundles").status_code == 401
        auth = {"Authorization": "Bearer from-the-environment"}
        assert [b["name"] for b in httpx.get(f"{url}/api/v1/bundles", headers=auth).json()] == ["breast", "tumour-seg"]
        answer = httpx.post(f"{url}/api/v1/bundles/breast/predict", headers=auth, timeout=60,
                            files={"file": ("a.png", breast_png.read_bytes())})
        assert answer.status_code == 200 and answer.json()["rows"][0]["label"] in ("malignant", "normal, benign")
        assert len(server_folders() - before) == 1  # the service's private temporary root
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert f"medlens serve: http://127.0.0.1:{port}/" in output and "token required" in output
    assert server_folders() - before == set()  # removed when the service stops


def test_command_refuses_a_short_token_and_a_folder_that_is_no_bundle(tmp_path):
    runner = CliRunner()
    short = runner.invoke(app, ["serve", str(tmp_path), "--token", "abc"])
    assert short.exit_code == 2 and "at least 8 characters" in short.output
    empty = runner.invoke(app, ["serve", str(tmp_path), "--port", str(free_port())])
    assert empty.exit_code == 2 and "not a medlens bundle" in empty.output
