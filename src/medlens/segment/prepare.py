"""Applying a plan to an image: channels, normalisation, resampling to the target spacing, padding.

Training (:mod:`medlens.segment.train`) and inference (:mod:`medlens.segment.infer`) prepare images with
these same functions, so the network sees at prediction time exactly what it saw in training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medlens.errors import ConfigError
from medlens.segment.datasets import SegCase
from medlens.segment.plan import Normalization, SegmentationPlan, check_image


def match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Repeat a single channel, or average several into one, to get ``channels``."""
    if array.shape[0] == channels:
        return array
    if array.shape[0] == 1:
        return np.repeat(array, channels, axis=0)
    if channels == 1:
        return array.mean(axis=0, keepdims=True)
    raise ConfigError(f"image has {array.shape[0]} channels, the plan expects {channels}")


def normalize(array: np.ndarray, norm: Normalization) -> np.ndarray:
    """Apply the plan's normalisation to a ``(C, ...)`` array.

    ``ct_clip_zscore``, ``dataset_clip_zscore``: ``(clip(x, lo, hi) - mean) / std`` with the dataset's
    foreground statistics. ``zscore_per_image``: ``(x - mean_c) / std_c`` per channel of this image.
    """
    x = array.astype(np.float32)
    if norm.scheme != "zscore_per_image":
        lo, hi = norm.clip
        return (np.clip(x, lo, hi) - norm.mean) / norm.std
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-6)


def resample_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: list[float]) -> tuple[int, ...]:
    """The shape of an image of ``shape`` and ``spacing`` resampled to ``target`` spacing."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resize(array: np.ndarray, shape: tuple[int, ...], labels: bool = False) -> np.ndarray:
    """Resize ``(C, ...)`` to spatial ``shape``: (bi/tri)linear for images, nearest for labels."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if labels:
        out = F.interpolate(t, size=shape, mode="nearest-exact")
    else:
        out = F.interpolate(t, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear",
                            align_corners=False, antialias=len(shape) == 2)
    return out[0].numpy()


def pad_value(array: np.ndarray) -> float:
    """The value a prepared ``(C, ...)`` array is padded with to reach the patch size: its minimum.

    For CT this is the normalised lower clip bound (air), so that padding looks like the lung around a
    nodule. Training (:class:`medlens.segment.train.PatchDataset`) and inference
    (:func:`medlens.segment.infer.predict_probabilities`) must pad with the same value: a network that
    was trained with air around small volumes and then sees another value there (MONAI's sliding
    window pads with 0, which after a CT z-score is soft tissue near −220 HU) fails on every volume
    smaller than the patch (most LIDC nodule VOIs are thinner than the patch).
    """
    return float(array.min())


def pad_to(array: np.ndarray, shape: tuple[int, ...], value: float = 0.0) -> np.ndarray:
    """Pad ``(C, ...)`` symmetrically so each spatial axis is at least ``shape``
    (the ``(n - s) // 2`` extra voxels before, the rest after)."""
    pads = [(0, 0)] + [((max(s - n, 0)) // 2, max(s - n, 0) - max(s - n, 0) // 2)
                       for n, s in zip(array.shape[1:], shape)]
    return np.pad(array, pads, constant_values=value) if any(sum(p) for p in pads) else array


def unpad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`pad_to`: the centre ``shape`` window of ``(C, ...)`` that :func:`pad_to` grew."""
    sl = tuple(slice((m - n) // 2, (m - n) // 2 + n) for n, m in zip(shape, array.shape[1:]))
    return array[(slice(None),) + sl]


def prepare_image(plan: SegmentationPlan, image) -> np.ndarray:
    """Channels matched, normalised and resampled to the plan's target spacing: ``(C, ...)`` float32."""
    check_image(plan, image.array, image.meta.get("source"))
    x = normalize(match_channels(image.array, plan.fingerprint.channels), plan.normalization)
    return resize(x, resample_shape(image.shape, image.spacing, plan.target_spacing))


def prepare_case(plan: SegmentationPlan, case: SegCase) -> tuple[np.ndarray, np.ndarray]:
    """Image as :func:`prepare_image` and its mask resampled the same way (``(1, ...)`` int64)."""
    x = prepare_image(plan, case.image)
    y = resize(case.mask[None].astype(np.float32), x.shape[1:], labels=True).astype(np.int64)
    return x, y
