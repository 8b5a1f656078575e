"""DICOM reading on real CT: LIDC-IDRI series (TCIA) and the CT files that ship inside pydicom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from realdata import need
from medlens.data.readers import list_series, read_dicom, read_image
from medlens.data.readers.dicom import PADDING_HU
from medlens.errors import GeometryError, MissingSliceError

pytestmark = pytest.mark.filterwarnings("ignore:.*non-DICOM file")

LIDC_0002 = ("lidc_idri_ct_more/LIDC-IDRI-0002/1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.619372068417051974713149104919")
LIDC_0003 = ("lidc_idri_ct_more/LIDC-IDRI-0003/1.3.6.1.4.1.14519.5.2.1.6279.6001.101370605276577556143013894866/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.170706757615202213033480003264")


@pytest.fixture(scope="module")
def lidc1(lidc_series_dir):
    return read_dicom(lidc_series_dir)


def _stored_by_sop(folder: Path) -> dict[str, np.ndarray]:
    """Each slice's stored values straight from pydicom, keyed by SOP Instance UID."""
    out = {}
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        out[str(ds.SOPInstanceUID)] = ds.pixel_array
    return out


def test_lidc_0001_shape_spacing_and_order(lidc1, lidc_series_dir):
    assert lidc1.array.shape == (1, 16, 512, 512)
    assert lidc1.array.dtype == np.float32
    assert lidc1.spacing == (2.5, 0.703125, 0.703125)
    z = [p[2] for p in lidc1.meta["slice_positions"]]
    assert z == sorted(z) and z[0] == -132.5 and z[-1] == -95.0
    assert lidc1.origin == pytest.approx((-132.5, -171.699997, -166.0))
    np.testing.assert_allclose(lidc1.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert lidc1.meta["patient_id"] == "LIDC-IDRI-0001"
    assert lidc1.meta["series_uid"] == lidc_series_dir.name
    assert lidc1.meta["modality"] == "CT"
    assert (lidc1.meta["window_center"], lidc1.meta["window_width"]) == (-600.0, 1600.0)
    assert len(set(lidc1.meta["sop_uids"])) == 16


def test_lidc_0001_hu_is_stored_minus_1024_exactly(lidc1, lidc_series_dir):
    stored = _stored_by_sop(lidc_series_dir)
    # PixelPaddingValue is 63536 (US), i.e. -2000 for these signed pixels; no voxel holds it.
    assert lidc1.meta["padding_value"] == -2000
    assert lidc1.meta["padding_voxels"] == 0
    for i, sop in enumerate(lidc1.meta["sop_uids"]):
        expected = stored[sop].astype(np.int32) - 1024
        assert np.array_equal(lidc1.array[0, i], expected.astype(np.float32))
    assert lidc1.array.min() == -2048 and lidc1.array.max() == 3071  # the README's raw -1024..4095


def test_the_reader_xml_among_slices_is_skipped_with_a_warning(lidc_series_dir):
    with pytest.warns(UserWarning, match="69.xml"):
        image = read_dicom(lidc_series_dir)
    assert image.shape == (16, 512, 512)


def test_slices_are_ordered_by_position_not_by_file_name(tmp_path, lidc_series_dir, lidc1):
    files = sorted(lidc_series_dir.glob("*.dcm"))
    order = np.random.default_rng(0).permutation(len(files))
    for name_rank, k in enumerate(order):
        shutil.copy(files[k], tmp_path / f"slice_{name_rank:02d}.dcm")
    name_order_z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
                    for p in sorted(tmp_path.iterdir())]
    assert name_order_z != sorted(name_order_z)
    shuffled = read_dicom(tmp_path)
    assert np.array_equal(shuffled.array, lidc1.array)
    assert shuffled.meta["sop_uids"] == lidc1.meta["sop_uids"]


@pytest.mark.parametrize(("relative", "n", "dz", "dxy"),
                         [(LIDC_0002, 12, 1.25, 0.681641), (LIDC_0003, 11, 2.5, 0.820312)])
def test_more_lidc_series_with_their_own_padding(data_root, relative, n, dz, dxy):
    folder = need(data_root, relative)
    image = read_image(folder)
    assert image.array.shape == (1, n, 512, 512)
    assert image.spacing == pytest.approx((dz, dxy, dxy))
    assert image.meta["padding_value"] == -2000  # stored as SS here, -2000 directly
    stored = _stored_by_sop(folder)
    padded = 0
    for i, sop in enumerate(image.meta["sop_uids"]):
        raw = stored[sop]
        pad = raw == -2000
        padded += int(pad.sum())
        assert np.all(image.array[0, i][pad] == PADDING_HU)
        assert np.array_equal(image.array[0, i][~pad], (raw[~pad].astype(np.int32) - 1024).astype(np.float32))
    assert image.meta["padding_voxels"] == padded
    assert (padded > 0) == (relative == LIDC_0002)  # README: 0002 raw starts at -2000, 0003 at -1024


def test_single_slice_is_a_one_slice_volume(lidc_series_dir, lidc1):
    one = read_dicom(lidc_series_dir / "-110.000000.dcm")
    assert one.array.shape == (1, 1, 512, 512)
    assert one.spacing == (2.5, 0.703125, 0.703125)  # z from SliceThickness
    i = [p[2] for p in lidc1.meta["slice_positions"]].index(-110.0)
    assert np.array_equal(one.array[0, 0], lidc1.array[0, i])


def test_pydicom_ct_small_matches_pydicom_modality_lut():
    path = get_testdata_file("CT_small.dcm")
    image = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert image.array.shape == (1, 1, 128, 128)
    assert image.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    np.testing.assert_array_equal(image.array[0, 0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


def test_pydicom_jpeg2000_ct_decodes_through_the_plugins():
    path = get_testdata_file("693_J2KI.dcm")
    image = read_image(path)
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    pad = ds.pixel_array == int(ds.PixelPaddingValue)
    assert image.array.shape == (1, 1, 512, 512)
    assert image.meta["padding_voxels"] == int(pad.sum()) > 0
    np.testing.assert_array_equal(image.array[0, 0][~pad], hu[~pad].astype(np.float32))
    assert np.all(image.array[0, 0][pad] == PADDING_HU)


def test_pydicom_four_slice_series_with_a_202_mm_gap_is_refused_as_missing_slices(tmp_path):
    """pydicom's CT2 series: slices at -99.48, 103.02, 104.27, 105.52 mm, a gap of 161 missing slices."""
    folder = Path(get_testdata_file("dicomdirtests/77654033/CT2/17106")).parent
    with pytest.raises(MissingSliceError, match=r"CT2: slices missing between .* \(at -99.480 mm\) and .* "
                                                r"\(at 103.020 mm\): a gap of 202.500 mm .* 1.2500 mm apart, "
                                                r"about 161 slice\(s\) missing"):
        read_dicom(folder)
    for file in folder.iterdir():  # the three slices after the gap read as one volume
        if pydicom.dcmread(file).ImagePositionPatient[2] > 0:
            shutil.copy(file, tmp_path / file.name)
    image = read_dicom(tmp_path)
    assert image.array.shape == (1, 3, 16, 16)
    assert image.spacing == pytest.approx((1.25, 0.488281, 0.488281))
    assert [round(p[2], 2) for p in image.meta["slice_positions"]] == [103.02, 104.27, 105.52]


def test_uneven_gaps_warn_or_raise_with_strict_spacing(tmp_path, lidc_series_dir):
    """One LIDC slice moved 0.4 mm along z: gaps 2.9 and 2.1 mm, uneven but no slice missing."""
    files = [Path(shutil.copy(f, tmp_path / f.name)) for f in sorted(lidc_series_dir.glob("*.dcm"))]
    moved = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))[5]
    ds = pydicom.dcmread(moved)
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.4]
    ds.save_as(moved)
    with pytest.warns(UserWarning, match=r"uneven slice gaps \(mm\): .*2\.900, 2\.100.* using the median 2\.5000 mm"):
        image = read_dicom(tmp_path)
    assert image.spacing[0] == pytest.approx(2.5)
    with pytest.raises(GeometryError, match="uneven slice gaps"):
        read_dicom(tmp_path, strict_spacing=True)


def test_colour_ultrasound_is_channel_first():
    still = read_dicom(get_testdata_file("examples_rgb_color.dcm"))
    assert still.array.shape == (3, 240, 320) and still.array.dtype == np.uint8
    ds = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm"))
    assert np.array_equal(np.moveaxis(still.array, 0, -1), ds.pixel_array)
    cine = read_dicom(get_testdata_file("examples_ybr_color.dcm"))
    assert cine.array.shape == (3, 30, 240, 320)


def test_mr_without_rescale_keeps_its_integer_dtype():
    image = read_dicom(get_testdata_file("MR_small.dcm"))
    assert image.array.dtype == np.int16
    assert image.array.shape == (1, 1, 64, 64)


def test_list_series_on_a_single_series_folder(lidc_series_dir):
    (info,) = list_series(lidc_series_dir)
    assert (info.uid, info.n_files, info.modality) == (lidc_series_dir.name, 16, "CT")


def test_padding_outside_ct_becomes_zero(tmp_path, data_root):
    """A non-CT slice with PixelPaddingValue: padding voxels read as 0 (no signal), the rest rescaled."""
    folder = need(data_root, LIDC_0002)
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    ds.Modality = "MR"
    ds.save_as(tmp_path / "relabelled.dcm")
    image = read_dicom(tmp_path / "relabelled.dcm")
    pad = ds.pixel_array == -2000
    assert pad.any() and image.meta["padding_voxels"] == int(pad.sum())
    assert np.all(image.array[0, 0][pad] == 0)
    assert np.array_equal(image.array[0, 0][~pad], ds.pixel_array[~pad].astype(np.float32) - 1024)
