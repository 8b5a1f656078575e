"""Resampling, cropping and centroids on real LIDC-IDRI nodule VOIs (NIfTI, HU, array order (x, y, z))."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from realdata import need
from medlens.errors import ConfigError, GeometryError
from medlens.preprocess.geometry import center_of_mass_voxel, crop_or_pad, resample

VOI = "lidc_idri_nodule_vois/{}/LIDC-IDRI-{}.nii.gz"


def load_voi(data_root, case: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Image (HU) and mask as (z, y, x) arrays with their (z, y, x) spacing."""
    image = nib.load(need(data_root, VOI.format("image", case)))
    mask = nib.load(need(data_root, VOI.format("nodule_mask", case)))
    spacing = tuple(float(s) for s in image.header.get_zooms()[::-1])
    return image.get_fdata().T.astype(np.float32), np.asarray(mask.dataobj).T, spacing


@pytest.fixture(scope="module")
def voi(data_root):
    return load_voi(data_root, "0001_R_1")


def test_resample_to_isotropic_changes_shape_by_spacing_ratio(voi):
    image, _, spacing = voi
    assert spacing == (2.5, 0.703125, 0.703125) and image.shape == (11, 64, 53)
    out, new_spacing = resample(image, spacing, (1.0, 1.0, 1.0))
    expected = tuple(round(n * s) for n, s in zip(image.shape, spacing))
    assert out.shape == expected == (28, 45, 37)
    assert out.dtype == np.float32
    np.testing.assert_allclose(new_spacing, np.array(spacing) * image.shape / np.array(expected))
    np.testing.assert_allclose(new_spacing, 1.0, atol=0.03)
    assert abs(out.mean() - image.mean()) < 0.02 * abs(image.mean())  # mean HU kept within 2%
    assert image.min() <= out.min() and out.max() <= image.max()  # linear: no overshoot


def test_resample_channel_axis_is_told_by_spacing_length(voi):
    image, _, spacing = voi
    plain, _ = resample(image, spacing, (1.5, 1.5, 1.5))
    stacked, _ = resample(np.stack([image, image + 1000]), spacing, (1.5, 1.5, 1.5))
    assert stacked.shape == (2,) + plain.shape
    np.testing.assert_allclose(stacked[0], plain)
    np.testing.assert_allclose(stacked[1], plain + 1000, rtol=1e-5)


def test_resample_mask_nearest_keeps_labels_and_volume(voi):
    _, mask, spacing = voi
    out, new_spacing = resample(mask, spacing, (1.0, 1.0, 1.0), order=0)
    assert out.dtype == mask.dtype and set(np.unique(out)) <= {0, 1}
    volume_before = mask.sum() * np.prod(spacing)
    volume_after = out.sum() * np.prod(new_spacing)
    assert abs(volume_after - volume_before) < 0.1 * volume_before


def test_resample_real_ct_slice_2d(lidc_series_dir):
    ds = pydicom.dcmread(lidc_series_dir / "-115.000000.dcm")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    spacing = tuple(float(s) for s in ds.PixelSpacing)
    out, new_spacing = resample(hu, spacing, (1.40625, 1.40625))
    assert out.shape == (256, 256) and new_spacing == (1.40625, 1.40625)
    assert abs(out.mean() - hu.mean()) < 5  # HU


def test_resample_errors(voi):
    image, _, spacing = voi
    with pytest.raises(GeometryError):
        resample(image, spacing[:1], (1.0,))  # a 3D array is 3D or (C, 2D), never (C, C, 1D)
    with pytest.raises(GeometryError):
        resample(image, spacing, (1.0, 1.0))
    with pytest.raises(ConfigError):
        resample(image, spacing, (1.0, 0.0, 1.0))
    with pytest.raises(ConfigError):
        resample(image, spacing, (1.0, 1.0, 1.0), order=7)


def test_crop_around_the_nodule_centroid(voi):
    image, mask, _ = voi
    centre = center_of_mass_voxel(mask)
    assert mask[centre] == 1  # a compact nodule contains its centroid
    crop = crop_or_pad(mask, (15, 15, 15), center=centre)
    assert crop.shape == (15, 15, 15) and crop[7, 7, 7] == 1
    assert np.abs(np.subtract(center_of_mass_voxel(crop), 7)).max() <= 1


def test_crop_or_pad_pads_outside_the_array(voi):
    image, _, _ = voi
    out = crop_or_pad(image, (16, 32, 32), center=(0, 0, 0), pad_value=-1024)
    assert out.shape == (16, 32, 32) and out.dtype == image.dtype
    np.testing.assert_array_equal(out[8:, 16:, 16:], image[:8, :16, :16])
    assert np.all(out[:8] == -1024) and np.all(out[:, :16] == -1024)
    # larger than the array around its centre: the array sits in the middle, padded all round
    big = crop_or_pad(image, (21, 74, 63), pad_value=-1024)
    np.testing.assert_array_equal(big[5:16, 5:69, 5:58], image)
    assert (big == -1024).sum() == big.size - image.size
    # the array's own size gives the array back; a box off the array is all padding
    np.testing.assert_array_equal(crop_or_pad(image, image.shape), image)
    assert np.all(crop_or_pad(image, (4, 4, 4), center=(100, 0, 0), pad_value=7) == 7)


def test_crop_or_pad_keeps_leading_channels(voi):
    image, _, _ = voi
    out = crop_or_pad(image[None], (8, 8, 8))
    assert out.shape == (1, 8, 8, 8)
    np.testing.assert_array_equal(out[0], crop_or_pad(image, (8, 8, 8)))
    with pytest.raises(GeometryError):
        crop_or_pad(image, (8,))  # a 3D array has 1 or 0 leading channel axes, never 2
    with pytest.raises(ConfigError):
        crop_or_pad(image, (0, 8, 8))


def test_center_of_mass_voxel_across_real_nodules(data_root):
    for case in ("0001_R_1", "0003_R_2", "0005_R_1"):
        _, mask, _ = load_voi(data_root, case)
        centre = center_of_mass_voxel(mask)
        zz, yy, xx = np.nonzero(mask)
        assert centre == tuple(int(np.round(v.mean())) for v in (zz, yy, xx))
        assert all(0 <= c < n for c, n in zip(centre, mask.shape))
    with pytest.raises(GeometryError):
        center_of_mass_voxel(np.zeros((4, 4)))
