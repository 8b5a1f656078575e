"""Class labels checked before any work starts.

A label is the index of a class name: a whole number ``0 ≤ y < n_classes``. Casting labels to integers
without looking (what ``np.asarray(y).astype(int)`` does) turns 0.5 and 1.5 into 0 and 1 and trains
silently on the wrong classes; a negative label or a 7 in a binary set used to fail only after training,
inside a metric. :func:`check_labels` refuses all of these with :class:`~medlens.errors.LabelError`, naming
the source file, the first offending sample and how many there are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medlens.errors import LabelError


def _first(bad: np.ndarray, values: np.ndarray, ids: Sequence | None) -> str:
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    flat = values.reshape(-1)
    sample = f"sample {ids[i]!s}" if ids is not None and values.ndim == 1 and i < len(ids) else f"position {i}"
    return f"{flat[i].item()!r} at {sample} ({int(bad.sum())} such value(s))"


def check_labels(labels, *, names: Sequence[str] | None = None, source: object = None,
                 ids: Sequence | None = None) -> np.ndarray:
    """``labels`` as int64 after checking that each is a class index.

    Parameters
    ----------
    labels : array-like
        ``(N,)`` class indices, or ``(N, L)`` 0/1 multi-label targets.
    names : sequence of str, optional
        The class names; every label of a ``(N,)`` array must be below ``len(names)``.
    source : str or Path, optional
        The file (or dataset) the labels came from, named in the error.
    ids : sequence, optional
        Sample identifiers, to name the first bad sample.

    Returns
    -------
    np.ndarray
        int64, same shape.

    Raises
    ------
    LabelError
        Not numbers, NaN, not whole numbers (0.5, 1.5), negative, or not below the number of class names.
    """
    where = f"{source}: " if source is not None else ""
    values = np.asarray(labels)
    if values.dtype == bool:
        return values.astype(np.int64)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise LabelError(f"{where}labels are {values.dtype} values, not class indices (0, 1, ...)")
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            raise LabelError(f"{where}label {_first(~finite, values, ids)} is not a number; every label must be "
                             "a class index 0, 1, ...")
        fractional = values != np.round(values)
        if fractional.any():
            raise LabelError(f"{where}label {_first(fractional, values, ids)} is not a whole number; class "
                             "labels are indices 0, 1, ... (a regression target or probabilities cannot be a "
                             "class label)")
    negative = values < 0
    if negative.any():
        raise LabelError(f"{where}label {_first(negative, values, ids)} is negative; class labels are 0, 1, ...")
    if values.size and values.max() >= 2**31:
        raise LabelError(f"{where}label {_first(values >= 2**31, values, ids)} is too large to be a class index")
    if names and values.ndim == 1:
        over = values >= len(names)
        if over.any():
            listing = ", ".join(f"{i} {n}" for i, n in enumerate(names))
            raise LabelError(f"{where}label {_first(over, values, ids)} has no class: the {len(names)} classes "
                             f"are {listing}")
    return values.astype(np.int64)
