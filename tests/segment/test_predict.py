"""`segment predict` never loses a mask to a name collision, never replaces a file, and refuses NaN volumes
(issue 27)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from realdata import need
from medlens.commands.segment import app
from medlens.errors import UnreadableFileError
from medlens.segment.bundle import build_model, save_segmenter
from medlens.segment.datasets import load_folder
from medlens.segment.infer import output_names, predict_files
from medlens.segment.rules import make_plan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def lidc(data_root):
    """An untrained model of an LIDC plan (geometry and files are what is tested) and two real VOIs."""
    root = need(data_root, "lidc_idri_nodule_vois")
    plan = make_plan(load_folder(root, "binary", limit=4), root).copy_with(**{"network.channels": 4,
                                                                             "inference.tta_flips": False})
    torch.manual_seed(0)
    return build_model(plan).eval(), plan, sorted((root / "image").glob("*.nii.gz"))[:2]


def test_inputs_with_one_name_keep_their_folders_and_nothing_is_replaced(lidc, tmp_path):
    model, plan, (first, second) = lidc
    for folder, source in (("a", first), ("b", second)):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "scan.nii.gz")
    inputs = [tmp_path / "a" / "scan.nii.gz", tmp_path / "b" / "scan.nii.gz"]
    assert output_names(inputs) == ["a/scan", "b/scan"]
    written = predict_files(model, plan, inputs, tmp_path / "o")
    assert written == [tmp_path / "o" / "a" / "scan.nii.gz", tmp_path / "o" / "b" / "scan.nii.gz"]
    for mask, source in zip(written, (first, second)):  # each mask has its own input's geometry
        assert np.array_equal(nib.load(mask).affine, nib.load(source).affine)
        assert nib.load(mask).shape == nib.load(source).shape
    assert nib.load(written[0]).shape != nib.load(written[1]).shape
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(UnreadableFileError, match=r"o/a/scan.nii.gz: already exists"):
        predict_files(model, plan, inputs, tmp_path / "o")
    assert {p: p.read_bytes() for p in written} == before
    assert output_names([first, second]) == [p.name[:-7] for p in (first, second)]  # unique names stay plain


def test_a_nan_volume_is_an_error_naming_the_file_not_an_empty_mask(lidc, tmp_path):
    model, plan, (first, _) = lidc
    img = nib.load(first)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[2, 3, 1] = np.nan
    data[4, 4, 2] = np.inf
    bad = tmp_path / "broken.nii.gz"
    header = img.header.copy()
    header.set_data_dtype(np.float32)  # a float volume, as a reconstruction or a converter may write
    nib.save(nib.Nifti1Image(data, img.affine, header), bad)
    with pytest.raises(UnreadableFileError, match=r"broken.nii.gz: 2 voxels are NaN or infinite"):
        predict_files(model, plan, [bad], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    save_segmenter(model, plan, tmp_path / "m")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "m"), str(bad), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2 and "broken.nii.gz" in result.output and "NaN" in result.output
