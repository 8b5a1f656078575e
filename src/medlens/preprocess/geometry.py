"""Spatial transforms: resampling to a voxel spacing, cropping/padding around a centre, mask centroids.

Arrays are spatial, 2D ``(H, W)`` or 3D ``(D, H, W)``, optionally with leading channel axes. The
number of spatial axes is always told by the length of ``spacing`` (or ``size``): an array with one
more axis than that has a leading channel axis, which is left untouched. Spacing is in mm and in the
array's axis order ((z, y, x) for medlens volumes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medlens.errors import ConfigError, GeometryError


def _spatial_count(array: np.ndarray, n: int, what: str) -> int:
    """Check that ``array`` has ``n`` spatial axes (plus at most one channel axis); return the channel count."""
    if array.ndim not in (n, n + 1):
        raise GeometryError(
            f"{what} has {n} values but the array has shape {array.shape}: expected {n} spatial axes "
            f"or a leading channel axis plus {n}"
        )
    return array.ndim - n


def resample(
    array: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 1,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample a 2D/3D array from ``spacing`` to (about) ``target_spacing`` with spline interpolation.

    The output shape is exactly ``round(shape * spacing / target_spacing)`` per spatial axis (at least 1),
    computed with :func:`scipy.ndimage.zoom` in ``grid_mode=True`` (voxels are treated as areas, so the
    image's physical extent is kept) and ``mode="nearest"`` at the borders. Because the shape is
    rounded, the returned spacing ``spacing * shape / new_shape`` can differ slightly from the target.

    Parameters
    ----------
    array : np.ndarray
        ``(*spatial)`` or ``(C, *spatial)``; a leading channel axis is recognised by
        ``array.ndim == len(spacing) + 1`` and each channel is resampled alike.
    spacing, target_spacing : sequence of float
        Voxel size (mm) per spatial axis, now and wanted; all positive.
    order : int
        Spline order, 0 (nearest: use for label masks, keeps the dtype) to 5; 1 is linear.

    Returns
    -------
    (np.ndarray, tuple of float)
        The resampled array (float32 for ``order > 0``) and its actual spacing.
    """
    array = np.asarray(array)
    spacing = tuple(float(s) for s in spacing)
    target = tuple(float(s) for s in target_spacing)
    if len(target) != len(spacing):
        raise GeometryError(f"target_spacing {target} and spacing {spacing} differ in length")
    if min(spacing + target) <= 0:
        raise ConfigError(f"spacings must be positive, got spacing {spacing}, target {target}")
    if not 0 <= order <= 5:
        raise ConfigError(f"interpolation order must be 0..5, got {order}")
    channels = _spatial_count(array, len(spacing), "spacing")
    shape = array.shape[channels:]
    new_shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))
    # scipy's output shape is round(shape * zoom), i.e. exactly new_shape
    zoom = (1.0,) * channels + tuple(m / n for m, n in zip(new_shape, shape))
    data = array if order == 0 else array.astype(np.float32, copy=False)
    out = ndimage.zoom(data, zoom, order=order, mode="nearest", grid_mode=True)
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, shape, new_shape))
    return out, new_spacing


def crop_or_pad(
    array: np.ndarray,
    size: Sequence[int],
    center: Sequence[float] | None = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Cut a ``size`` box centred on ``center``, padding with ``pad_value`` where it leaves the array.

    The box covers voxels ``round(center) - size // 2`` up to (excluding) that plus ``size`` on each
    spatial axis, so an odd ``size`` is centred exactly. For CT in HU a ``pad_value`` of −1024 (air)
    is usually the right fill.

    Parameters
    ----------
    array : np.ndarray
        ``(*spatial)`` or ``(C, *spatial)``, the spatial axes being the last ``len(size)``.
    size : sequence of int
        Output spatial shape, all positive.
    center : sequence of float, optional
        Voxel coordinates of the box centre (may lie outside the array), rounded to the nearest voxel;
        default ``shape // 2``, which makes a box of the array's own size return the array unchanged.
    pad_value : float
        Fill value for the parts of the box outside the array.

    Returns
    -------
    np.ndarray
        Same dtype as ``array``, shape ``(C?, *size)``.
    """
    array = np.asarray(array)
    size = tuple(int(s) for s in size)
    if min(size) <= 0:
        raise ConfigError(f"crop size must be positive, got {size}")
    channels = _spatial_count(array, len(size), "size")
    shape = array.shape[channels:]
    if center is None:
        center = tuple(n // 2 for n in shape)
    if len(center) != len(size):
        raise GeometryError(f"center {tuple(center)} and size {size} differ in length")
    starts = [int(np.round(c)) - s // 2 for c, s in zip(center, size)]
    out = np.full(array.shape[:channels] + size, pad_value, dtype=array.dtype)
    src, dst = [slice(None)] * channels, [slice(None)] * channels
    for start, s, n in zip(starts, size, shape):
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:  # the box misses the array on this axis: all padding
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


def center_of_mass_voxel(mask: np.ndarray) -> tuple[int, ...]:
    """The voxel nearest to the centroid of the non-zero voxels of ``mask`` (all axes).

    Raises
    ------
    GeometryError
        If the mask is empty.
    """
    mask = np.asarray(mask) != 0
    if not mask.any():
        raise GeometryError(f"center_of_mass_voxel: the mask of shape {mask.shape} has no foreground voxel")
    return tuple(int(np.round(c)) for c in ndimage.center_of_mass(mask))
