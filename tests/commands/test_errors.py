"""Issue 27 at the command line: every error is one line naming the file (``--debug`` for the traceback), and
``--out`` is checked, locked and cleaned before any work, on real files."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hostile import snapshot
from realdata import need
from medlens.cli import app

runner = CliRunner()
BREAST = "medmnist/breastmnist.npz"
XRAY = "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png"
DEAD_PID = 2**22 + 12345


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_damaged_file_is_one_line_naming_it(tmp_path, data_root):
    cut = tmp_path / "cut.png"
    cut.write_bytes(need(data_root, XRAY).read_bytes()[:3000])
    result = runner.invoke(app, ["inspect", str(cut)])
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(cut) in lines[0]


def test_an_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path, data_root, monkeypatch):
    from medlens.commands import inspect as inspect_module

    def broken(path, keep_identifiers=False):
        raise KeyError("Rows")

    monkeypatch.setattr(inspect_module, "describe", broken)
    xray = need(data_root, XRAY)
    result = runner.invoke(app, ["inspect", str(xray)])
    assert result.exit_code == 3
    lines = _error_lines(result)
    assert len(lines) == 1 and "unexpected KeyError: 'Rows' (files given: " + str(xray) in lines[0]
    assert "--debug" in lines[0] and "Traceback" not in result.output
    debug = runner.invoke(app, ["--debug", "inspect", str(xray)])
    assert isinstance(debug.exception, KeyError)  # propagates with its traceback


def _extract(archive, out):
    return runner.invoke(app, ["features", "extract", str(archive), "--out", str(out), "--splits", "test"])


@pytest.fixture
def breast(tmp_path, data_root):
    copy = tmp_path / "breastmnist.npz"
    shutil.copy(need(data_root, BREAST), copy)
    return copy


def test_out_that_is_the_input_or_a_device_or_a_folder_is_refused_before_any_work(tmp_path, breast):
    digest = hashlib.md5(breast.read_bytes()).hexdigest()
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    for out, problem in ((breast, "is also an input"), ("/dev/full", "device, FIFO or socket"),
                         (tmp_path / "folder", "is a folder, but a file is written here")):
        result = _extract(breast, out)
        assert result.exit_code == 2 and problem in " ".join(result.stderr.split()), result.output
        assert len(_error_lines(result)) == 1
    assert snapshot(tmp_path) == before and hashlib.md5(breast.read_bytes()).hexdigest() == digest
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


_HOLDER = """
import sys, time
from medlens.files import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_run_into_the_same_out_is_refused_and_a_killed_runs_leftovers_are_cleaned(tmp_path, breast):
    out = tmp_path / "features.npz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / f".tmp-{DEAD_PID}-features.npz").write_bytes(b"half a file from a killed run")
        before = snapshot(tmp_path)
        refused = _extract(breast, out)
        assert refused.exit_code == 2 and f"pid {holder.pid}" in refused.stderr
        assert snapshot(tmp_path) == before  # nothing written, the partial file untouched while locked
    finally:
        holder.kill()
        holder.wait()
    done = _extract(breast, out)
    assert done.exit_code == 0, done.output
    assert f"pid {holder.pid}" in done.stderr and "took over the lock" in done.stderr
    assert "removed 1 partial file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breastmnist.npz", "features.npz"]
