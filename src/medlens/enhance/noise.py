"""Seeded noise models matched to imaging modalities: Gaussian, low-dose CT photon noise, ultrasound speckle.

Each model is a small frozen dataclass with ``__call__(image, rng) -> noisy``; :func:`make_noise` builds one
from a name and parameters, and :data:`MODALITY_NOISE` says which model fits which DICOM modality.
All randomness comes from a :class:`numpy.random.Generator` (:func:`numpy.random.default_rng` ``(seed)``).

Models
------
``gaussian``  additive white noise, ``y = x + n``, ``n ~ N(0, σ²)`` (detector/electronic noise, MR magnitude at
              high SNR, a generic reference).
``poisson_ct`` low-dose CT photon noise simulated in the attenuation domain from HU, pixel by pixel
              (see :class:`PoissonCTNoise` for the formula and what the approximation leaves out).
``speckle``   multiplicative speckle of fully developed ultrasound, ``y = x · n``, ``n ~ Gamma(L, 1/L)``
              (mean 1, variance 1/L for L looks) [1]_.

References
----------
.. [1] Goodman J.W., "Some fundamental properties of speckle", J. Opt. Soc. Am. 66(11):1145–1150 (1976).
.. [2] Hubbell J.H., Seltzer S.M., "Tables of X-ray mass attenuation coefficients", NIST Standard
       Reference Database 126 (water, μ/ρ = 0.1929 cm²/g at 70 keV).
.. [3] Zeng D. et al., "A simple low-dose x-ray CT simulation from high-dose scan", IEEE Trans. Nucl.
       Sci. 62(5):2226–2233 (2015) — the sinogram-domain method this per-pixel model simplifies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from medlens.errors import ConfigError

MU_WATER_PER_CM = 0.193  # linear attenuation of water at ~70 keV effective energy [2]


class NoiseModel(Protocol):
    """A seeded corruption ``noisy = model(clean, rng)``; ``params()`` gives what rebuilds it."""

    name: str

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise ``y = x + n``, ``n ~ N(0, σ²)``, σ in the image's own units."""

    sigma: float = 0.1
    name: str = "gaussian"

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise ConfigError(f"noise.sigma: must be non-negative, got {self.sigma}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return (image + rng.normal(0.0, self.sigma, image.shape)).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PoissonCTNoise:
    """Low-dose CT photon (quantum) noise, simulated per pixel in the attenuation domain from HU.

    For each pixel with value HU (clipped below at −1024, air):

    1. linear attenuation  ``μ = μ_water · (1 + HU/1000)``  (the definition of the Hounsfield scale),
       with ``μ_water = 0.193 cm⁻¹`` (water at ~70 keV, NIST XCOM);
    2. line integral       ``p = μ · L``  along a path of ``L = path_cm`` through material of that μ;
    3. detected counts     ``N ~ Poisson(N0 · dose · exp(−p))``, ``N0`` incident photons at full dose and
       ``dose`` the dose factor (0.25 = a quarter-dose scan); ``N`` is floored at 1 (photon starvation);
    4. back to HU          ``p̂ = −ln(N / (N0 · dose))``, ``μ̂ = p̂ / L``, ``HU = 1000 (μ̂/μ_water − 1)``.

    By the delta method ``Var(HU) ≈ (1000 / (μ_water L))² / (N0 · dose · exp(−p))``
    (:meth:`hu_variance`): the variance scales as 1/dose and grows with attenuation.

    Honest limits: real CT noise comes from the counts of every ray through the patient and is
    spread by filtered back-projection, so it is spatially correlated (streaks, a noise power spectrum
    with little low-frequency power) and roughly uniform across tissues of one slice. This per-pixel
    model gives white noise whose level depends on each pixel's own HU, with the dose dependence
    and the Poisson statistics right; for correlated noise use a sinogram-domain simulation [3]_.

    Parameters
    ----------
    dose : float
        Dose factor in (0, 1]: fraction of the full-dose photon count.
    n0 : float
        Incident photons per ray at full dose.
    path_cm : float
        Path length L in cm.
    """

    dose: float = 0.25
    n0: float = 1.0e4
    path_cm: float = 4.0
    name: str = "poisson_ct"

    def __post_init__(self) -> None:
        if not 0 < self.dose <= 1:
            raise ConfigError(f"noise.dose: dose factor must be in (0, 1], got {self.dose}")
        if not (self.n0 > 0 and self.path_cm > 0):
            raise ConfigError(f"noise: n0 and path_cm must be positive, got {self.n0}, {self.path_cm}")

    def line_integral(self, hu: np.ndarray) -> np.ndarray:
        """``p = μ_water (1 + HU/1000) · L`` with HU clipped below at −1024."""
        mu = MU_WATER_PER_CM * (1.0 + np.maximum(np.asarray(hu, dtype=np.float64), -1024.0) / 1000.0)
        return np.maximum(mu, 0.0) * self.path_cm

    def hu_variance(self, hu: np.ndarray) -> np.ndarray:
        """Delta-method variance of the noisy HU: ``(1000/(μ_water L))² / (N0 · dose · exp(−p))``."""
        expected = self.n0 * self.dose * np.exp(-self.line_integral(hu))
        return (1000.0 / (MU_WATER_PER_CM * self.path_cm)) ** 2 / expected

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hu = np.asarray(image, dtype=np.float64)
        blank = self.n0 * self.dose
        counts = np.maximum(rng.poisson(blank * np.exp(-self.line_integral(hu))), 1)
        mu = -np.log(counts / blank) / self.path_cm
        noisy = 1000.0 * (mu / MU_WATER_PER_CM - 1.0)
        # Pixels below air (e.g. −2048 outside the scan field) carry no signal: keep them as they were.
        return np.where(hu < -1024.0, hu, noisy).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeckleNoise:
    """Multiplicative ultrasound speckle ``y = x · n``, ``n ~ Gamma(shape=L, scale=1/L)``.

    ``E[n] = 1`` and ``Var[n] = 1/L``: the intensity of fully developed speckle averaged over ``L``
    independent looks [1]_. The image must be non-negative (an intensity).
    """

    looks: float = 4.0
    name: str = "speckle"

    def __post_init__(self) -> None:
        if not self.looks > 0:
            raise ConfigError(f"noise.looks: must be positive, got {self.looks}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return (image * rng.gamma(self.looks, 1.0 / self.looks, image.shape)).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return asdict(self)


NOISE_MODELS = {"gaussian": GaussianNoise, "poisson_ct": PoissonCTNoise, "speckle": SpeckleNoise}
# DICOM modality code -> the noise model that fits it; anything else gets Gaussian.
MODALITY_NOISE = {"CT": "poisson_ct", "US": "speckle"}


def make_noise(name: str, **params: Any) -> NoiseModel:
    """The noise model ``name`` (``gaussian``, ``poisson_ct``, ``speckle``) with ``params``."""
    if name not in NOISE_MODELS:
        raise ConfigError(f"noise: unknown model {name!r}; use one of {', '.join(NOISE_MODELS)}")
    params = {k: v for k, v in params.items() if k != "name"}
    try:
        return NOISE_MODELS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"noise.{name}: {exc}") from exc


def noise_for_modality(modality: str, **params: Any) -> NoiseModel:
    """The noise model that fits a DICOM modality code (``CT``, ``US``, ``DX``/``CR``/``MR``/... Gaussian)."""
    return make_noise(MODALITY_NOISE.get(modality.upper(), "gaussian"), **params)
