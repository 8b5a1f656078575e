"""Preprocessing: intensity windows and normalisation, resampling and cropping, Gabor texture filters.

All transforms are plain functions of numpy arrays returning float32 (the scikit-image way); the one
class, :class:`GaborBank`, holds its kernels so they are built once. The Gabor names are imported on
first use, so that ``import medlens.preprocess.intensity`` does not pull in torch.
"""

from medlens.preprocess.geometry import center_of_mass_voxel, crop_or_pad, resample
from medlens.preprocess.intensity import (
    TISSUE_HU,
    WINDOWS,
    Window,
    apply_window,
    clip_zscore,
    percentile_normalize,
    scale_clip,
    threshold_scale,
    tissue_mask,
    zscore,
)

_GABOR = ("GaborBank", "gabor_kernel", "sigma_from_bandwidth")


def __getattr__(name: str):
    if name in _GABOR:
        from medlens.preprocess import gabor

        return getattr(gabor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TISSUE_HU",
    "WINDOWS",
    "GaborBank",
    "Window",
    "apply_window",
    "center_of_mass_voxel",
    "clip_zscore",
    "crop_or_pad",
    "gabor_kernel",
    "percentile_normalize",
    "resample",
    "scale_clip",
    "sigma_from_bandwidth",
    "threshold_scale",
    "tissue_mask",
    "zscore",
]
