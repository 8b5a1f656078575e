"""What a classifier's training inputs looked like, and whether a new input looks like them.

A model answers for any array of the right shape, so a chest X-ray given to a breast-ultrasound bundle gets a
label without a word. A bundle therefore records the profile of its training images and ``medlens predict``
flags inputs far outside it (``out_of_distribution`` column; refused with ``--strict``).

Each model-ready image (channel 0) is described by ``d = (mean, std, p05, p50, p95, mean |∇|)``: its intensity
distribution and its texture (mean gradient magnitude, ``np.gradient``). The profile stores the training
descriptors' mean ``μ`` and covariance ``Σ`` (shrunk towards its diagonal, ``Σ' = (1 − λ)Σ + λ diag(Σ)``,
λ = 0.1, so that it stays invertible) and the Mahalanobis distances

    D²(d) = (d − μ)ᵀ Σ'⁻¹ (d − μ)

of the training images themselves. An input is flagged when ``D²`` exceeds the largest of the training
distances' 99.9th percentile times ``margin`` (2) and the χ²₆ 99.9 % quantile (22.46; Mahalanobis 1936), i.e.
when it lies further out than virtually every training image.

Also flagged: an input whose channel count differs from the training images' (converted to fit), and an input
whose declared modality (DICOM ``Modality``) differs from the one the bundle was trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

SHRINKAGE = 0.1
QUANTILE = 0.999
MARGIN = 2.0
DESCRIPTORS = ("mean", "std", "p05", "p50", "p95", "gradient")


def descriptors(images: np.ndarray) -> np.ndarray:
    """``(N, 6)`` descriptors (see the module docstring) of model-ready images ``(N, C, ...)``, channel 0."""
    x = np.asarray(images, dtype=np.float64)[:, 0].reshape(len(images), *np.shape(images)[2:])
    flat = x.reshape(len(x), -1)
    p05, p50, p95 = np.percentile(flat, [5, 50, 95], axis=1)
    gradients = np.gradient(x, axis=tuple(range(1, x.ndim)))
    magnitude = np.sqrt(sum(g ** 2 for g in gradients)).reshape(len(x), -1).mean(axis=1)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), p05, p50, p95, magnitude])


def _inverse(covariance: np.ndarray) -> np.ndarray:
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.diag(np.diag(covariance))
    shrunk += np.eye(len(shrunk)) * 1e-12 * max(float(np.trace(shrunk)), 1e-12)
    return np.linalg.pinv(shrunk)


def _distances(d: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    centred = d - mean
    return np.einsum("ij,jk,ik->i", centred, inverse, centred)


def fit_profile(images: np.ndarray, modality: str | None = None) -> dict[str, Any]:
    """The profile of training images ``(N, C, ...)`` (model-ready), as JSON-ready values."""
    d = descriptors(images)
    mean = d.mean(axis=0)
    covariance = np.cov(d, rowvar=False) if len(d) > 1 else np.eye(d.shape[1])
    inverse = _inverse(np.atleast_2d(covariance))
    training = _distances(d, mean, inverse)
    limit = max(float(np.quantile(training, QUANTILE)) * MARGIN, float(stats.chi2.ppf(QUANTILE, d.shape[1])))
    return {"descriptors": list(DESCRIPTORS), "mean": mean.tolist(), "covariance": np.atleast_2d(covariance).tolist(),
            "limit": limit, "n_images": int(len(d)), "channels": int(np.shape(images)[1]),
            "shape": list(np.shape(images)[1:]), "modality": modality,
            "rule": f"Mahalanobis D² of (mean, std, p05, p50, p95, mean |gradient|) above {limit:.1f}"}


def check_inputs(profile: dict[str, Any] | None, images: np.ndarray, channels: int | None = None,
                 modality: str | None = None) -> list[str | None]:
    """Per image, why it lies outside ``profile`` (a text), or None when it looks like the training images.

    Parameters
    ----------
    profile : dict or None
        From :func:`fit_profile`; None (an older bundle) flags nothing.
    images : ndarray
        Model-ready images ``(N, C, ...)``.
    channels : int, optional
        The channel count of the input before it was converted to the bundle's.
    modality : str, optional
        The input's declared modality.
    """
    if profile is None or len(images) == 0:
        return [None] * len(images)
    reasons: list[list[str]] = [[] for _ in range(len(images))]
    if channels is not None and channels != profile["channels"]:
        for r in reasons:
            r.append(f"has {channels} channels, the training images {profile['channels']} (converted)")
    trained = profile.get("modality")
    if modality and trained and str(modality).upper() != str(trained).upper():
        for r in reasons:
            r.append(f"modality {modality}, the bundle was trained on {trained}")
    distance = _distances(descriptors(images), np.asarray(profile["mean"]),
                          _inverse(np.asarray(profile["covariance"])))
    for r, value in zip(reasons, distance):
        if not np.isfinite(value) or value > profile["limit"]:
            r.append(f"image statistics unlike the training images (Mahalanobis D² {value:.0f} > {profile['limit']:.0f})")
    return ["; ".join(r) if r else None for r in reasons]
