"""The one image type every reader returns.

Conventions (see DESIGN.md): ``array`` is float32 or an integer type, channel first, ``(C, H, W)`` for
2D images and ``(C, D, H, W)`` for volumes. Spatial axes are ordered (z, y, x) and ``spacing`` and
``origin`` follow the same order, in millimetres. CT intensities are Hounsfield units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class MedImage:
    """An image or volume with its geometry and metadata.

    Parameters
    ----------
    array : np.ndarray
        Channel-first pixel data, ``(C, H, W)`` or ``(C, D, H, W)``.
    spacing : tuple of float
        Voxel size in mm, one value per spatial axis, in (z, y, x) order. 1.0 where unknown.
    origin : tuple of float
        World position (mm, DICOM LPS) of the first voxel, (z, y, x) order. Zeros where unknown.
    direction : np.ndarray
        ``(ndim, ndim)`` matrix whose columns are the world directions (x, y, z order, LPS) of the
        array axes in (z, y, x) order; identity where unknown.
    meta : dict
        ``modality``, ``patient_id``, ``study_uid``, ``series_uid``, ``source`` and reader-specific keys.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nspatial = self.array.ndim - 1
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != nspatial:
            raise ValueError(f"spacing {self.spacing} does not match array shape {self.array.shape}")
        self.origin = tuple(float(o) for o in self.origin) if self.origin else (0.0,) * nspatial
        if self.direction is None:
            self.direction = np.eye(nspatial)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape, without the channel axis."""
        return tuple(self.array.shape[1:])

    @property
    def modality(self) -> str:
        return str(self.meta.get("modality", "OT"))

    @property
    def source(self) -> Path | None:
        src = self.meta.get("source")
        return Path(src) if src else None
