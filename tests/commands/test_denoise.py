"""`medlens denoise train | apply` end to end on real BreastMNIST ultrasound: PNG and NIfTI outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from realdata import need
from medlens.commands.denoise import app
from medlens.data.readers.medmnist import load_medmnist
from medlens.data.readers.nifti import read_nifti, write_nifti
from medlens.image import MedImage

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    archive = need(data_root, "medmnist/breastmnist.npz")
    folder = tmp_path_factory.mktemp("cli") / "us-model"
    result = CliRunner().invoke(app, ["train", str(archive), "--out", str(folder), "--modality", "US",
                                      "--epochs", "2", "--samples-per-epoch", "256", "--lr", "3e-3", "--quiet"])
    assert result.exit_code == 0, result.output
    return folder, load_medmnist(archive, "test")[0][:4, 0]


def test_train_writes_manifest_with_modality_and_noise(trained):
    folder, _ = trained
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["modality"] == "US" and manifest["noise"]["name"] == "speckle"
    assert manifest["window"] == [0.0, 255.0] and manifest["in_channels"] == 1
    assert (folder / "weights.safetensors").is_file()


def test_apply_png_and_nifti(trained, tmp_path):
    folder, images = trained
    png = tmp_path / "in" / "breast.png"
    png.parent.mkdir()
    Image.fromarray(images[0]).save(png)
    nii = tmp_path / "in" / "breast.nii.gz"
    write_nifti(MedImage(images[None].astype(np.float32), (2.0, 0.5, 0.5)), nii)
    before = png.read_bytes()
    result = CliRunner().invoke(app, ["apply", str(folder), str(png), str(nii), "--out", str(tmp_path / "out"),
                                      "--modality", "US"])
    assert result.exit_code == 0, result.output
    assert png.read_bytes() == before
    out = np.asarray(Image.open(tmp_path / "out" / "breast.png"))
    assert out.shape == images[0].shape and out.dtype == np.uint8
    assert not np.array_equal(out, images[0])
    volume = read_nifti(tmp_path / "out" / "breast.nii.gz")
    assert volume.array.shape == (1, 4, 28, 28) and volume.spacing == (2.0, 0.5, 0.5)


def test_apply_refuses_wrong_modality(trained, tmp_path):
    folder, images = trained
    png = tmp_path / "xray.png"
    Image.fromarray(images[0]).save(png)
    result = CliRunner().invoke(app, ["apply", str(folder), str(png), "--out", str(tmp_path / "out"),
                                      "--modality", "CT"])
    assert result.exit_code == 2
    assert "xray.png" in result.output and "US" in result.output
