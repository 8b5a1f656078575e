"""Lesions on a real series: patient positions from the slices' geometry, components, diameters."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medlens.data.readers import read_dicom
from medlens.errors import GeometryError
from medlens.pacs.lesions import lesion_at, lesions_from_mask, measure, voxel_to_patient


@pytest.fixture(scope="module")
def image(lidc_series_dir):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader XML beside the series is skipped with a warning
        return read_dicom(lidc_series_dir)


def test_voxel_positions_follow_the_slice_headers(image, lidc_series_dir):
    files = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in lidc_series_dir.glob("*.dcm")}
    header = pydicom.dcmread(files[image.meta["sop_uids"][5]], stop_before_pixels=True)
    ipp = np.array(header.ImagePositionPatient, float)
    row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
    assert np.allclose(voxel_to_patient(image, (5, 0, 0)), ipp)
    # column index i moves along the row direction (x), row index j along the column direction (y)
    assert np.allclose(voxel_to_patient(image, (5, 10, 20)), ipp + [20 * col_spacing, 10 * row_spacing, 0])
    halfway = voxel_to_patient(image, (5.5, 0, 0))
    nxt = pydicom.dcmread(files[image.meta["sop_uids"][6]], stop_before_pixels=True).ImagePositionPatient
    nxt = np.array(nxt, float)
    assert np.allclose(halfway, (ipp + nxt) / 2)


def test_components_are_lesions_largest_first_with_their_size(image):
    mask = np.zeros(image.shape, bool)
    zz, yy, xx = np.ogrid[: image.shape[0], : image.shape[1], : image.shape[2]]
    mm_y, mm_x = image.spacing[1], image.spacing[2]
    big = ((yy - 200) * mm_y) ** 2 + ((xx - 200) * mm_x) ** 2 <= 10.0**2  # a 20 mm disc
    mask[4:9] |= big[0]
    small = ((yy - 400) * mm_y) ** 2 + ((xx - 100) * mm_x) ** 2 <= 3.0**2  # 6 mm
    mask[10:12] |= small[0]
    mask[14, 50, 50] = True  # one voxel, 0.7 mm: dropped
    lesions, dropped = lesions_from_mask(mask, image)
    assert dropped == 1 and [lesion.number for lesion in lesions] == [1, 2]
    assert lesions[0].diameter_mm == pytest.approx(20.0, abs=1.5)
    assert lesions[1].diameter_mm == pytest.approx(6.0, abs=1.5)
    assert np.allclose(lesions[0].centre_voxel, (6, 200, 200), atol=0.01)
    assert lesions[0].volume_mm3 == pytest.approx(big.sum() * 5 * np.prod(image.spacing))
    diameter, volume = measure(lesions[1].mask, image.spacing)
    assert (diameter, volume) == (lesions[1].diameter_mm, lesions[1].volume_mm3)


def test_position_takes_the_component_under_it(image):
    mask = np.zeros(image.shape, np.uint8)
    mask[6:9, 300:320, 300:320] = 1
    inside = lesion_at((7, 310, 310), image, mask)
    assert inside.mask is not None and inside.diameter_mm > 14
    outside = lesion_at((7, 100, 100), image, mask)
    assert outside.mask is None and outside.diameter_mm is None
    with pytest.raises(GeometryError, match="outside the series"):
        lesion_at((16, 0, 0), image)
