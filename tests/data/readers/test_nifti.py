"""NIfTI reading and writing on the real LIDC-IDRI nodule VOIs, checked against the DICOM they came from."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from realdata import need
from medlens.data.readers import read_dicom, read_image, read_nifti, write_nifti

VOI_IMAGE = "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"
VOI_MASK = "lidc_idri_nodule_vois/nodule_mask/LIDC-IDRI-0001_R_1.nii.gz"


@pytest.fixture(scope="module")
def voi(data_root):
    return read_nifti(need(data_root, VOI_IMAGE))


def test_voi_axes_spacing_and_lps_origin(voi, data_root):
    raw = nib.load(need(data_root, VOI_IMAGE))
    assert raw.shape == (53, 64, 11)
    assert voi.array.shape == (1, 11, 64, 53) and voi.array.dtype == np.int16
    assert np.array_equal(voi.array[0], np.transpose(np.asanyarray(raw.dataobj), (2, 1, 0)))
    assert voi.spacing == (2.5, 0.703125, 0.703125)
    # affine origin in RAS is (-39.3125, -63.14375, -127.5); LPS flips x and y.
    assert voi.origin == pytest.approx((-127.5, 63.14375305, 39.3125))
    np.testing.assert_allclose(voi.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


@pytest.mark.filterwarnings("ignore:.*non-DICOM file")
def test_voi_lies_voxel_exact_on_the_dicom_series(voi, lidc_series_dir):
    """The README's check: the VOI equals the series' HU where its affine places it."""
    ct = read_dicom(lidc_series_dir)
    start = [(voi.origin[a] - ct.origin[a]) / ct.spacing[a] for a in range(3)]
    assert np.allclose(start, np.round(start), atol=1e-3)
    z, y, x = (int(round(s)) for s in start)
    d, h, w = voi.shape
    assert np.array_equal(ct.array[0, z:z + d, y:y + h, x:x + w], voi.array[0].astype(np.float32))


def test_round_trip_keeps_array_and_geometry(voi, tmp_path, data_root):
    out = write_nifti(voi, tmp_path / "deep" / "voi.nii.gz")
    back = read_nifti(out)
    assert np.array_equal(back.array, voi.array) and back.array.dtype == voi.array.dtype
    assert back.spacing == voi.spacing
    assert back.origin == pytest.approx(voi.origin)
    np.testing.assert_allclose(back.direction, voi.direction)
    np.testing.assert_allclose(nib.load(out).affine, nib.load(need(data_root, VOI_IMAGE)).affine, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*non-DICOM file")
def test_dicom_written_as_nifti_agrees_with_simpleitk(lidc_series_dir, tmp_path):
    """SimpleITK reads our NIfTI with the same LPS origin and spacing as it reads the DICOM series."""
    sitk = pytest.importorskip("SimpleITK")
    ct = read_dicom(lidc_series_dir)
    path = write_nifti(ct, tmp_path / "ct.nii")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(lidc_series_dir)))
    from_dicom, from_nifti = reader.Execute(), sitk.ReadImage(str(path))
    assert from_nifti.GetOrigin() == pytest.approx(from_dicom.GetOrigin(), abs=1e-4)
    assert from_nifti.GetSpacing() == pytest.approx(from_dicom.GetSpacing(), abs=1e-6)
    np.testing.assert_allclose(from_nifti.GetDirection(), from_dicom.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(from_nifti), ct.array[0])


def test_4d_file_puts_its_fourth_axis_in_channels(tmp_path, data_root):
    image = nib.load(need(data_root, VOI_IMAGE))
    mask = nib.load(need(data_root, VOI_MASK))
    stacked = np.stack([np.asanyarray(image.dataobj), np.asanyarray(mask.dataobj)], axis=-1)
    nib.save(nib.Nifti1Image(stacked, image.affine), tmp_path / "pair.nii.gz")
    pair = read_image(tmp_path / "pair.nii.gz")
    assert pair.array.shape == (2, 11, 64, 53)
    assert np.array_equal(pair.array[1], read_nifti(need(data_root, VOI_MASK)).array[0])
    write_nifti(pair, tmp_path / "again.nii.gz")
    assert np.array_equal(read_nifti(tmp_path / "again.nii.gz").array, pair.array)


def test_boolean_mask_is_written_as_uint8(voi, tmp_path):
    from medlens.image import MedImage

    mask = MedImage(voi.array > -400, voi.spacing, voi.origin, voi.direction)
    back = read_nifti(write_nifti(mask, tmp_path / "mask.nii.gz"))
    assert back.array.dtype == np.uint8 and np.array_equal(back.array, mask.array.astype(np.uint8))
