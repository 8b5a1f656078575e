"""Every kind of bad input gets its own MedlensError, naming the file; bad files are built from real ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from realdata import need
from medlens.data.readers import list_series, read_dicom, read_image, read_lidc_xml, read_nifti, read_picture
from medlens.errors import (
    CompressedDicomError,
    EmptyImageError,
    GeometryError,
    MissingPathError,
    MissingPixelDataError,
    MixedSeriesError,
    NoDicomError,
    UnreadableFileError,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*non-DICOM file")

LIDC_0002 = ("lidc_idri_ct_more/LIDC-IDRI-0002/1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329/"
             "1.3.6.1.4.1.14519.5.2.1.6279.6001.619372068417051974713149104919")
VOI = "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"


def _copy_series(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, dst / f.name)) for f in sorted(src.glob("*.dcm"))]


@pytest.mark.parametrize("reader", [read_image, read_dicom, read_nifti, read_picture, read_lidc_xml, list_series])
def test_missing_path(tmp_path, reader):
    with pytest.raises(MissingPathError, match="nowhere"):
        reader(tmp_path / "nowhere")


def test_truncated_slice_in_a_series_names_the_file(tmp_path, lidc_series_dir):
    files = _copy_series(lidc_series_dir, tmp_path)
    victim = files[5]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(UnreadableFileError, match=victim.name):
        read_dicom(tmp_path)
    with pytest.raises(UnreadableFileError, match=victim.name):
        read_image(victim)


def test_file_truncated_inside_its_header(tmp_path, lidc_series_dir):
    files = _copy_series(lidc_series_dir, tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:1000])
    with pytest.raises(UnreadableFileError, match=f"{files[0].name}.*SeriesInstanceUID"):
        read_dicom(tmp_path)


def test_missing_pixel_data(tmp_path, lidc_series_dir):
    files = _copy_series(lidc_series_dir, tmp_path)
    ds = pydicom.dcmread(files[3])
    del ds.PixelData
    ds.save_as(files[3])
    with pytest.raises(MissingPixelDataError, match=files[3].name):
        read_dicom(files[3])
    with pytest.raises(MissingPixelDataError, match=files[3].name):
        read_dicom(tmp_path)


def test_two_series_in_one_folder(tmp_path, data_root, lidc_series_dir):
    other = need(data_root, LIDC_0002)
    _copy_series(lidc_series_dir, tmp_path / "a")
    _copy_series(other, tmp_path / "b")
    with pytest.raises(MixedSeriesError) as caught:
        read_dicom(tmp_path)
    message = str(caught.value)
    assert lidc_series_dir.name in message and other.name in message
    assert "16 files" in message and "12 files" in message
    infos = list_series(tmp_path)
    assert [(i.uid, i.n_files) for i in infos] == [(lidc_series_dir.name, 16), (other.name, 12)]
    chosen = read_dicom(tmp_path, series_uid=other.name)
    assert chosen.shape == (12, 512, 512) and chosen.meta["patient_id"] == "LIDC-IDRI-0002"
    with pytest.raises(NoDicomError, match="1.2.3"):
        read_dicom(tmp_path, series_uid="1.2.3")


def test_text_file_among_slices_is_skipped_with_a_warning(tmp_path, lidc_series_dir):
    _copy_series(lidc_series_dir, tmp_path)
    (tmp_path / "notes.dcm").write_text("reader notes, not an image\n")
    with pytest.warns(UserWarning, match="notes.dcm"):
        image = read_dicom(tmp_path)
    assert image.shape == (16, 512, 512)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here\n")
    with pytest.warns(UserWarning, match="readme.txt"), pytest.raises(NoDicomError, match=str(tmp_path)):
        read_dicom(tmp_path)


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "scan.img"
    path.write_text("plain text")
    with pytest.raises(UnreadableFileError, match="scan.img.*not a DICOM"):
        read_image(path)


def test_duplicate_slice_position(tmp_path, lidc_series_dir):
    files = _copy_series(lidc_series_dir, tmp_path)
    shutil.copy(files[2], tmp_path / "copy_of_a_slice.dcm")
    with pytest.raises(GeometryError, match="same position"):
        read_dicom(tmp_path)


def test_zero_rows(tmp_path, lidc_series_dir):
    ds = pydicom.dcmread(next(lidc_series_dir.glob("*.dcm")))
    ds.Rows = 0
    ds.save_as(tmp_path / "zero.dcm")
    with pytest.raises(EmptyImageError, match="zero.dcm"):
        read_dicom(tmp_path / "zero.dcm")


def test_transfer_syntax_without_a_decoder(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    ds.save_as(tmp_path / "mpeg2.dcm", enforce_file_format=False)
    with pytest.raises(CompressedDicomError, match="mpeg2.dcm.*MPEG2.*convert"):
        read_dicom(tmp_path / "mpeg2.dcm")


def test_jpeg2000_without_its_plugins_says_what_to_install(monkeypatch):
    decoder = get_decoder(pydicom.uid.JPEG2000)
    monkeypatch.setattr(decoder, "_available", {})  # as if neither pylibjpeg nor pillow were installed
    with pytest.raises(CompressedDicomError, match="pip install pylibjpeg-openjpeg"):
        read_dicom(get_testdata_file("693_J2KI.dcm"))


def test_zero_size_files(tmp_path):
    for name in ("empty.png", "empty.dcm", "empty.nii.gz"):
        (tmp_path / name).touch()
        with pytest.raises(EmptyImageError, match=name):
            read_image(tmp_path / name)


def test_truncated_png_and_nifti(tmp_path, data_root):
    png = need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:2000])
    with pytest.raises(UnreadableFileError, match="cut.png"):
        read_image(cut)
    nii = need(data_root, VOI)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(nii.read_bytes()[:500])
    with pytest.raises(UnreadableFileError, match="cut.nii.gz"):
        read_image(cut)


def test_picture_with_no_pixels(tmp_path):
    import tifffile

    with pytest.warns(UserWarning, match="zero-size"):
        tifffile.imwrite(tmp_path / "nothing.tif", np.zeros((0, 8), np.uint8))
    with pytest.raises(EmptyImageError, match="nothing.tif"):
        read_picture(tmp_path / "nothing.tif")


def test_npz_points_to_load_medmnist(data_root):
    path = need(data_root, "medmnist/breastmnist.npz")
    with pytest.raises(UnreadableFileError, match="load_medmnist"):
        read_image(path)


def test_xml_that_is_not_lidc(tmp_path, data_root):
    bad = tmp_path / "broken.xml"
    bad.write_text("<LidcReadMessage><readingSession>")
    with pytest.raises(UnreadableFileError, match="broken.xml"):
        read_lidc_xml(bad)
    other = tmp_path / "other.xml"
    other.write_text("<svg/>")
    with pytest.raises(UnreadableFileError, match="not an LIDC"):
        read_lidc_xml(other)



@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_jpeg2000_is_unreadable_not_a_missing_plugin(tmp_path):
    src = Path(get_testdata_file("693_J2KI.dcm"))
    cut = tmp_path / "cut_j2k.dcm"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])
    with pytest.raises(UnreadableFileError, match="cut_j2k.dcm") as caught:
        read_dicom(cut)
    assert not isinstance(caught.value, CompressedDicomError)
