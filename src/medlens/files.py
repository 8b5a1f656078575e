"""Atomic file writes: the files medlens writes (bundles, plans, masks, reports, figures, tables,
checkpoints) go to a hidden temporary name beside their target and are then renamed over it
(``os.replace``, atomic within one file system). Low-level writers that a caller wraps (``write_nifti``)
and the ONNX exporter, which may write companion files named after its target, write in place.

A crash or a failing writer therefore never leaves half a file at the target, a file already there stays
intact until the new one is complete, and the temporary file is removed when the writer fails. The
temporary name ends with the target's name, so writers that choose a format from the suffix (NIfTI's
``.nii.gz``, NumPy's ``.npz``) write the target's format; it is created by the writer itself, so the file
gets the usual permissions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``target`` (folders are created).

    Returns ``target``. If ``write`` raises, the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_text_atomically(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` with :func:`write_atomically`."""
    return write_atomically(target, lambda path: path.write_text(text, encoding="utf-8"))


def json_ready(value):
    """A copy of ``value`` that :func:`json.dumps` can write: numpy scalars become Python numbers, arrays
    and tuples become lists, mapping keys become strings (NaN stays NaN)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def resume_folder(out: str | Path, resume: bool) -> Path:
    """The folder beside ``out`` where a command keeps the progress of unfinished work (``.<name>.resume``).

    Its presence means an earlier run into ``out`` was killed or stopped: with ``resume`` the command continues
    from it; without, it is refused with a message (the progress is never thrown away unasked).
    """
    out = Path(out)
    folder = out.parent / f".{out.name}.resume"
    if folder.exists() and not resume:
        from medlens.errors import MedlensError

        raise MedlensError(f"{out}: an earlier run into it did not finish (its progress is in {folder}); pass "
                           f"--resume to continue it, or delete {folder} to start again")
    return folder
