"""Intensity transforms: Hounsfield-unit windows, tissue ranges, thresholds and normalisation.

Every function is a plain function of a numpy array of any shape and returns float32 (masks: bool).
CT values are Hounsfield units (HU): ``HU = raw * RescaleSlope + RescaleIntercept``. Scanners store
pixels outside the reconstructed field of view (FOV) as a padding value far below air, e.g. −2048 HU in
the LIDC-IDRI GE series; every window and the threshold rule map them to 0.

References
----------
.. [1] Radiopaedia, "Windowing (CT)", https://radiopaedia.org/articles/windowing-ct (window presets).
.. [2] Radiopaedia, "Hounsfield unit", https://radiopaedia.org/articles/hounsfield-unit (tissue values).
.. [3] Isensee F. et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
       segmentation", Nature Methods 18:203–211 (2021) — the CT clip-then-z-score scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medlens.errors import ConfigError, GeometryError


@dataclass(frozen=True)
class Window:
    """A display window: HU ``center`` (level) and ``width``; it maps [lower, upper] onto [0, 1]."""

    center: float
    width: float

    @property
    def lower(self) -> float:
        return self.center - self.width / 2.0

    @property
    def upper(self) -> float:
        return self.center + self.width / 2.0


#: Named CT window presets (centre/level, width) in HU, as listed by Radiopaedia "Windowing (CT)" [1]:
#: lung W 1500 L −600, mediastinum W 350 L 50, bone W 1800 L 400, (abdominal) soft tissue W 400 L 50,
#: brain W 80 L 40.
WINDOWS: dict[str, Window] = {
    "lung": Window(center=-600.0, width=1500.0),
    "mediastinum": Window(center=50.0, width=350.0),
    "bone": Window(center=400.0, width=1800.0),
    "soft_tissue": Window(center=50.0, width=400.0),
    "brain": Window(center=40.0, width=80.0),
}

#: Nominal HU range ``(low, high)`` of each tissue [2]; single values appear as ``(v, v)`` and open
#: ranges use ±inf. ``outside_fov`` is the scanner padding outside the reconstructed field of view
#: (about −2000; −2048 in LIDC-IDRI). :func:`tissue_mask` widens each range by a tolerance.
TISSUE_HU: dict[str, tuple[float, float]] = {
    "outside_fov": (-np.inf, -2000.0),
    "air": (-1000.0, -1000.0),
    "fat": (-120.0, -90.0),
    "water": (0.0, 0.0),
    "csf": (20.0, 20.0),
    "kidney": (35.0, 35.0),
    "blood": (35.0, 45.0),
    "muscle": (20.0, 50.0),
    "liver": (45.0, 65.0),
    "bone": (800.0, np.inf),
}


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"{what}: unknown name {name!r}; available: {', '.join(sorted(table))}") from None


def scale_clip(x: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Clip-and-scale: ``clip((x - lower) / (upper - lower), 0, 1)`` as float32.

    Raises
    ------
    ConfigError
        If ``upper <= lower``.
    """
    if not upper > lower:
        raise ConfigError(f"scale range: upper ({upper}) must exceed lower ({lower})")
    out = (_float(x) - np.float32(lower)) / np.float32(upper - lower)
    return np.clip(out, 0.0, 1.0, out=out)


def apply_window(
    hu: np.ndarray, preset: str | None = None, center: float | None = None, width: float | None = None
) -> np.ndarray:
    """Apply a CT display window: HU in ``[center − width/2, center + width/2]`` → [0, 1], clipped outside.

    ``y = clip((hu − (c − w/2)) / w, 0, 1)``. This is the plain linear window; DICOM PS3.3 C.11.2.1.2
    shifts it by half a grey level (``c − 0.5``, ``w − 1``), which is below one HU and ignored here.

    Parameters
    ----------
    hu : np.ndarray
        Hounsfield units, any shape.
    preset : str, optional
        A name in :data:`WINDOWS`. Give either ``preset`` or both ``center`` and ``width``; an explicit
        ``center``/``width`` overrides the preset's value.
    center, width : float, optional
        Window level and width in HU; ``width`` must be positive.

    Returns
    -------
    np.ndarray
        float32 in [0, 1], same shape as ``hu``.
    """
    if preset is not None:
        window = _lookup(WINDOWS, preset, "window preset")
        center = window.center if center is None else center
        width = window.width if width is None else width
    if center is None or width is None:
        raise ConfigError(f"window: give a preset ({', '.join(WINDOWS)}) or both center and width")
    if not width > 0:
        raise ConfigError(f"window width must be positive, got {width}")
    return scale_clip(hu, center - width / 2.0, center + width / 2.0)


def tissue_mask(hu: np.ndarray, tissue: str, tolerance: float = 50.0) -> np.ndarray:
    """Voxels whose HU lie in a tissue's range of :data:`TISSUE_HU`, widened by ``tolerance`` each side.

    ``mask = (low − tolerance <= hu) & (hu <= high + tolerance)``. The default 50 HU absorbs CT noise
    (a few tens of HU) around the nominal values; soft-tissue ranges overlap, so such masks are only
    a first cut. Lung parenchyma (mostly −950…−850 HU) needs ``tissue="air", tolerance=150``; contrast-filled
    vessels reach the ``bone`` range too.

    Parameters
    ----------
    hu : np.ndarray
        Hounsfield units, any shape.
    tissue : str
        A name in :data:`TISSUE_HU`.
    tolerance : float
        Non-negative widening in HU.

    Returns
    -------
    np.ndarray
        bool, same shape as ``hu``.
    """
    low, high = _lookup(TISSUE_HU, tissue, "tissue")
    if tolerance < 0:
        raise ConfigError(f"tissue_mask tolerance must be >= 0, got {tolerance}")
    hu = np.asarray(hu)
    return (hu >= low - tolerance) & (hu <= high + tolerance)


def threshold_scale(
    hu: np.ndarray, lower: float = -2000.0, upper: float = 500.0, binarize: float | None = None
) -> np.ndarray:
    """The threshold rule: 0 below ``lower``, 1 above ``upper``, linear in between.

    ``y = clip((hu − lower) / (upper − lower), 0, 1)``. With ``binarize=t`` (an HU threshold) the result
    is instead the hard binarisation ``y = 1 if hu >= t else 0`` and ``lower``/``upper`` are unused.

    Returns
    -------
    np.ndarray
        float32, same shape as ``hu``.
    """
    if binarize is not None:
        return (np.asarray(hu) >= binarize).astype(np.float32)
    return scale_clip(hu, lower, upper)


def _select(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The values of ``x`` inside ``mask`` (all of ``x`` without one), as float64."""
    x = np.asarray(x)
    if mask is None:
        values = x.ravel()
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != x.shape:
            raise GeometryError(f"mask shape {mask.shape} does not match array shape {x.shape}")
        values = x[mask]
    if values.size == 0:
        raise GeometryError("normalisation: the mask selects no voxels (or the array is empty)")
    return values.astype(np.float64)


def zscore(x: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-8) -> np.ndarray:
    """Z-score ``(x − mean) / max(std, eps)`` with mean and std over ``mask`` (whole array without one).

    Every voxel is transformed, inside the mask or not. Returns float32 of ``x``'s shape.
    """
    values = _select(x, mask)
    mean, std = values.mean(), values.std()
    return ((_float(x) - mean) / max(std, eps)).astype(np.float32)


def percentile_normalize(
    x: np.ndarray, lower: float = 0.5, upper: float = 99.5, mask: np.ndarray | None = None
) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles (of the voxels in ``mask``) and scale to [0, 1].

    A constant image (equal percentiles) maps to zeros. Returns float32 of ``x``'s shape.
    """
    if not 0 <= lower < upper <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
    lo, hi = np.percentile(_select(x, mask), [lower, upper])
    if hi <= lo:
        return np.zeros(np.shape(x), dtype=np.float32)
    return scale_clip(x, lo, hi)


def clip_zscore(
    x: np.ndarray, lower: float = 0.5, upper: float = 99.5, mask: np.ndarray | None = None, eps: float = 1e-8
) -> np.ndarray:
    """nnU-Net's CT normalisation: clip to foreground percentiles, then z-score with foreground statistics.

    ``lo, hi`` = the ``lower``/``upper`` percentiles of the voxels in ``mask`` (the foreground), ``mean``
    and ``std`` of those voxels; ``y = (clip(x, lo, hi) − mean) / max(std, eps)`` [3]. nnU-Net takes the
    four numbers over the whole training set's foreground; here they come from this array.
    Returns float32 of ``x``'s shape.
    """
    if not 0 <= lower < upper <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
    values = _select(x, mask)
    lo, hi = np.percentile(values, [lower, upper])
    mean, std = values.mean(), values.std()
    clipped = np.clip(_float(x), lo, hi)
    return ((clipped - mean) / max(std, eps)).astype(np.float32)
