"""Noise models on real images: Gaussian σ, CT Poisson variance against dose, speckle mean 1, seeding."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from realdata import need
from medlens.data.readers.medmnist import load_medmnist
from medlens.enhance.noise import PoissonCTNoise, make_noise, noise_for_modality
from medlens.errors import ConfigError


@pytest.fixture(scope="module")
def xray(data_root):
    images, _ = load_medmnist(need(data_root, "medmnist/pneumoniamnist.npz"), "test")
    return images[:64, 0].astype(np.float32)


@pytest.fixture(scope="module")
def ct_slice(lidc_series_dir):
    ds = pydicom.dcmread(sorted(lidc_series_dir.glob("*.dcm"))[0])
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.maximum(hu, -1024.0)  # outside the scan field (−2048) is air


def test_gaussian_sigma_on_real_xrays(xray):
    noisy = make_noise("gaussian", sigma=20.0)(xray, np.random.default_rng(0))
    residual = noisy - xray
    assert abs(residual.mean()) < 0.2
    assert residual.std() == pytest.approx(20.0, rel=0.01)


def test_poisson_ct_variance_follows_dose_on_a_real_slice(ct_slice):
    tissue = (ct_slice > -200) & (ct_slice < 200)  # soft tissue, where the delta method is accurate
    variances = {}
    for dose in (1.0, 0.25):
        model = PoissonCTNoise(dose=dose)
        noisy = model(ct_slice, np.random.default_rng(1))
        residual = (noisy - ct_slice)[tissue]
        predicted = model.hu_variance(ct_slice)[tissue]
        # standardised residuals have unit variance when the delta-method formula holds
        assert np.var(residual / np.sqrt(predicted)) == pytest.approx(1.0, rel=0.05)
        assert abs(residual.mean()) < 0.1 * residual.std()
        variances[dose] = residual.var()
    assert variances[0.25] / variances[1.0] == pytest.approx(4.0, rel=0.1)


def test_poisson_ct_keeps_pixels_outside_the_scan_field(lidc_series_dir):
    ds = pydicom.dcmread(sorted(lidc_series_dir.glob("*.dcm"))[0])
    hu = ds.pixel_array.astype(np.float32) + float(ds.RescaleIntercept)
    outside = hu < -1024
    assert outside.any()
    noisy = PoissonCTNoise()(hu, np.random.default_rng(0))
    assert np.array_equal(noisy[outside], hu[outside])


def test_speckle_is_multiplicative_with_mean_one(data_root):
    images, _ = load_medmnist(need(data_root, "medmnist/breastmnist.npz"), "test")
    clean = images[:64, 0].astype(np.float32)
    noisy = make_noise("speckle", looks=4.0)(clean, np.random.default_rng(2))
    bright = clean > 20
    ratio = noisy[bright] / clean[bright]
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert ratio.var() == pytest.approx(1 / 4.0, rel=0.05)
    assert np.all(noisy[clean == 0] == 0)


def test_noise_is_seeded(xray):
    model = noise_for_modality("US", looks=2.0)
    assert model.name == "speckle"
    a = model(xray, np.random.default_rng(7))
    assert np.array_equal(a, model(xray, np.random.default_rng(7)))
    assert not np.array_equal(a, model(xray, np.random.default_rng(8)))
    assert noise_for_modality("CT").name == "poisson_ct"
    assert noise_for_modality("DX").name == "gaussian"


@pytest.mark.parametrize("name, params", [("gaussian", {"sigma": -1}), ("poisson_ct", {"dose": 0}),
                                          ("poisson_ct", {"dose": 2}), ("speckle", {"looks": 0}),
                                          ("salt", {}), ("gaussian", {"colour": 1})])
def test_bad_noise_parameters_raise(name, params):
    with pytest.raises(ConfigError):
        make_noise(name, **params)
