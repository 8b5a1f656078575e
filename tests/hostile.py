"""Helpers for tests of hostile input: what a folder holds, to assert that nothing was written or lost."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """``{path: (size, sha256)}`` of every file under ``roots`` (hidden files included)."""
    files = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            files[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return files
