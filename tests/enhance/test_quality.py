"""PSNR/SSIM against scikit-image on real images, shape errors, and the classical baselines."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from realdata import need
from medlens.data.readers.medmnist import load_medmnist
from medlens.enhance import baselines
from medlens.enhance.noise import make_noise
from medlens.enhance.quality import batch_quality, psnr, ssim
from medlens.errors import ConfigError, GeometryError


@pytest.fixture(scope="module")
def pair(data_root):
    images, _ = load_medmnist(need(data_root, "medmnist/pneumoniamnist.npz"), "test")
    clean = images[:24, 0].astype(np.float64) / 255.0
    noisy = make_noise("gaussian", sigma=0.1)(clean, np.random.default_rng(0)).astype(np.float64)
    return clean, noisy


def test_psnr_and_ssim_match_skimage(pair):
    clean, noisy = pair
    for c, n in zip(clean[:5], noisy[:5]):
        assert psnr(c, n, 1.0) == pytest.approx(peak_signal_noise_ratio(c, n, data_range=1.0), abs=1e-9)
        assert ssim(c, n, 1.0) == pytest.approx(structural_similarity(c, n, data_range=1.0), abs=1e-9)
        mse = np.mean((c - n) ** 2)
        assert psnr(c, n, 1.0) == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
    # unclipped σ = 0.1 white noise on a range of 1: PSNR = −20 log10(0.1) = 20 dB up to sampling
    assert batch_quality(clean, noisy, 1.0)["psnr"] == pytest.approx(20.0, abs=0.2)


def test_quality_refuses_mismatched_shapes_and_ranges(pair):
    clean, noisy = pair
    with pytest.raises(GeometryError, match=r"\(28, 28\).*\(27, 28\)"):
        psnr(clean[0], noisy[0, :27], 1.0)
    with pytest.raises(GeometryError):
        batch_quality(clean, noisy[:-1], 1.0)
    with pytest.raises(ConfigError):
        ssim(clean[0], noisy[0], 0.0)


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_each_baseline_improves_real_noisy_images(pair, name):
    clean, noisy = pair
    params = baselines.tune(name, clean[:8], noisy[:8])
    assert set(params) == set(baselines.GRIDS[name])
    out = baselines.apply(name, noisy[8:], **params)
    assert out.shape == noisy[8:].shape
    assert batch_quality(clean[8:], out, 1.0)["psnr"] > batch_quality(clean[8:], noisy[8:], 1.0)["psnr"] + 1.0


def test_unknown_baseline_raises(pair):
    with pytest.raises(ConfigError, match="wiener"):
        baselines.apply("wiener", pair[1])
