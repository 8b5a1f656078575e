"""Lesions of a series: from a segmentation mask (one per connected component) or from a given position,
with where they are in the patient and how large they are.

Geometry
--------
A voxel ``(k, j, i)`` (slice, row, column) of a series read by :func:`medlens.data.readers.read_dicom` lies at

    P = S_k + i · Δc · r + j · Δr · c

in the patient coordinate system (LPS, mm), with ``S_k`` the ImagePositionPatient of sorted slice ``k``
(interpolated linearly between slices for a fractional ``k``), ``r`` and ``c`` the row and column direction
cosines of ImageOrientationPatient and ``Δr``, ``Δc`` the row and column spacing (PS3.3 C.7.6.2.1.1,
equation C.7.6.2.1-1).

Size
----
``diameter_mm`` is the longest axial diameter, as in LIDC-IDRI's and Lung-RADS' nodule size: the
largest maximum Feret diameter of the lesion's cross-sections over its slices, in mm
(``skimage.measure.regionprops(..., spacing=(Δr, Δc)).feret_diameter_max``). ``volume_mm3`` is the voxel
count times the voxel volume. Components are connected over faces, edges and corners (26-connectivity,
as :func:`medlens.segment.infer.keep_component`); components whose longest axial diameter is below
``min_diameter_mm`` (default 3 mm: LIDC's readers rated nodules of 3 mm and more) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops

from medlens.errors import GeometryError
from medlens.image import MedImage

MIN_DIAMETER_MM = 3.0


@dataclass
class Lesion:
    """One lesion: what found it, its voxel centre and patient position, and its mask and size when known."""

    number: int
    source: str
    centre_voxel: tuple[float, float, float]
    position_mm: tuple[float, float, float]
    mask: np.ndarray | None = None
    diameter_mm: float | None = None
    volume_mm3: float | None = None


def voxel_to_patient(image: MedImage, voxel: tuple[float, float, float]) -> tuple[float, float, float]:
    """Patient (LPS) position in mm of a voxel ``(k, j, i)`` of a DICOM series (module docstring)."""
    positions = image.meta.get("slice_positions")
    if not positions or any(p is None for p in positions) or image.direction is None:
        raise GeometryError(f"{image.source}: the series has no slice positions; a lesion cannot be placed")
    k, j, i = (float(v) for v in voxel)
    low = int(np.clip(np.floor(k), 0, len(positions) - 1))
    high = min(low + 1, len(positions) - 1)
    fraction = k - low if high > low else 0.0
    corner = (1 - fraction) * np.asarray(positions[low], float) + fraction * np.asarray(positions[high], float)
    row_dir, col_dir = image.direction[:, 2], image.direction[:, 1]  # r (along a row) and c (down a column)
    point = corner + i * image.spacing[2] * row_dir + j * image.spacing[1] * col_dir
    return tuple(float(v) for v in point)


def measure(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """``(diameter_mm, volume_mm3)`` of a boolean lesion mask (module docstring)."""
    diameter = 0.0
    for plane in np.flatnonzero(mask.any(axis=(1, 2))):
        props = regionprops(mask[plane].astype(np.uint8), spacing=(spacing[1], spacing[2]))
        diameter = max(diameter, float(props[0].feret_diameter_max))
    return diameter, float(mask.sum() * np.prod(spacing))


def lesions_from_mask(mask: np.ndarray, image: MedImage, min_diameter_mm: float = MIN_DIAMETER_MM
                      ) -> tuple[list[Lesion], int]:
    """One lesion per connected foreground component of ``mask``, largest first; and how many components
    were dropped as smaller than ``min_diameter_mm``."""
    labels, count = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    lesions, dropped = [], 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        component = labels == index
        diameter, volume = measure(component[box], image.spacing)
        if diameter < min_diameter_mm:
            dropped += 1
            continue
        centre = tuple(float(c) for c in ndimage.center_of_mass(component))
        lesions.append(Lesion(0, "segmentation component", centre, voxel_to_patient(image, centre),
                              mask=component, diameter_mm=diameter, volume_mm3=volume))
    lesions.sort(key=lambda lesion: -lesion.volume_mm3)
    for number, lesion in enumerate(lesions, start=1):
        lesion.number = number
    return lesions, dropped


def lesion_at(position: tuple[float, float, float], image: MedImage, mask: np.ndarray | None = None) -> Lesion:
    """The lesion at voxel ``position`` (z, y, x); with a segmentation ``mask``, the component holding that
    voxel gives the lesion its mask and size (a position outside every component keeps neither)."""
    shape = image.shape
    if not all(0 <= c < n for c, n in zip(position, shape)):
        raise GeometryError(f"--at {position}: outside the series of shape {shape}")
    lesion = Lesion(1, "position given (--at)", tuple(float(c) for c in position), voxel_to_patient(image, position))
    if mask is not None:
        labels, _ = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
        hit = labels[tuple(int(round(c)) for c in position)]
        if hit:
            lesion.mask = labels == hit
            lesion.diameter_mm, lesion.volume_mm3 = measure(lesion.mask, image.spacing)
            lesion.source = "position given (--at), segmentation component there"
    return lesion
