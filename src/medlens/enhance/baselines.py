"""Classical denoisers to compare an autoencoder with, and a fair way to set their parameters.

All work on one 2D image scaled to [0, 1] (divide by the data range first) and return the same shape:

``gaussian``   Gaussian low-pass, :func:`scipy.ndimage.gaussian_filter` (``sigma`` pixels).
``median``     median filter, :func:`scipy.ndimage.median_filter` (``size`` pixels).
``bilateral``  :func:`skimage.restoration.denoise_bilateral` (Tomasi & Manduchi, ICCV 1998): weights
               ``exp(−|Δx|²/2σs²) · exp(−|ΔI|²/2σc²)``.
``tv``         total-variation denoising, :func:`skimage.restoration.denoise_tv_chambolle`
               (Chambolle, J. Math. Imaging Vis. 20:89–97, 2004), ``weight`` λ.
``nlm``        non-local means, :func:`skimage.restoration.denoise_nl_means` (Buades, Coll & Morel,
               CVPR 2005) with ``sigma`` from :func:`skimage.restoration.estimate_sigma` (Donoho's wavelet
               MAD) and filtering strength ``h = h_factor · σ̂``, patch 5×5, search window 13×13.

Each has a small parameter grid; :func:`tune` picks, per method, the grid point with the best mean PSNR
on a tuning set of (clean, noisy) images that is disjoint from the evaluation images — the same
held-out rule the autoencoder's training follows, so neither side is tuned on the test images.
"""

from __future__ import annotations

from itertools import product
from typing import Any, Callable

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_bilateral, denoise_nl_means, denoise_tv_chambolle, estimate_sigma

from medlens.enhance.quality import psnr
from medlens.errors import ConfigError


def gaussian(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian smoothing with standard deviation ``sigma`` pixels."""
    return ndimage.gaussian_filter(image, sigma, mode="reflect")


def median(image: np.ndarray, size: int = 3) -> np.ndarray:
    """Median over a ``size × size`` window."""
    return ndimage.median_filter(image, size=size, mode="reflect")


def bilateral(image: np.ndarray, sigma_color: float = 0.1, sigma_spatial: float = 1.0) -> np.ndarray:
    """Bilateral filter; ``sigma_color`` in the [0, 1] intensity units, ``sigma_spatial`` in pixels."""
    return denoise_bilateral(image.astype(np.float64), sigma_color=sigma_color, sigma_spatial=sigma_spatial,
                             mode="reflect")


def tv(image: np.ndarray, weight: float = 0.1) -> np.ndarray:
    """Chambolle total-variation denoising with weight λ = ``weight``."""
    return denoise_tv_chambolle(image, weight=weight)


def nlm(image: np.ndarray, h_factor: float = 0.8, patch_size: int = 5, patch_distance: int = 6) -> np.ndarray:
    """Non-local means with ``σ̂ = estimate_sigma(image)`` and ``h = h_factor · σ̂`` (fast mode)."""
    sigma = float(estimate_sigma(image))
    return denoise_nl_means(image, h=h_factor * sigma, sigma=sigma, patch_size=patch_size,
                            patch_distance=patch_distance, fast_mode=True)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "gaussian": gaussian, "median": median, "bilateral": bilateral, "tv": tv, "nlm": nlm,
}
GRIDS: dict[str, dict[str, list[Any]]] = {
    "gaussian": {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]},
    "median": {"size": [3, 5]},
    "bilateral": {"sigma_color": [0.05, 0.1, 0.2, 0.3, 0.5], "sigma_spatial": [1.0, 2.0]},
    "tv": {"weight": [0.02, 0.05, 0.1, 0.2, 0.4]},
    "nlm": {"h_factor": [0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0, 3.0], "patch_size": [3, 5]},
}
DESCRIPTIONS = {
    "gaussian": "Gaussian low-pass (scipy.ndimage)",
    "median": "median filter (scipy.ndimage)",
    "bilateral": "bilateral filter (skimage)",
    "tv": "total variation, Chambolle (skimage)",
    "nlm": "non-local means, h = k·estimate_sigma (skimage)",
}


def apply(name: str, images: np.ndarray, **params: Any) -> np.ndarray:
    """Run baseline ``name`` on each image of a ``(N, H, W)`` stack in [0, 1]."""
    if name not in BASELINES:
        raise ConfigError(f"baseline: unknown {name!r}; use one of {', '.join(BASELINES)}")
    return np.stack([BASELINES[name](np.asarray(im, dtype=np.float64), **params) for im in images])


def tune(name: str, clean: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """The grid point of :data:`GRIDS` ``[name]`` with the best mean PSNR (data range 1) on ``(N, H, W)``
    tuning images in [0, 1]."""
    grid = GRIDS[name]
    best, best_score = {}, -np.inf
    for values in product(*grid.values()):
        params = dict(zip(grid, values))
        out = apply(name, noisy, **params)
        score = float(np.mean([psnr(c, o, 1.0) for c, o in zip(clean, out)]))
        if score > best_score:
            best, best_score = params, score
    return best
