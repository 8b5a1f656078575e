"""Shape and intensity features of a segmented lesion (a small subset of the IBSI radiomic features).

References
----------
Zwanenburg A, et al. The Image Biomarker Standardization Initiative: standardized quantitative radiomics
for high-throughput image-based phenotyping. Radiology 295(2):328-338 (2020). Feature definitions follow
the IBSI reference manual (arXiv:1612.07003), sections 3.1 (morphology) and 3.3 (intensity statistics).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import marching_cubes, mesh_surface_area


def mask_features(hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Morphology and HU statistics of one 3D lesion mask.

    Parameters
    ----------
    hu : np.ndarray
        ``(D, H, W)`` intensities in Hounsfield units.
    mask : np.ndarray
        ``(D, H, W)`` boolean lesion mask, same grid as ``hu``.
    spacing : tuple of float
        Voxel size (z, y, x) in mm.

    Returns
    -------
    dict
        ``shape_volume_mm3`` V (voxel count × voxel volume); ``shape_surface_mm2`` A (area of the
        marching-cubes mesh at level 0.5); ``shape_sphericity`` = (36 π V²)^(1/3) / A (1 for a sphere);
        ``shape_equiv_diameter_mm`` = (6 V / π)^(1/3); ``shape_major_axis_mm``, ``shape_minor_axis_mm``
        = 4 √λ of the largest/smallest eigenvalue λ of the voxel-position covariance (IBSI 3.1.10);
        ``shape_elongation`` = √(λ_minor_mid / λ_major), ``shape_flatness`` = √(λ_least / λ_major);
        ``hu_mean``, ``hu_std``, ``hu_p10``, ``hu_p90`` inside the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {hu.shape}")
    if not mask.any():
        raise ValueError("empty mask: no voxel to describe")
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    volume = float(mask.sum() * np.prod(spacing_arr))
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=tuple(spacing_arr))
    surface = float(mesh_surface_area(verts, faces))

    positions = np.argwhere(mask) * spacing_arr
    if len(positions) > 1:
        eigen = np.sort(np.clip(np.linalg.eigvalsh(np.cov(positions, rowvar=False)), 0.0, None))
    else:
        eigen = np.zeros(3)
    least, minor, major = eigen
    inside = hu[mask].astype(np.float64)
    return {
        "shape_volume_mm3": volume,
        "shape_surface_mm2": surface,
        "shape_sphericity": float((36.0 * np.pi * volume**2) ** (1.0 / 3.0) / surface),
        "shape_equiv_diameter_mm": float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
        "shape_major_axis_mm": float(4.0 * np.sqrt(major)),
        "shape_minor_axis_mm": float(4.0 * np.sqrt(minor)),
        "shape_elongation": float(np.sqrt(minor / major)) if major > 0 else 1.0,
        "shape_flatness": float(np.sqrt(least / major)) if major > 0 else 1.0,
        "hu_mean": float(inside.mean()),
        "hu_std": float(inside.std()),
        "hu_p10": float(np.percentile(inside, 10)),
        "hu_p90": float(np.percentile(inside, 90)),
    }
