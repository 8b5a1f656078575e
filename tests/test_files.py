"""Atomic writes: a failing writer loses nothing already written and leaves no temporary file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from medlens.files import write_atomically, write_text_atomically


def test_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomically(tmp_path / "sub" / "results.json", json.dumps({"auc": 0.9}))
    assert json.loads(target.read_text()) == {"auc": 0.9}

    def half_then_crash(path):
        path.write_text('{"auc": 0.')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, half_then_crash)
    assert json.loads(target.read_text()) == {"auc": 0.9}
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_temporary_name_keeps_the_suffix_and_the_file_gets_usual_permissions(tmp_path):
    seen = []
    target = write_atomically(tmp_path / "mask.nii.gz", lambda p: (seen.append(p.name), p.write_bytes(b"x")))
    assert seen[0].endswith("mask.nii.gz") and seen[0].startswith(".")  # writers pick formats by suffix
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


# ------------------------------------------------------------------ outputs: check, lock, partial files, CSV
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

from medlens.errors import OutputError, OutputLockedError  # noqa: E402
from medlens.files import (  # noqa: E402
    StaleLockWarning,
    check_output,
    claim_output,
    csv_text,
    output_lock,
    partial_path,
    remove_stale_partials,
    spreadsheet_safe,
    write_csv_atomically,
)

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default range used here: no such process


def test_check_output_refuses_inputs_devices_and_wrong_kinds(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"png")
    with pytest.raises(OutputError, match="is also an input"):
        check_output(scan, kind="file", inputs=[scan])
    with pytest.raises(OutputError, match="is also an input"):
        check_output(tmp_path / "." / "scan.png", kind="file", inputs=[scan])
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(series / "preds.csv", kind="file", inputs=[series])
    with pytest.raises(OutputError, match="device, FIFO or socket"):
        check_output("/dev/full", kind="file")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="device, FIFO or socket"):
        check_output(tmp_path / "fifo", kind="folder")
    with pytest.raises(OutputError, match="is a folder, but a file is written here"):
        check_output(series, kind="file")
    with pytest.raises(OutputError, match="is a file, but a folder is written here"):
        check_output(scan, kind="folder")
    with pytest.raises(OutputError, match="scan.png is a file, so nothing can be created below it"):
        check_output(scan / "out" / "preds.csv", kind="file")
    assert check_output(tmp_path / "new" / "deeper" / "preds.csv", kind="file") == tmp_path / "new" / "deeper" / "preds.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "scan.png", "series"]  # nothing created
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_check_output_refuses_a_read_only_place(tmp_path):
    if os.path.ismount("/proc"):
        with pytest.raises(OutputError, match="cannot write in /proc"):
            check_output("/proc/medlens-out", kind="folder")


_HOLDER = """
import sys, time
from medlens.files import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_run_into_a_locked_output_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"another medlens run is writing here \(pid {holder.pid}"):
            with output_lock(out):
                pytest.fail("entered a locked output")
    finally:
        holder.kill()
        holder.wait()
    with warnings.catch_warnings(record=True) as caught:  # killed: its lock is stale and taken over
        warnings.simplefilter("always")
        with output_lock(out):
            pass
    assert any(issubclass(w.category, StaleLockWarning) and f"pid {holder.pid}" in str(w.message) for w in caught)
    assert not (tmp_path / ".run.lock").exists()


def test_claim_output_removes_partial_files_of_dead_runs_only(tmp_path):
    out = tmp_path / "masks"
    (out / "sub").mkdir(parents=True)
    dead = [out / f".tmp-{DEAD_PID}-a.png", out / "sub" / f".tmp-{DEAD_PID}-b.nii.gz"]
    alive = partial_path(out / "c.png")  # this process's own: a live writer
    for path in dead + [alive, out / "kept.png"]:
        path.write_bytes(b"x")
    with pytest.warns(StaleLockWarning, match="removed 2 partial file"):
        with claim_output(out, kind="folder"):
            pass
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted([alive.name, "kept.png"])
    csv = tmp_path / "preds.csv"
    (tmp_path / f".tmp-{DEAD_PID}-preds.csv").write_text("half")
    (tmp_path / f".tmp-{DEAD_PID}-other.csv").write_text("half")
    assert remove_stale_partials(tmp_path, recursive=False, name=csv.name) == [tmp_path / f".tmp-{DEAD_PID}-preds.csv"]


def test_failed_run_leaves_no_lock_and_no_folder_it_created(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError):
        with claim_output(out, kind="folder"):
            raise RuntimeError("training diverged")
    assert list(tmp_path.iterdir()) == []


def test_spreadsheet_formulas_are_escaped_in_every_csv_cell(tmp_path):
    rows = [{"path": "=HYPERLINK(\"http://x\",\"y\").png", "p_malignant": -0.25, "label": "+cmd", "note": "@SUM(A1)"},
            {"path": "\tx.png", "p_malignant": 0.5, "label": "-2+3", "note": "plain.png"}]
    target = write_csv_atomically(tmp_path / "preds.csv", rows)
    import pandas as pd

    back = pd.read_csv(target)
    assert back["path"].tolist() == ["'=HYPERLINK(\"http://x\",\"y\").png", "'\tx.png"]
    assert back["label"].tolist() == ["'+cmd", "'-2+3"] and back["note"].tolist() == ["'@SUM(A1)", "plain.png"]
    assert back["p_malignant"].tolist() == [-0.25, 0.5]  # numbers are not formulas
    assert csv_text(pd.DataFrame({"=x": ["\rcr"]})).splitlines()[0] == "'=x"
    assert spreadsheet_safe(-1) == -1 and spreadsheet_safe("a=b") == "a=b"
