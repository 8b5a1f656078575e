"""Checks every reader makes: the file exists and is not empty (before decoding), the decoded values are
finite (after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlens.errors import EmptyImageError, MissingPathError, NonFiniteImageError

NON_FINITE_MODES = ("error", "flag")
"""What a reader does with NaN or infinite values: raise, or return the image with their count in
``meta["non_finite_voxels"]``."""


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; :class:`MissingPathError` if absent, :class:`EmptyImageError` if 0 bytes."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path, "file")
    if path.stat().st_size == 0:
        raise EmptyImageError(path, "file is empty (0 bytes)")
    return path


def check_non_finite_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`NON_FINITE_MODES`, else ValueError (a caller's mistake)."""
    if mode not in NON_FINITE_MODES:
        raise ValueError(f"non_finite must be one of {NON_FINITE_MODES}, got {mode!r}")
    return mode


def count_non_finite(array: np.ndarray, path: str | Path | None, mode: str = "error") -> int:
    """The number of NaN and infinite values of ``array`` (0 for integer arrays, which cannot hold any).

    Parameters
    ----------
    array : np.ndarray
        Decoded pixel or voxel values.
    path : str or Path
        The file they came from, named in the error.
    mode : {"error", "flag"}
        ``"error"``: raise :class:`NonFiniteImageError` when the count is not 0. ``"flag"``: return it.
    """
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)):
        return 0
    n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if n_bad and mode == "error":
        n_nan = int(np.count_nonzero(np.isnan(array)))
        raise NonFiniteImageError(
            path, f"{n_bad:,} of {array.size:,} values are not finite ({n_nan:,} NaN, {n_bad - n_nan:,} "
                  "infinite): no model or measure can use them; mask or replace them first "
                  "(`medlens inspect` counts them)"
        )
    return n_bad
