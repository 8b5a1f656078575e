"""Volumes of interest: the fixed-size, isotropic, windowed cube around one lesion.

The same function prepares a nodule for training (the ``lidc_nodules`` builder, from the LIDC VOI
files) and for prediction (``medlens predict`` on a full DICOM series with a nodule position or
mask), so a model sees its inputs prepared exactly as in training.

Steps: resample the HU volume to ``target_spacing`` mm isotropic (linear; the mask nearest
neighbour), take the box centre from the mask's centre of mass (or from the given position mapped
onto the new grid), crop or pad to ``size``³ (air, −1000 HU, outside the scan), window to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medlens.errors import GeometryError
from medlens.preprocess.geometry import center_of_mass_voxel, crop_or_pad, resample
from medlens.preprocess.intensity import apply_window
from medlens.preprocess.radiomics import mask_features

AIR_HU = -1000.0
MARGIN_VOXELS = 3


def to_resampled_voxel(position: Sequence[float], spacing: Sequence[float], target: Sequence[float]) -> tuple[float, ...]:
    """Map a voxel position onto the grid of :func:`~medlens.preprocess.geometry.resample`.

    ``resample`` treats voxels as areas (``scipy.ndimage.zoom`` with ``grid_mode=True``), so voxel
    centre ``c`` of spacing ``s`` lies at ``(c + 0.5) · s / t − 0.5`` on the grid of spacing ``t``.
    """
    return tuple((c + 0.5) * s / t - 0.5 for c, s, t in zip(position, spacing, target))


def crop_around(volume: np.ndarray, centre: Sequence[float], spacing: Sequence[float], extent_mm: float,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Cut the part of a large ``volume`` (D, H, W) within ``extent_mm / 2`` (+ a few voxels) of ``centre``.

    Resampling a whole CT series to build a 32 mm cube would waste seconds; cropping first at whole
    voxels keeps the grid, so the result equals resampling everything and cropping after.

    Returns
    -------
    tuple
        The cropped volume, the cropped mask (or None) and ``centre`` in the cropped array's voxels.
    """
    lows, highs = [], []
    for c, s, n in zip(centre, spacing, volume.shape):
        half = int(np.ceil(extent_mm / 2 / s)) + MARGIN_VOXELS
        lows.append(max(0, int(np.floor(c)) - half))
        highs.append(min(n, int(np.ceil(c)) + half + 1))
    box = tuple(slice(lo, hi) for lo, hi in zip(lows, highs))
    moved = tuple(c - lo for c, lo in zip(centre, lows))
    return volume[box], None if mask is None else mask[box], moved


def lesion_cube(hu: np.ndarray, spacing: Sequence[float], *, mask: np.ndarray | None = None,
                centre: Sequence[float] | None = None, target_spacing: float = 1.0, size: int = 32,
                window: str = "lung", mask_channel: bool = True, source: str = "volume"
                ) -> tuple[np.ndarray, dict[str, float] | None]:
    """The model input around one lesion, and its radiomic features when a mask is given.

    Parameters
    ----------
    hu : ndarray, shape (D, H, W)
        CT in Hounsfield units.
    spacing : sequence of float
        Voxel spacing (z, y, x) in mm.
    mask : ndarray of bool, shape (D, H, W), optional
        The lesion mask; its centre of mass (after resampling) is the box centre.
    centre : sequence of float, optional
        Voxel position (z, y, x) of the lesion in ``hu``, used when no mask is given.
    target_spacing : float
        Isotropic output spacing in mm.
    size : int
        Cube edge in voxels.
    window : str
        Window preset of :func:`~medlens.preprocess.intensity.apply_window`.
    mask_channel : bool
        Append the mask as channel 1 (needs ``mask``).
    source : str
        Name of the input, for error messages.

    Returns
    -------
    cube : ndarray, shape (C, size, size, size), float32
        Channel 0 the windowed CT, channel 1 the mask when ``mask_channel``.
    features : dict or None
        :func:`~medlens.preprocess.radiomics.mask_features` of the resampled lesion, None without a mask.
    """
    if hu.ndim != 3:
        raise GeometryError(f"{source}: a lesion cube needs a (D, H, W) volume, got shape {hu.shape}")
    if mask is None and centre is None:
        raise GeometryError(f"{source}: give the lesion's mask or its centre position")
    if mask is None and mask_channel:
        raise GeometryError(f"{source}: this model reads the lesion mask as an input channel; give a mask "
                            "(e.g. the readers' contours of an LIDC XML), a position alone is not enough")
    if mask is not None and mask.shape != hu.shape:
        raise GeometryError(f"{source}: mask shape {mask.shape} differs from image shape {hu.shape}")
    if mask is not None and not mask.any():
        raise GeometryError(f"{source}: the lesion mask is empty")
    target = (float(target_spacing),) * 3
    resampled, _ = resample(hu.astype(np.float32), spacing, target, order=1)
    lesion = None
    if mask is not None:
        lesion, _ = resample(mask.astype(np.float32), spacing, target, order=0)
        lesion = lesion > 0.5
        if not lesion.any():
            raise GeometryError(f"{source}: the lesion mask is empty after resampling to {target_spacing} mm")
        box_centre = center_of_mass_voxel(lesion)
    else:
        box_centre = to_resampled_voxel(centre, spacing, target)
    features = None if lesion is None else mask_features(resampled, lesion, target)
    channels = [apply_window(crop_or_pad(resampled, (size,) * 3, center=box_centre, pad_value=AIR_HU),
                             preset=window)]
    if mask_channel:
        channels.append(crop_or_pad(lesion.astype(np.float32), (size,) * 3, center=box_centre, pad_value=0.0))
    return np.stack(channels).astype(np.float32), features
