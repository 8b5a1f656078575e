"""Issue 27, readers: real files damaged by each test; each case gets its named error (or flag) and leaves
every file as it was (nothing written, nothing lost)."""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from hostile import snapshot
from realdata import need
from medlens.data.readers import read_dicom, read_image, read_nifti, read_picture
from medlens.data.readers.medmnist import load_medmnist
from medlens.data.readers.npz import open_npz
from medlens.errors import (
    EmptyImageError,
    ImageTooLargeError,
    MissingSliceError,
    NonFiniteImageError,
    RescaleError,
    UnreadableFileError,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*non-DICOM file")

VOI = "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"
XRAY = "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png"
TIFF = "nuclei_dsb2018_stardist/stardist_data_images/img2d.tif"
BREAST = "medmnist/breastmnist.npz"


def _copy_series(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, dst / f.name)) for f in sorted(src.glob("*.dcm"))]


def _by_position(files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


# ---------------------------------------------------------------------------------------------- DICOM
def test_series_with_a_missing_slice_is_refused_naming_its_neighbours(tmp_path, lidc_series_dir):
    files = _by_position(_copy_series(lidc_series_dir, tmp_path / "series"))
    files[7].unlink()
    before = snapshot(tmp_path)
    with pytest.raises(MissingSliceError) as caught:
        read_dicom(tmp_path / "series")
    message = str(caught.value)
    assert files[6].name in message and files[8].name in message
    assert "a gap of 5.000 mm where the slices are 2.5000 mm apart, about 1 slice(s) missing" in message
    assert snapshot(tmp_path) == before
    files[0].unlink()  # the first slice gone as well: still one gap inside, refused the same way
    with pytest.raises(MissingSliceError):
        read_dicom(tmp_path / "series")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_rescale_slope_zero_names_the_slice(tmp_path, lidc_series_dir):
    files = _copy_series(lidc_series_dir, tmp_path / "series")
    ds = pydicom.dcmread(files[9])
    ds.RescaleSlope = 0
    ds.save_as(files[9])
    before = snapshot(tmp_path)
    with pytest.raises(RescaleError, match=rf"{files[9].name}: RescaleSlope 0\b"):
        read_dicom(tmp_path / "series")
    with pytest.raises(RescaleError, match=files[9].name):
        read_image(files[9])
    for bad in ("NaN", "inf"):
        ds.RescaleSlope = 1
        ds.RescaleIntercept = bad
        ds.save_as(files[9])
        with pytest.raises(RescaleError, match=rf"{files[9].name}: RescaleIntercept"):
            read_dicom(tmp_path / "series")
    assert sorted(snapshot(tmp_path)) == sorted(before)


def test_per_slice_rescale_is_applied_and_reported(tmp_path, lidc_series_dir):
    """One slice stored at half scale with slope 2 reads as the same HU, and meta says slopes differ."""
    files = _by_position(_copy_series(lidc_series_dir, tmp_path / "series"))
    original = read_dicom(tmp_path / "series")
    ds = pydicom.dcmread(files[3])
    stored = ds.pixel_array.astype(np.int32)
    ds.PixelData = (stored // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.RescaleSlope = 2
    ds.save_as(files[3])
    image = read_dicom(tmp_path / "series")
    assert image.meta["rescale_slope"] == [1.0] * 3 + [2.0] + [1.0] * 12
    assert original.meta["rescale_slope"] == 1.0
    expected = (stored // 2) * 2 - 1024
    pad = stored == -2000 + 1024  # LIDC padding (stored -2000) becomes -1024 HU
    np.testing.assert_array_equal(image.array[0, 3][~pad], expected[~pad].astype(np.float32))


def test_dicom_claiming_60000_squared_is_refused_before_decoding(tmp_path, lidc_series_dir):
    path = tmp_path / "huge.dcm"
    ds = pydicom.dcmread(next(lidc_series_dir.glob("*.dcm")))
    ds.Rows = ds.Columns = 60000
    ds.save_as(path)
    with pytest.raises(ImageTooLargeError, match=r"huge.dcm: header claims 1 × 60000 × 60000 = 3,600,000,000 voxels"):
        read_dicom(path)


# ---------------------------------------------------------------------------------------------- pictures
def _png_claiming(source: Path, target: Path, width: int, height: int) -> None:
    """``source`` with the IHDR width and height replaced (CRC recomputed, so only the size is a lie)."""
    data = bytearray(source.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    target.write_bytes(bytes(data))


def test_png_claiming_60000_squared_is_refused_before_decoding(tmp_path, data_root):
    path = tmp_path / "bomb.png"
    _png_claiming(need(data_root, XRAY), path, 60000, 60000)
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: header claims 60000 × 60000 = 3,600,000,000 pixels"):
        read_picture(path)


def test_pixel_limit_is_configurable(tmp_path, data_root, monkeypatch):
    xray = need(data_root, XRAY)
    monkeypatch.setenv("MEDLENS_MAX_PIXELS", str(512 * 512 - 1))
    with pytest.raises(ImageTooLargeError, match="MEDLENS_MAX_PIXELS"):
        read_picture(xray)
    monkeypatch.setenv("MEDLENS_MAX_PIXELS", str(512 * 512))
    assert read_picture(xray).shape == (512, 512)


def test_200_byte_tiff_claiming_60000_squared_is_refused(tmp_path, data_root):
    """The first 200 bytes of a real TIFF (header and IFD, no pixel data) with ImageWidth and ImageLength
    (LONG values at offsets 18 and 30 of this file) set to 60000."""
    data = bytearray(need(data_root, TIFF).read_bytes()[:200])
    data[18:22] = data[30:34] = struct.pack("<I", 60000)
    path = tmp_path / "bomb.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageTooLargeError, match=r"bomb.tif: header claims 60000 × 60000 = 3,600,000,000 pixels"):
        read_picture(path)


def test_float_tiff_with_nan_and_inf_is_an_error_or_a_flag(tmp_path, data_root):
    import tifffile

    image = tifffile.imread(need(data_root, TIFF)).astype(np.float32)
    image[10, 10], image[20, 20] = np.nan, np.inf
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image)
    with pytest.raises(NonFiniteImageError, match=r"nan.tif: 2 of 262,144 values are not finite \(1 NaN, 1 infinite\)"):
        read_picture(path)
    flagged = read_picture(path, non_finite="flag")
    assert flagged.meta["non_finite_voxels"] == 2


# ---------------------------------------------------------------------------------------------- NIfTI
def _nifti_header_offset_dims(raw: bytes) -> int:
    assert struct.unpack("<i", raw[:4])[0] == 348  # NIfTI-1, little endian
    return 40  # dim[0..7], int16


def test_gzip_nifti_claiming_1200_cubed_is_refused_before_decompressing(tmp_path, data_root):
    """A real VOI's header saying 1200³ int16 voxels, followed by all 3.5 GB of them (zeros) as a gzip bomb of
    about 3.4 MB: gzip members concatenate, so one compressed 64 MiB block of zeros is repeated."""
    raw = bytearray(gzip.decompress(need(data_root, VOI).read_bytes())[:352])
    offset = _nifti_header_offset_dims(raw)
    raw[offset:offset + 8] = struct.pack("<4h", 3, 1200, 1200, 1200)
    block = 64 * 2**20
    n_blocks, rest = divmod(1200**3 * 2, block)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)) + gzip.compress(bytes(block)) * n_blocks + gzip.compress(bytes(rest)))
    assert path.stat().st_size < 5_000_000
    with pytest.raises(ImageTooLargeError, match=r"bomb.nii.gz: header claims 1200 × 1200 × 1200 = 1,728,000,000 voxels"):
        read_nifti(path)


def test_nifti_with_nan_is_an_error_or_a_flag(tmp_path, data_root):
    voi = nib.load(str(need(data_root, VOI)))
    data = np.asarray(voi.dataobj).astype(np.float32)
    data[5, 5, 5] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, voi.affine), str(path))
    with pytest.raises(NonFiniteImageError, match=r"nan.nii.gz: 1 of .* values are not finite \(1 NaN"):
        read_image(path)
    assert read_image(path, non_finite="flag").meta["non_finite_voxels"] == 1


# ---------------------------------------------------------------------------------------------- npz
def test_empty_and_truncated_npz_are_named_errors(tmp_path, data_root):
    source = need(data_root, BREAST)
    empty = tmp_path / "empty.npz"
    empty.touch()
    with pytest.raises(EmptyImageError, match="empty.npz"):
        load_medmnist(empty, "train")
    for size in (100, source.stat().st_size // 2, source.stat().st_size - 30):
        cut = tmp_path / "cut.npz"
        cut.write_bytes(source.read_bytes()[:size])
        with pytest.raises(UnreadableFileError, match="cut.npz"):
            load_medmnist(cut, "train")


def test_npz_array_claiming_too_many_bytes_is_refused_before_decompressing(tmp_path, data_root):
    """BreastMNIST's train images re-stored, their .npy header edited to claim 546 million images."""
    with np.load(need(data_root, BREAST)) as z:
        arrays = {k: z[k] for k in z.files}
    path = tmp_path / "bomb.npz"
    np.savez(path, **arrays)
    data = path.read_bytes()
    old = b"'shape': (546, 28, 28), }      "  # the header is padded with spaces: room for six more digits
    header = data.index(old)
    patched = data[:header] + b"'shape': (546000000, 28, 28), }" + data[header + len(old):]
    assert len(patched) == len(data)
    path.write_bytes(patched)
    with open_npz(path) as archive:
        assert archive.header("train_images")[0] == (546000000, 28, 28)
    with pytest.raises(ImageTooLargeError, match=r"train_images.*428,064,000,000 bytes decoded"):
        load_medmnist(path, "train")


def test_npz_with_nan_images_is_reported_by_inspect_description(tmp_path, data_root):
    from medlens.commands.inspect import describe_npz

    with np.load(need(data_root, "msd_lung_tumour_patches/val_patches.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = arrays["images"].astype(np.float32)
    arrays["images"][3, 0, 1, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez_compressed(path, **arrays)
    summary = describe_npz(path)
    assert summary["non_finite"] == 1 and summary["arrays"]["images"]["non_finite"] == 1
    assert (summary["min"], summary["max"]) == (0.0, 1.0)


def test_npy_is_read_with_the_same_checks(tmp_path, data_root):
    from medlens.data.readers.npz import read_npy

    with np.load(need(data_root, BREAST)) as z:
        mask = z["test_images"][0] > 100
    path = tmp_path / "mask.npy"
    np.save(path, mask)
    np.testing.assert_array_equal(read_npy(path), mask)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UnreadableFileError, match="cut.npy"):
        read_npy(cut)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnreadableFileError, match="objects.npy: holds Python objects"):
        read_npy(tmp_path / "objects.npy")
