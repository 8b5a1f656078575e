"""`denoise apply` on a real LIDC-IDRI slice: derived series, same patient/study, HU kept; bad inputs."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medlens.enhance.apply import denoise_paths
from medlens.enhance.autoencoder import Denoiser
from medlens.enhance.dicom_out import read_slice, stored_range
from medlens.errors import MedlensError, ModelError, UnreadableFileError

torch.set_num_threads(1)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ct_model(lidc_series_dir, tmp_path_factory):
    """A CT denoiser trained for a few steps on patches of one real slice, saved and loaded back."""
    hu = read_slice(sorted(lidc_series_dir.glob("*.dcm"))[0]).values
    model = Denoiser(modality="CT", window=(-1024.0, 3071.0), noise="poisson_ct", channels=(8, 8),
                     strides=(1, 2), patch=64, samples_per_epoch=128, epochs=1, batch_size=16, lr=1e-2,
                     seed=0)
    model.fit(np.maximum(hu, -1024.0)[None, None])
    folder = model.save(tmp_path_factory.mktemp("model") / "ct")
    return Denoiser.load(folder)


@pytest.fixture()
def two_slices(lidc_series_dir, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for f in sorted(lidc_series_dir.glob("*.dcm"))[:2]:
        shutil.copy(f, folder / f.name)
    return folder


def test_dicom_round_trip_on_a_real_slice(ct_model, two_slices, tmp_path):
    sources = sorted(two_slices.glob("*.dcm"))
    before = {f.name: _md5(f) for f in sources}
    written = denoise_paths(ct_model, [two_slices], tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(before)
    assert {f.name: _md5(f) for f in sources} == before  # inputs untouched
    series = set()
    for src_path, out_path in zip(sources, sorted(written)):
        src, out = pydicom.dcmread(src_path), pydicom.dcmread(out_path)
        assert out.PatientID == src.PatientID and out.StudyInstanceUID == src.StudyInstanceUID
        assert out.SeriesInstanceUID != src.SeriesInstanceUID
        assert out.SOPInstanceUID != src.SOPInstanceUID
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert list(out.ImageType) == ["DERIVED", "SECONDARY"]
        assert out.ImagePositionPatient == src.ImagePositionPatient
        series.add(out.SeriesInstanceUID)
        # stored × slope + intercept equals the denoised HU within half a quantisation step
        source = read_slice(src_path)
        expected = ct_model.denoise(source.values[None, None])[0, 0]
        stored = out.pixel_array.astype(np.float64)
        low, high = stored_range(out)
        assert stored.min() >= low and stored.max() <= high
        hu = stored * float(out.RescaleSlope) + float(out.RescaleIntercept)
        inside = (expected > -2048 + 1) & (expected < 3000)
        if source.padding is not None:
            inside &= ~source.padding
            assert np.all(out.pixel_array[source.padding] == src.pixel_array[source.padding])
        assert np.abs(hu[inside] - expected[inside]).max() <= 0.5 * float(out.RescaleSlope) + 1e-3
        # the denoiser changed the image (it is not a copy)
        assert np.abs(hu - source.values).mean() > 1.0
    assert len(series) == 1


def test_dicom_without_rescale_tags_is_refused(ct_model, two_slices, tmp_path):
    path = sorted(two_slices.glob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    del ds.RescaleIntercept
    ds.save_as(path)
    with pytest.raises(UnreadableFileError, match=f"{path.name}.*RescaleIntercept"):
        denoise_paths(ct_model, [path], tmp_path / "out")


def test_output_folder_may_not_be_the_input_folder(ct_model, two_slices):
    before = {f.name: _md5(f) for f in two_slices.glob("*.dcm")}
    with pytest.raises(MedlensError, match="output folder is the input folder"):
        denoise_paths(ct_model, [two_slices], two_slices)
    with pytest.raises(MedlensError, match="overwrite"):
        denoise_paths(ct_model, [sorted(two_slices.glob("*.dcm"))[0]], two_slices)
    assert {f.name: _md5(f) for f in two_slices.glob("*.dcm")} == before


def test_wrong_modality_and_channels_are_refused(ct_model, tmp_path):
    grey = tmp_path / "us.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(grey)
    with pytest.raises(ModelError, match=r"us\.png.*CT.*US"):
        denoise_paths(ct_model, [grey], tmp_path / "out", modality="US")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(rgb)
    with pytest.raises(ModelError, match=r"rgb\.png.*1 channel.*3"):
        denoise_paths(ct_model, [rgb], tmp_path / "out", modality="CT")
    assert not (tmp_path / "out").exists()
