"""Shared fixtures: the real-data root and the switch that turns skips into failures.

Real data comes from the folder named by ``MEDLENS_DATA`` (CI: ../shared/data). A test that needs it
and cannot find it is skipped with the reason, unless ``MEDLENS_REQUIRE_DATA=1`` (as in CI), where
every skip is reported as a failure so that CI can never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realdata import need

STRICT = os.environ.get("MEDLENS_REQUIRE_DATA") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under MEDLENS_REQUIRE_DATA=1: {reason}"


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key() -> str:
    """A fixed pseudonym key (medlens.data.identifiers), so that no test creates ~/.config/medlens/pseudonym.key."""
    os.environ.setdefault("MEDLENS_PSEUDONYM_KEY", "medlens-test-key")
    return os.environ["MEDLENS_PSEUDONYM_KEY"]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder (``MEDLENS_DATA``)."""
    root = os.environ.get("MEDLENS_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip(f"real data not found: set MEDLENS_DATA to the shared data folder (got {root!r})")
    return Path(root).resolve()


@pytest.fixture(scope="session")
def lidc_series_dir(data_root: Path) -> Path:
    """The 16-slice LIDC-IDRI-0001 CT series folder (with its reader XML 69.xml)."""
    return need(
        data_root,
        "lidc_idri_ct/LIDC-IDRI-0001/1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178/"
        "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192",
    )
