"""Helpers for tests on the real data in ``MEDLENS_DATA`` (importable from every test folder:
``tests/`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The repository root (configs, scripts and benchmarks are found from here).
REPO = Path(__file__).resolve().parents[1]


def need(data_root: Path, relative: str) -> Path:
    """``data_root / relative``, skipping (failing under CI) when it is absent."""
    path = data_root / relative
    if not path.exists():
        pytest.skip(f"real data missing: {path}")
    return path
