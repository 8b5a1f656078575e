"""Image quality against a clean reference: PSNR and SSIM (scikit-image, explicit data range).

``PSNR = 10 log10(R² / MSE)`` with ``R`` the data range and ``MSE = mean((x − y)²)``;
SSIM is Wang et al.'s structural similarity [1]_ with scikit-image's defaults (7×7 uniform window).
Both need the data range stated: it is never guessed from the images.

References
----------
.. [1] Wang Z., Bovik A.C., Sheikh H.R., Simoncelli E.P., "Image quality assessment: from error visibility
       to structural similarity", IEEE Trans. Image Process. 13(4):600–612 (2004).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medlens.errors import ConfigError, GeometryError


def _pair(clean: np.ndarray, test: np.ndarray, data_range: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    clean = np.asarray(clean, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if clean.shape != test.shape:
        raise GeometryError(f"{where}: clean image has shape {clean.shape} but the test image has {test.shape}")
    if not data_range > 0:
        raise ConfigError(f"{where}: data_range must be positive, got {data_range}")
    return clean, test


def psnr(clean: np.ndarray, test: np.ndarray, data_range: float, where: str = "psnr") -> float:
    """PSNR in dB of ``test`` against ``clean`` (same shape), ``10 log10(R²/MSE)``."""
    clean, test = _pair(clean, test, data_range, where)
    return float(peak_signal_noise_ratio(clean, test, data_range=data_range))


def ssim(clean: np.ndarray, test: np.ndarray, data_range: float, where: str = "ssim") -> float:
    """Mean SSIM of one 2D image or 3D volume (no channel axis) against ``clean``."""
    clean, test = _pair(clean, test, data_range, where)
    win = min(7, *clean.shape)
    win -= 1 - win % 2  # odd window no larger than the smallest side
    return float(structural_similarity(clean, test, data_range=data_range, win_size=win))


def batch_quality(clean: np.ndarray, test: np.ndarray, data_range: float, where: str = "images") -> dict[str, float]:
    """Mean PSNR and SSIM over a stack ``(N, H, W)`` (or ``(N, 1, H, W)``) of image pairs.

    Returns ``{"psnr": mean dB, "ssim": mean, "psnr_std", "ssim_std"}`` (per-image means, so every image
    counts the same).
    """
    clean = np.asarray(clean)
    test = np.asarray(test)
    if clean.shape != test.shape:
        raise GeometryError(f"{where}: clean images have shape {clean.shape} but the test images have {test.shape}")
    p = np.array([psnr(c, t, data_range, where) for c, t in zip(clean, test)])
    s = np.array([ssim(np.squeeze(c), np.squeeze(t), data_range, where) for c, t in zip(clean, test)])
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_std": float(p.std()), "ssim_std": float(s.std())}
