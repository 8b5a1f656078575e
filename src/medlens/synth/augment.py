"""Augment a labelled dataset with images drawn from a trained conditional GAN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError
from medlens.synth.gan import GAN, save_grid


def augment_with_generator(data: ArrayDataset, checkpoint: str | Path | GAN, n_per_class: int,
                           seed: int = 0) -> ArrayDataset:
    """``data`` with ``n_per_class`` synthetic images of every class appended.

    Samples are drawn from the GAN folder ``checkpoint`` (or a :class:`GAN`), resized (bilinear,
    antialiased) to the dataset's image size when the GAN works at another size, and get the id
    ``synthetic_<i>``, the group ``"synthetic"``, the split ``"train"`` and NaN tabular features
    (features are measured on real images only). ``meta["n_synthetic"]`` records how many were added.

    Raises
    ------
    ConfigError
        When the GAN's classes or channels do not match the dataset's, or ``n_per_class < 0``.
    """
    gan = checkpoint if isinstance(checkpoint, GAN) else GAN.load(checkpoint)
    cfg = gan.config
    if n_per_class < 0:
        raise ConfigError(f"augment.n_per_class: must be >= 0, got {n_per_class}")
    if data.images.ndim != 4 or data.images.shape[1] != cfg.channels:
        raise ConfigError(f"augment: the GAN makes {cfg.channels}-channel 2D images; the dataset has images "
                          f"of shape {data.images.shape[1:]}")
    if data.n_classes != cfg.n_classes:
        raise ConfigError(f"augment: the GAN has {cfg.n_classes} classes, the dataset {data.n_classes}")
    images, labels = _per_class(gan, n_per_class, seed)
    size = data.images.shape[-2:]
    if images.shape[-2:] != size:
        images = torch.nn.functional.interpolate(torch.from_numpy(images), size=size, mode="bilinear",
                                                 antialias=True, align_corners=False).numpy()
    n = len(labels)

    meta = dict(data.meta, n_synthetic=int(data.meta.get("n_synthetic", 0)) + n)

    def appended(values: np.ndarray | None, fill) -> np.ndarray | None:
        return None if values is None else np.concatenate([values.astype(object), np.asarray(fill, dtype=object)])

    return ArrayDataset(
        images=np.concatenate([data.images, images.astype(data.images.dtype)]),
        labels=np.concatenate([data.labels, labels]),
        groups=appended(data.groups, np.full(n, "synthetic")),
        features=None if data.features is None else np.concatenate(
            [data.features, np.full((n, data.features.shape[1]), np.nan, data.features.dtype)]),
        meta=meta,
        ids=appended(data.ids, [f"synthetic_{i}" for i in range(n)]),
        split=appended(data.split, np.full(n, "train")),
    )


def synthetic_grid(checkpoint: str | Path | GAN, path: str | Path, per_class: int = 8, seed: int = 0) -> Path:
    """A PNG of ``per_class`` samples of each class of the GAN ``checkpoint``, one row per class, for a report."""
    gan = checkpoint if isinstance(checkpoint, GAN) else GAN.load(checkpoint)
    return save_grid(_per_class(gan, per_class, seed)[0], path, columns=per_class)


def _per_class(gan: GAN, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of class 0, then ``n`` of class 1, ...: images and labels (class ``c`` seeded ``seed + c``)."""
    parts = [gan.sample(n, label=c, seed=seed + c) for c in range(gan.config.n_classes)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
