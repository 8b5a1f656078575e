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
