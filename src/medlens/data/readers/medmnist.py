"""Read MedMNIST ``.npz`` archives (v2/v3, every size, 2D and 3D) into channel-first arrays.

An archive holds ``<split>_images`` and ``<split>_labels`` for the splits ``train``, ``val`` and ``test``:
images ``uint8`` of shape ``(N, H, W)`` (grayscale), ``(N, H, W, 3)`` (RGB) or ``(N, D, H, W)`` (3D), labels
``(N, 1)`` (one class index) or ``(N, L)`` (multi-label 0/1). This is the layout that the ``medmnist``
package writes and reads (``medmnist/dataset.py``); the reader here needs only numpy. Arrays are read
through :func:`medlens.data.readers.npz.open_npz`: each one's size is checked from its header before it
is decompressed, and a damaged archive is an error naming the file. Labels must be whole numbers ≥ 0
(:func:`medlens.data.labels.check_labels`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlens.data.labels import check_labels
from medlens.data.readers.npz import NpzArchive, open_npz
from medlens.errors import BadArchiveError, DatasetError, MissingPathError

SPLITS = ("train", "val", "test")


def _open(path: Path) -> NpzArchive:
    if not path.exists():
        raise MissingPathError(path, "MedMNIST archive")
    return open_npz(path)


def _require(archive: NpzArchive, keys: list[str], path: Path) -> None:
    missing = [key for key in keys if key not in archive.files]
    if missing:
        raise BadArchiveError(
            path,
            f"missing key(s) {', '.join(missing)}; a MedMNIST archive holds <split>_images and <split>_labels "
            f"for {', '.join(SPLITS)} (this one has: {', '.join(archive.files) or 'nothing'})",
        )


def _read(archive: NpzArchive, key: str, path: Path) -> np.ndarray:
    return archive.read(key)


def _labels(raw: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``(N, 1)`` -> ``(N,)``; ``(N, L)`` with ``L > 1`` (multi-label) is kept; values checked as labels."""
    if raw.ndim == 2 and raw.shape[1] == 1:
        labels = raw[:, 0]
    elif raw.ndim in (1, 2):
        labels = raw
    else:
        raise BadArchiveError(path, f"{key} has shape {raw.shape}; expected (N,), (N, 1) or (N, L)")
    check_labels(labels, source=f"{path} [{key}]")
    return labels


def _check_split(split: str, path: Path) -> None:
    if split not in SPLITS:
        raise DatasetError(f"{path}: unknown split {split!r}; MedMNIST splits are {', '.join(SPLITS)}")


def load_medmnist(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of a MedMNIST archive.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    split : {"train", "val", "test"}
        Which split to read (only its two arrays are decompressed).

    Returns
    -------
    images : ndarray of uint8
        Channel first: ``(N, 1, H, W)`` grayscale, ``(N, 3, H, W)`` RGB, ``(N, 1, D, H, W)`` 3D.
    labels : ndarray
        ``(N,)`` class indices, or ``(N, L)`` 0/1 for multi-label sets (ChestMNIST).

    Raises
    ------
    MissingPathError
        No such file.
    UnreadableFileError
        Not an npz archive, or an array in it cannot be decoded.
    ImageTooLargeError
        An array's header claims more than ``MEDLENS_MAX_BYTES``.
    LabelError
        Labels that are not whole numbers ≥ 0.
    BadArchiveError
        Keys missing (the message names them), images not uint8 or of an unknown shape, or image and label
        counts that differ.
    """
    path = Path(path)
    _check_split(split, path)
    image_key, label_key = f"{split}_images", f"{split}_labels"
    with _open(path) as archive:
        _require(archive, [image_key, label_key], path)
        images = _read(archive, image_key, path)
        labels = _labels(_read(archive, label_key, path), label_key, path)
    if images.dtype != np.uint8:
        raise BadArchiveError(path, f"{image_key} has dtype {images.dtype}; MedMNIST images are uint8")
    if images.ndim == 3:
        images = images[:, np.newaxis]
    elif images.ndim == 4 and images.shape[-1] == 3:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    elif images.ndim == 4:
        images = images[:, np.newaxis]
    else:
        raise BadArchiveError(
            path, f"{image_key} has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)"
        )
    if len(images) != len(labels):
        raise BadArchiveError(path, f"{image_key} holds {len(images)} images but {label_key} {len(labels)} labels")
    return images, labels


def medmnist_counts(path: str | Path) -> dict[str, dict[int, int]]:
    """Samples per class index in each split, read from the labels alone.

    For multi-label archives the count of a label is the number of samples where it is positive.
    Every split lists the same label indices (0 up to the largest seen anywhere), zeros included.

    Returns
    -------
    dict
        ``{split: {label_index: count}}`` for ``train``, ``val``, ``test``.
    """
    path = Path(path)
    keys = [f"{split}_labels" for split in SPLITS]
    with _open(path) as archive:
        _require(archive, keys, path)
        labels = {split: _labels(_read(archive, key, path), key, path) for split, key in zip(SPLITS, keys)}
    if any(y.ndim == 2 for y in labels.values()):
        return {split: {i: int(n) for i, n in enumerate(y.sum(axis=0))} for split, y in labels.items()}
    n_classes = 1 + max((int(y.max()) for y in labels.values() if y.size), default=-1)
    return {
        split: {i: int(n) for i, n in enumerate(np.bincount(y.astype(np.int64), minlength=n_classes))}
        for split, y in labels.items()
    }
