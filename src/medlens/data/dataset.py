"""``ArrayDataset``: the in-memory dataset every model fits on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medlens.data.labels import check_labels


@dataclass
class ArrayDataset:
    """Images, labels and optional patient groups, all indexed the same way.

    Parameters
    ----------
    images : np.ndarray
        ``(N, C, ...)`` float32, channel first.
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
