"""``ArrayDataset``: the dataset every model fits on, and ``LazyImages``: images kept in a file until read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.labels import check_labels


class LazyImages:
    """The rows ``index`` of an ``(N, C, ...)`` array stored in a ``.npy`` file, read only when asked for.

    It stands in for an ``ArrayDataset``'s ``images`` when a dataset is larger than memory: ``len``, ``shape``,
    ``ndim`` and ``dtype`` come from the file's header; indexing with an integer reads that image, with a slice
    or an index array gives another ``LazyImages`` (no data read: a fold of a study costs nothing); and
    ``np.asarray(images)`` reads the rows it stands for. Each read maps the file anew and drops the mapping
    afterwards, so that the pages read do not stay in the process's resident memory (a long-lived mapping keeps
    every page it touched resident until the process ends).
    """

    def __init__(self, path: str | Path, index: np.ndarray | None = None):
        self.path = Path(path)
        mapped = np.load(self.path, mmap_mode="r")
        self.dtype, self._sample_shape, total = mapped.dtype, mapped.shape[1:], len(mapped)
        del mapped
        self.index = np.arange(total) if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self._sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._sample_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        mapped = np.load(self.path, mmap_mode="r")
        try:
            order = np.argsort(rows, kind="stable")  # read the file front to back
            out = np.empty((len(rows), *self._sample_shape), dtype=self.dtype)
            out[order] = mapped[rows[order]]
            return out
        finally:
            del mapped

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self._read(self.index[[item]])[0]
        if isinstance(item, tuple):  # rows first, then the rest read from those rows
            return np.asarray(self[item[0]])[(slice(None), *item[1:])] if not isinstance(item[0], (int, np.integer)) \
                else self[item[0]][item[1:]]
        return LazyImages(self.path, self.index[item])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(self.index)
        return out if dtype is None else out.astype(dtype, copy=False)


def chunks(n: int, size: int = 256):
    """``slice`` objects covering ``range(n)`` in blocks of ``size``: how work over many images stays within a
    fixed amount of memory when the images are :class:`LazyImages`."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass
class ArrayDataset:
    """Images, labels and optional patient groups, all indexed the same way.

    Parameters
    ----------
    images : np.ndarray or LazyImages
        ``(N, C, ...)`` float32, channel first; :class:`LazyImages` for sets larger than memory (read in
        blocks, :func:`chunks`).
    labels : np.ndarray
        ``(N,)`` integer class indices, checked on construction by
        :func:`medlens.data.labels.check_labels` (whole numbers, ≥ 0, below the number of class names in
        ``meta["labels"]``): a :class:`~medlens.errors.LabelError` names ``meta["source"]`` and the sample.
    groups : np.ndarray, optional
        ``(N,)`` group ids (patient ids); samples of one group never straddle a split.
    features : np.ndarray, optional
        ``(N, F)`` float32 tabular features computed once for the whole set (e.g. Gabor statistics,
        nodule diameter); models that work on features use these instead of the pixels.
    ids : np.ndarray, optional
        ``(N,)`` sample identifiers (file stems, nodule ids) carried into predictions.
    split : np.ndarray, optional
        ``(N,)`` the official split of each sample (``"train"``, ``"val"``, ``"test"``) where the
        data publishes one.
    aux : np.ndarray, optional
        ``(N, A)`` float auxiliary targets (e.g. the radiologists' semantic ratings of each nodule), named
        by ``meta["aux_names"]``, NaN where missing: what a model may learn to predict beside the label
        during training (:class:`~medlens.models.cnn.CNNClassifier` ``auxiliary_weight``). Never a model
        input, so a model that uses them needs nothing but the image at prediction time.
    meta : dict
        ``labels`` (class names), ``spacing``, ``source_md5``, ``feature_names`` and the like.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    features: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    ids: np.ndarray | None = None
    split: np.ndarray | None = None
    aux: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = int(np.asarray(self.labels).size)
        for name in ("images", "groups", "features", "ids", "split", "aux"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"ArrayDataset: {name} has {len(value)} rows but labels has {n}")
        self.labels = check_labels(np.asarray(self.labels).reshape(-1), names=self.meta.get("labels"),
                                   source=self.meta.get("source"), ids=self.ids)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        names = self.meta.get("labels")
        return len(names) if names else int(self.labels.max()) + 1

    def subset(self, index: np.ndarray) -> "ArrayDataset":
        """The samples at ``index``, sharing ``meta``."""
        index = np.asarray(index)
        return ArrayDataset(
            images=self.images[index],
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
            features=None if self.features is None else self.features[index],
            meta=self.meta,
            ids=None if self.ids is None else self.ids[index],
            split=None if self.split is None else self.split[index],
            aux=None if self.aux is None else self.aux[index],
        )
