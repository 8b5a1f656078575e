"""Denoising autoencoder on real chest X-rays: training lowers the loss and beats the noisy input;
save/load keeps the outputs; 3D models run on a real CT nodule volume; bad inputs raise."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medlens.data.readers.medmnist import load_medmnist
from medlens.deploy.bundle import BundleError, load_bundle
from medlens.enhance.autoencoder import Denoiser
from medlens.enhance.quality import batch_quality
from medlens.errors import ConfigError, GeometryError, ModelError

from realdata import need

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def xrays(data_root):
    path = need(data_root, "medmnist/pneumoniamnist.npz")
    train, _ = load_medmnist(path, "train")
    test, _ = load_medmnist(path, "test")
    return train[:384].astype(np.float32), test[:32].astype(np.float32)


@pytest.fixture(scope="module")
def trained(xrays):
    train, _ = xrays
    model = Denoiser(window=(0.0, 255.0), noise="gaussian", noise_params={"sigma": 51.0}, channels=(16, 16),
                     strides=(1, 2), epochs=4, batch_size=32, lr=3e-3, seed=0)
    model.fit(train)
    return model


def test_short_training_lowers_loss_and_raises_psnr(trained, xrays):
    _, test = xrays
    history = trained.history
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    noisy = trained.noise(test, np.random.default_rng(123))
    before = batch_quality(test[:, 0], noisy[:, 0], 255.0)["psnr"]
    after = batch_quality(test[:, 0], trained.denoise(noisy)[:, 0], 255.0)["psnr"]
    assert after > before + 2.0


def test_save_load_round_trip(trained, xrays, tmp_path):
    _, test = xrays
    folder = trained.save(tmp_path / "model")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["modality"] == "OT" and manifest["in_channels"] == 1
    assert manifest["noise"] == {"name": "gaussian", "sigma": 51.0}
    loaded = Denoiser.load(folder)
    assert loaded.residual_scale == trained.residual_scale
    assert np.array_equal(loaded.denoise(test), trained.denoise(test))
    assert load_bundle(folder).residual_scale == trained.residual_scale  # the one loader of every bundle kind
    with pytest.raises(BundleError, match="a denoiser bundle, where a classifier bundle is needed"):
        load_bundle(folder, kind="classifier")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json: sha256 differs"):
        Denoiser.load(folder)


def test_residual_scale_is_the_noise_rms(trained):
    # Gaussian σ = 51 on the 0–255 window is 0.2 in window units (64 draws of 28² pixels)
    assert abs(trained.residual_scale - 0.2) < 0.005
    assert trained.network.residual_scale == trained.residual_scale
    with pytest.raises(ConfigError, match="residual_scale"):
        Denoiser(residual_scale=0)


def test_any_image_size_is_padded_and_cropped_back(trained, xrays):
    _, test = xrays
    odd = test[:2, :, :27, :25]
    assert trained.denoise(odd).shape == odd.shape


def test_3d_autoencoder_on_a_real_nodule_volume(data_root):
    vois = sorted(need(data_root, "lidc_idri_nodule_vois/image").glob("*.nii.gz"))[:4]
    volumes = []
    for path in vois:  # (x, y, z) → (z, y, x), centre 8×32×32 (edge-padded when smaller)
        v = np.asarray(nib.load(path).dataobj, dtype=np.float32).T
        v = np.pad(v, [(0, max(0, t - s)) for s, t in zip(v.shape, (8, 32, 32))], mode="edge")
        volumes.append(v[:8, :32, :32])
    volumes = np.stack(volumes)[:, None]
    model = Denoiser(spatial_dims=3, modality="CT", window=(-1024.0, 3071.0), noise="gaussian",
                     noise_params={"sigma": 400.0}, channels=(8, 8), strides=(1, 2), epochs=8, batch_size=2,
                     lr=3e-3, patience=None, seed=0)
    history = model.fit(volumes)
    assert history.train_loss[-1] < history.train_loss[0]
    assert model.denoise(volumes).shape == volumes.shape
    assert model.encode(volumes).shape == (4, 16)


def test_bad_inputs_raise(trained, xrays):
    _, test = xrays
    with pytest.raises(ModelError, match="1 channel"):
        trained.denoise(np.repeat(test[:2], 3, axis=1))
    with pytest.raises(GeometryError, match="2D model"):
        trained.denoise(test[:2, 0])
    with pytest.raises(ModelError, match="not been trained"):
        Denoiser().denoise(test)
    with pytest.raises(ConfigError):
        Denoiser(loss="l1")
    with pytest.raises(ConfigError):
        Denoiser(window=(1.0, 1.0))
    with pytest.raises(ModelError, match="CT.*US"):
        Denoiser(modality="CT").check_input("US", 1, "x.dcm")


def test_mse_plus_ssim_loss_trains(xrays):
    train, _ = xrays
    model = Denoiser(noise_params={"sigma": 51.0}, loss="mse+ssim", ssim_weight=0.5, channels=(8, 8),
                     strides=(1, 2), epochs=3, batch_size=32, lr=3e-3, patience=None, seed=1)
    history = model.fit(train[:128])
    assert model.manifest()["loss"] == {"name": "mse+ssim", "ssim_weight": 0.5}
    assert np.isfinite(history.train_loss).all() and history.train_loss[-1] < history.train_loss[0]
