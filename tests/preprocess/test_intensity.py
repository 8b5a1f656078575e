"""Intensity transforms on a real LIDC-IDRI CT slice (HU −2048…3071, −2048 outside the field of view)
and on real BreastMNIST ultrasound images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from realdata import need
from medlens.errors import ConfigError, GeometryError, MedlensError
from medlens.preprocess.intensity import (
    TISSUE_HU,
    WINDOWS,
    apply_window,
    clip_zscore,
    percentile_normalize,
    threshold_scale,
    tissue_mask,
    zscore,
)

FOV_HU = -2048.0  # LIDC-IDRI-0001: raw -1024 with RescaleIntercept -1024


@pytest.fixture(scope="module")
def ct_slice(lidc_series_dir) -> np.ndarray:
    """Slice z = −115 mm (through the nodule), converted to HU with the DICOM rescale."""
    ds = pydicom.dcmread(lidc_series_dir / "-115.000000.dcm")
    return (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)


@pytest.fixture(scope="module")
def breast(data_root) -> np.ndarray:
    return np.load(need(data_root, "medmnist/breastmnist.npz"))["train_images"][:8]


@pytest.fixture(scope="module")
def body(ct_slice) -> np.ndarray:
    """The patient: the largest component above −500 HU with its holes (lungs) filled."""
    labels, n = ndi.label(ct_slice > -500)
    largest = 1 + np.argmax(ndi.sum(np.ones_like(ct_slice), labels, range(1, n + 1)))
    return ndi.binary_fill_holes(labels == largest)


def test_slice_has_the_documented_hu_range(ct_slice):
    assert ct_slice.min() == FOV_HU and ct_slice.max() == 3071.0
    assert (ct_slice == FOV_HU).sum() > 50_000  # the corners outside the circular FOV


@pytest.mark.parametrize("preset", sorted(WINDOWS))
def test_window_presets_clip_at_their_hu_bounds(ct_slice, preset):
    w = WINDOWS[preset]
    out = apply_window(ct_slice, preset)
    assert out.dtype == np.float32 and out.shape == ct_slice.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[ct_slice <= w.lower] == 0.0)
    assert np.all(out[ct_slice >= w.upper] == 1.0)
    assert np.all(out[ct_slice == FOV_HU] == 0.0)
    inside = (ct_slice > w.lower) & (ct_slice < w.upper)
    assert inside.sum() > 100
    np.testing.assert_allclose(out[inside], (ct_slice[inside] - w.lower) / w.width, rtol=1e-5, atol=1e-6)


def test_window_values_are_the_radiology_presets():
    assert (WINDOWS["lung"].center, WINDOWS["lung"].width) == (-600, 1500)
    assert (WINDOWS["brain"].center, WINDOWS["brain"].width) == (40, 80)
    assert (WINDOWS["bone"].lower, WINDOWS["bone"].upper) == (-500, 1300)


def test_lung_window_shows_lungs_mediastinum_window_hides_them(ct_slice, body):
    lung_view = apply_window(ct_slice, "lung")[body]
    mediastinum_view = apply_window(ct_slice, "mediastinum")[body]
    # lung parenchyma (~ -900 HU) is mid-grey in the lung window and black in the mediastinal window
    parenchyma = (ct_slice[body] > -950) & (ct_slice[body] < -850)
    assert 0.25 < lung_view[parenchyma].mean() < 0.35  # (-900 + 1350) / 1500 = 0.3
    assert np.all(mediastinum_view[parenchyma] == 0.0)


def test_explicit_center_width_equals_preset_and_overrides(ct_slice):
    np.testing.assert_array_equal(apply_window(ct_slice, center=-600, width=1500), apply_window(ct_slice, "lung"))
    narrow = apply_window(ct_slice, "lung", width=100)
    assert np.all(narrow[ct_slice >= -550] == 1.0)


def test_window_bad_parameters():
    with pytest.raises(ConfigError, match="lung"):  # the message lists the presets
        apply_window(np.zeros(3), "lungs")
    for width in (0, -10):
        with pytest.raises(MedlensError, match="width"):
            apply_window(np.zeros(3), center=0, width=width)
    with pytest.raises(ConfigError):
        apply_window(np.zeros(3), center=40)


def test_threshold_rule_on_real_slice(ct_slice):
    out = threshold_scale(ct_slice)  # lower -2000, upper 500
    assert out.dtype == np.float32
    assert np.all(out[ct_slice == FOV_HU] == 0.0)  # -2048 is below -2000
    assert np.all(out[ct_slice >= 500] == 1.0)
    mid = (ct_slice > -2000) & (ct_slice < 500)
    np.testing.assert_allclose(out[mid], (ct_slice[mid] + 2000) / 2500, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(threshold_scale(np.array([-1000.0, 0.0])), [0.4, 0.8])


def test_threshold_binarisation_separates_lungs_from_tissue(ct_slice, body):
    binary = threshold_scale(ct_slice, binarize=-400)
    assert set(np.unique(binary)) == {0.0, 1.0}
    assert binary[ct_slice == FOV_HU].max() == 0.0
    # inside the body the lungs (holes of the body mask) are 0, most of the rest 1
    lungs = body & (ct_slice < -800)
    assert lungs.sum() > 20_000 and binary[lungs].max() == 0.0
    assert binary[body].mean() > 0.5


def test_bone_mask_finds_ribs_and_spine(ct_slice):
    bone = tissue_mask(ct_slice, "bone", tolerance=0)
    assert bone.dtype == bool
    assert 0 < bone.mean() < 0.01
    assert bone[320:420, 200:270].any()  # vertebra, posterior midline
    assert bone[250:400, 40:120].sum() > 20  # ribs of the image-left side
    assert bone[250:400, 390:470].any()  # ribs of the image-right side
    assert ct_slice[bone].min() >= 800


def test_air_mask_finds_both_lungs(ct_slice, body):
    air = tissue_mask(ct_slice, "air", tolerance=150) & body
    labels, n = ndi.label(air)
    sizes = ndi.sum(air, labels, range(1, n + 1))
    first, second = np.argsort(sizes)[::-1][:2] + 1
    assert sizes[first - 1] > 10_000 and sizes[second - 1] > 10_000
    cols = sorted(ndi.center_of_mass(labels == lab)[1] for lab in (first, second))
    assert cols[0] < 256 < cols[1]  # one lung each side of the midline
    assert not tissue_mask(ct_slice, "air")[ct_slice == FOV_HU].any()


def test_outside_fov_mask(ct_slice):
    np.testing.assert_array_equal(tissue_mask(ct_slice, "outside_fov"), ct_slice == FOV_HU)


def test_tissue_table_and_errors():
    assert TISSUE_HU["water"] == (0.0, 0.0) and TISSUE_HU["liver"] == (45.0, 65.0)
    assert TISSUE_HU["bone"][0] == 800 and np.isinf(TISSUE_HU["bone"][1])
    np.testing.assert_array_equal(tissue_mask(np.array([10.0, 30.0, 60.0]), "muscle", 0), [False, True, False])
    with pytest.raises(ConfigError, match="liver"):
        tissue_mask(np.zeros(2), "livr")
    with pytest.raises(ConfigError):
        tissue_mask(np.zeros(2), "air", tolerance=-1)


def test_zscore_on_ultrasound(breast):
    out = zscore(breast)
    assert out.dtype == np.float32 and out.shape == breast.shape
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-4
    mask = breast > np.median(breast)
    masked = zscore(breast, mask=mask)
    assert abs(masked[mask].mean()) < 1e-4 and abs(masked[mask].std() - 1) < 1e-4
    assert masked[~mask].max() < masked[mask].min()
    assert np.all(zscore(np.full((4, 4), 7.0)) == 0)  # constant: no division by zero
    with pytest.raises(GeometryError):
        zscore(breast, mask=np.zeros_like(breast, dtype=bool))
    with pytest.raises(GeometryError):
        zscore(breast, mask=mask[0])


def test_percentile_normalize_on_real_ct(ct_slice, body):
    out = percentile_normalize(ct_slice, 1, 99, mask=body)
    lo, hi = np.percentile(ct_slice[body], [1, 99])
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert np.all(out[ct_slice <= lo] == 0) and np.all(out[ct_slice >= hi] == 1)
    assert 0.005 < (out[body] == 1).mean() < 0.02  # ~1% of body pixels at or above the 99th percentile
    with pytest.raises(ConfigError):
        percentile_normalize(ct_slice, 99, 1)


def test_clip_zscore_is_the_nnunet_ct_scheme(ct_slice, body):
    out = clip_zscore(ct_slice, mask=body)
    values = ct_slice[body].astype(np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5])
    mean, std = values.mean(), values.std()
    assert out.dtype == np.float32
    # outside the FOV (-2048) everything sits at the clipped floor; the ceiling likewise
    np.testing.assert_allclose(out[ct_slice == FOV_HU], (lo - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(out.max(), (hi - mean) / std, rtol=1e-5)
    # monotone in HU and linear between the clips
    inside = (ct_slice > lo) & (ct_slice < hi)
    np.testing.assert_allclose(out[inside], (ct_slice[inside] - mean) / std, rtol=1e-4, atol=1e-5)


def test_any_shape_volume(data_root):
    voi = nib.load(need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz")).get_fdata()
    for out in (apply_window(voi, "lung"), threshold_scale(voi), zscore(voi), percentile_normalize(voi)):
        assert out.shape == voi.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
