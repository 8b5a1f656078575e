"""Checks every single-file reader makes before decoding."""

from __future__ import annotations

from pathlib import Path

from medlens.errors import EmptyImageError, MissingPathError


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; :class:`MissingPathError` if absent, :class:`EmptyImageError` if 0 bytes."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path, "file")
    if path.stat().st_size == 0:
        raise EmptyImageError(path, "file is empty (0 bytes)")
    return path
