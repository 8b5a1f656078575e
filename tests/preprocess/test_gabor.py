"""Gabor kernels and bank against scikit-image, on real BreastMNIST ultrasound and LIDC CT images."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from skimage.filters import gabor as sk_gabor
from skimage.filters import gabor_kernel as sk_gabor_kernel

from realdata import need
from medlens.errors import ConfigError, GeometryError
from medlens.preprocess.gabor import GaborBank, gabor_kernel, sigma_from_bandwidth
from medlens.preprocess.geometry import center_of_mass_voxel
from medlens.preprocess.intensity import apply_window

torch.set_num_threads(2)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def breast(data_root) -> np.ndarray:
    return np.load(need(data_root, "medmnist/breastmnist.npz"))["train_images"][:8].astype(np.float64)


@pytest.fixture(scope="module")
def ct_crop(lidc_series_dir) -> np.ndarray:
    """A 96×128 lung-window crop of slice z = −115 mm around the right lung and the nodule."""
    ds = pydicom.dcmread(lidc_series_dir / "-115.000000.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return apply_window(hu, "lung")[280:376, 250:378].astype(np.float64)


@pytest.fixture(scope="module")
def voi(data_root):
    image = nib.load(need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"))
    mask = nib.load(need(data_root, "lidc_idri_nodule_vois/nodule_mask/LIDC-IDRI-0001_R_1.nii.gz"))
    return image.get_fdata().T.astype(np.float32), np.asarray(mask.dataobj).T != 0  # (z, y, x)


# ---------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("wavelength", [2.0, 3.5, 8.0, 15.0])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_kernel_matches_skimage(wavelength, gamma):
    sigma = sigma_from_bandwidth(wavelength)
    for theta in (0.0, 0.4, math.pi / 4, math.pi / 2, 2.5):
        for psi in (0.0, 1.0, math.pi / 2):
            ours = gabor_kernel(wavelength, theta, psi, gamma=gamma)
            ref = sk_gabor_kernel(1 / wavelength, theta, sigma_x=sigma, sigma_y=sigma / gamma, offset=psi)
            assert ours.shape == ref.shape
            assert rel_err(ours, ref) < 1e-5


def test_kernel_bandwidth_sigma_and_explicit_sigma_match_skimage():
    # sigma from the bandwidth formula equals skimage's own choice (it uses the same formula)
    np.testing.assert_allclose(sigma_from_bandwidth(1.0, 1.0), 3 / math.pi * math.sqrt(math.log(2) / 2))
    for bandwidth in (0.5, 1.0, 1.8):
        ref = sk_gabor_kernel(1 / 6.0, 0.3, bandwidth=bandwidth)
        assert rel_err(gabor_kernel(6.0, 0.3, gamma=1.0, bandwidth=bandwidth), ref) < 1e-5
    ref = sk_gabor_kernel(1 / 5.0, 1.1, sigma_x=2.0, sigma_y=5.0, offset=0.7, n_stds=2)
    assert rel_err(gabor_kernel(5.0, 1.1, 0.7, sigma=2.0, gamma=0.4, n_stds=2), ref) < 1e-5


def test_kernel_formula_without_normalisation():
    lam, theta, psi, gamma = 6.0, math.radians(30), 0.5, 0.5
    k = gabor_kernel(lam, theta, psi, sigma=3.0, gamma=gamma, size=(11, 13), normalize=None)
    assert k.shape == (11, 13)
    y, x = 2, -4  # a point off the axes: row 5 + y, column 6 + x
    xr = x * math.cos(theta) + y * math.sin(theta)
    yr = -x * math.sin(theta) + y * math.cos(theta)
    envelope = math.exp(-(xr**2 + gamma**2 * yr**2) / (2 * 3.0**2))
    np.testing.assert_allclose(k[5 + y, 6 + x].real, envelope * math.cos(2 * math.pi * xr / lam + psi))
    np.testing.assert_allclose(k[5 + y, 6 + x].imag, envelope * math.sin(2 * math.pi * xr / lam + psi))
    assert k[5, 6] == pytest.approx(complex(math.cos(psi), math.sin(psi)))
    skimage_norm = gabor_kernel(lam, theta, psi, sigma=3.0, gamma=gamma, size=(11, 13))
    np.testing.assert_allclose(skimage_norm, k * gamma / (2 * math.pi * 3.0**2))


def test_kernel_bad_parameters():
    for kwargs in (dict(wavelength=0), dict(gamma=0), dict(size=10), dict(normalize="l2"), dict(bandwidth=0)):
        with pytest.raises(ConfigError):
            gabor_kernel(**{"wavelength": 4.0, "theta": 0.0, **kwargs})


# ---------------------------------------------------------------------------------------------- responses
def skimage_pair(image, params):
    return sk_gabor(image, 1 / params["wavelength"], math.radians(params["theta_deg"]),
                    sigma_x=params["sigma"], sigma_y=params["sigma"] / params["gamma"],
                    offset=math.radians(params["psi_deg"]))


@pytest.mark.parametrize("method", ["conv", "fft"])
def test_responses_match_skimage_on_ultrasound(breast, method):
    bank = GaborBank([3.0, 8.0], [0, 60, 135], phases=(0, 90), gamma=0.5)
    real = bank.responses(breast[:3], "real", method=method)
    imag = bank.responses(breast[:3], "imag", method=method)
    assert real.shape == (3, bank.n_filters, 28, 28) and real.dtype == np.float32
    for i in range(3):
        for f, params in enumerate(bank.params):
            ref_real, ref_imag = skimage_pair(breast[i], params)
            assert rel_err(real[i, f], ref_real) < 1e-4, bank.names[f]
            assert rel_err(imag[i, f], ref_imag) < 1e-4, bank.names[f]


def test_responses_match_skimage_on_ct(ct_crop):
    bank = GaborBank([4.0, 12.0], [0, 45, 90], gamma=0.5)
    out = bank.responses(ct_crop[None], "complex")
    assert out.dtype == np.complex64
    for f, params in enumerate(bank.params):
        ref_real, ref_imag = skimage_pair(ct_crop, params)
        assert rel_err(out[0, f].real, ref_real) < 1e-4
        assert rel_err(out[0, f].imag, ref_imag) < 1e-4
        np.testing.assert_allclose(bank.responses(ct_crop[None])[0, f], np.abs(out[0, f]), rtol=1e-5, atol=1e-7)


def test_conv_and_fft_paths_agree(breast, ct_crop):
    bank = GaborBank([2.0, 5.0, 10.0], 6, gamma=0.7)
    for images in (breast, ct_crop[None], np.stack([ct_crop, ct_crop[::-1, ::-1]])):
        conv = bank.responses(images, "complex", method="conv")
        fft = bank.responses(images, "complex", method="fft")
        assert rel_err(fft, conv) < 1e-4


def test_auto_method_rule():
    bank = GaborBank([2.0, 16.0], 4, gamma=1.0)
    assert bank.methods_for(28, 28) == ["conv", "conv"]
    assert bank.methods_for(512, 512) == ["conv", "fft"]
    assert GaborBank([16.0], 4, method="fft").methods_for(28, 28) == ["fft"]


def test_batches_and_channel_axis_give_the_same_answer(breast):
    bank = GaborBank([4.0], 4)
    whole = bank.responses(breast)
    small = GaborBank([4.0], 4, batch_elements=1)  # one image per batch
    np.testing.assert_allclose(small.responses(breast[:, None]), whole, rtol=1e-6, atol=1e-6)
    with pytest.raises(GeometryError):
        bank.responses(breast[0])
    with pytest.raises(ConfigError):
        bank.responses(breast, "phase")


def test_names_and_orientations():
    bank = GaborBank([4, 8.5], 4)
    assert bank.names[:4] == ["gabor_l4_t0", "gabor_l4_t45", "gabor_l4_t90", "gabor_l4_t135"]
    assert bank.names[-1] == "gabor_l8.5_t135" and len(bank.kernels) == 8
    assert GaborBank([4], [30], phases=(0, 90)).names == ["gabor_l4_t30_p0", "gabor_l4_t30_p90"]
    assert bank.feature_names[:3] == ["gabor_l4_t0_mean", "gabor_l4_t0_std", "gabor_l4_t0_energy"]
    with pytest.raises(ConfigError):
        GaborBank([4, 8], 4, sigma=[1.0])


def test_orientation_selectivity_on_a_grating():
    y, x = np.mgrid[0:64, 0:64]
    vertical_stripes = np.cos(2 * np.pi * x / 8.0)[None]  # intensity varies along x
    bank = GaborBank([8.0], [0, 90], gamma=0.5)
    energy = bank.features(vertical_stripes)[0, 2::3]
    assert energy[0] > 50 * energy[1]  # θ = 0 (harmonic along x) responds, θ = 90° does not
    energy_t = bank.features(np.ascontiguousarray(vertical_stripes.transpose(0, 2, 1)))[0, 2::3]
    assert energy_t[1] > 50 * energy_t[0]


def test_rotating_a_real_image_swaps_0_and_90_degrees(ct_crop):
    square = np.ascontiguousarray(ct_crop[:, 16:112])  # 96 × 96
    bank = GaborBank([4.0, 8.0], [0, 90], gamma=0.5)
    mag = bank.responses(square[None])[0]
    rotated = bank.responses(np.rot90(square)[None].copy())[0]
    for lam in range(2):
        np.testing.assert_allclose(rotated[2 * lam + 1], np.rot90(mag[2 * lam]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rotated[2 * lam], np.rot90(mag[2 * lam + 1]), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- features
def test_features_are_pooled_magnitude_statistics(breast):
    bank = GaborBank([3.0, 6.0], 4)
    mag = bank.responses(breast).astype(np.float64)
    feats = bank.features(breast)
    assert feats.shape == (8, 3 * bank.n_filters) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:, 0::3], mag.mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(feats[:, 1::3], mag.std(axis=(2, 3)), rtol=1e-4)
    np.testing.assert_allclose(feats[:, 2::3], (mag**2).mean(axis=(2, 3)), rtol=1e-5)

    mask = breast > np.median(breast, axis=(1, 2), keepdims=True)
    masked = bank.features(breast, mask=mask)
    for i in range(len(breast)):
        inside = mag[i][:, mask[i]]
        np.testing.assert_allclose(masked[i, 0::3], inside.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(masked[i, 1::3], inside.std(axis=1), rtol=1e-4)
    shared = np.zeros((28, 28), dtype=bool)
    shared[7:21, 7:21] = True
    np.testing.assert_allclose(bank.features(breast, mask=shared)[:, 0::3],
                               mag[:, :, 7:21, 7:21].mean(axis=(2, 3)), rtol=1e-5)
    empty = mask.copy()
    empty[3] = False
    with pytest.raises(GeometryError, match=r"\[3\]"):
        bank.features(breast, mask=empty)


def test_responses_3d_filters_slice_by_slice(voi):
    image, _ = voi
    volumes = np.stack([image, image[:, ::-1]])  # (2, 11, 64, 53)
    bank = GaborBank([4.0], [0, 90])
    for axis in (0, 2):
        out = bank.responses_3d(volumes, axis=axis)
        assert out.shape == (2, 2) + image.shape
        k = image.shape[axis] // 2
        slab = np.take(volumes, k, axis=axis + 1)
        assert rel_err(np.take(out, k, axis=axis + 2), bank.responses(slab)) < 1e-6


def test_features_3d_pool_the_central_slices_through_the_nodule(voi):
    image, mask = voi
    bank = GaborBank([3.0, 6.0], 4)
    cz, cy, cx = center_of_mass_voxel(mask)
    slices = [(image[cz], mask[cz]), (image[:, cy], mask[:, cy]), (image[:, :, cx], mask[:, :, cx])]
    axial = bank.features_3d(image[None], mask[None], planes=("axial",))
    np.testing.assert_allclose(axial, bank.features(image[cz][None], mask[cz][None]), rtol=1e-5)
    pooled = bank.features_3d(image[None, None], mask[None, None])  # (N, 1, D, H, W) accepted
    values = [bank.responses(s[None])[0][:, m].astype(np.float64) for s, m in slices]
    allv = np.concatenate(values, axis=1)
    np.testing.assert_allclose(pooled[0, 0::3], allv.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(pooled[0, 1::3], allv.std(axis=1), rtol=1e-4)
    np.testing.assert_allclose(pooled[0, 2::3], (allv**2).mean(axis=1), rtol=1e-5)
    # without masks: whole central slices through the array centre
    whole = bank.features_3d(image[None], planes=("coronal",))
    np.testing.assert_allclose(whole, bank.features(image[:, 32][None]), rtol=1e-5)
    with pytest.raises(ConfigError):
        bank.features_3d(image[None], planes=("transverse",))
