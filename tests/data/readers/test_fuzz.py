"""A short seeded property-based run over every reader (issue 27): real files damaged by Hypothesis must
either read or raise a MedlensError, never anything else. The longer run with counts is
``benchmarks/quality/fuzz_readers.py`` (RESULTS.md)."""

from __future__ import annotations

import logging
import warnings

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

import fuzzing

EXAMPLES = 40


@pytest.fixture(autouse=True)
def _fuzz_limits(monkeypatch):
    for name, value in fuzzing.FUZZ_LIMITS.items():
        monkeypatch.setenv(name, value)
    for logger in ("tifffile", "nibabel", "pydicom"):
        monkeypatch.setattr(logging.getLogger(logger), "level", logging.CRITICAL)


@pytest.mark.parametrize("name", list(fuzzing.TARGETS))
def test_damaged_real_files_read_or_raise_a_medlens_error(name, data_root, tmp_path):
    target = fuzzing.TARGETS[name]

    @seed(20261205)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(data=fuzzing.inputs(target, data_root))
    def property_holds(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = fuzzing.outcome(target, data, tmp_path, data_root)
        assert found is None, f"{name}: {type(found).__name__}: {found}"

    property_holds()
