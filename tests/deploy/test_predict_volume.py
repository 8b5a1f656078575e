"""Raw DICOM to decision: a nodule bundle applied to real LIDC-IDRI series it never saw in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from medlens.commands.predict import predict
from medlens.commands.train import train
from medlens.config import load_config, parse_config
from medlens.data.identifiers import pseudonym
from medlens.data.builders import lidc_nodules
from medlens.data.readers import consensus_nodules, read_dicom
from medlens.errors import ConfigError
from medlens.deploy.predict_volume import LesionSelection, lesion_inputs, voi_box
from medlens.deploy.train import train_bundle

from realdata import REPO, need

torch.set_num_threads(1)
CONFIG = REPO / "src/medlens/configs/lidc_nodules.yaml"
HELD_OUT = ("LIDC-IDRI-0001", "LIDC-IDRI-0003")  # patients whose DICOM series are in the data folder

app = typer.Typer()
app.command(name="train")(train)
app.command(name="predict")(predict)


def _series(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        pytest.fail(f"{root}: expected one series folder matching {pattern}, found {len(found)}")
    return found[0]


@pytest.fixture(scope="module")
def series(data_root):
    """The three LIDC-IDRI series with reader XML: 0001 (16 slices), 0002 (12) and 0003 (11)."""
    need(data_root, "lidc_idri_ct_more/LIDC-IDRI-0002")
    need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv")
    return {pid: _series(data_root, f"lidc_idri_ct*/LIDC-IDRI-{pid}/*/*") for pid in ("0001", "0002", "0003")}


@pytest.fixture(scope="module")
def nodule_bundle(series, tmp_path_factory):
    """The default study's BP network on Gabor + radiomic features, trained without the held-out patients."""
    out = tmp_path_factory.mktemp("nodule_bundle")
    args = ["train", str(CONFIG), "--model", "bp_radiomics", "--out", str(out), "--quiet"]
    for patient in HELD_OUT:
        args += ["--exclude-group", patient]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_bundle_records_the_held_out_patients(nodule_bundle):
    import json

    manifest = json.loads((nodule_bundle / "manifest.json").read_text())
    assert manifest["data"]["excluded_groups"] == list(HELD_OUT)
    assert manifest["data"]["image_shape"] == [2, 32, 32, 32]


def test_malignant_call_from_raw_dicom_series(nodule_bundle, series, tmp_path):
    """All readers rated these nodules 4-5 (0003: 5/5/3/4, median 4.5): each must be called malignant."""
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(nodule_bundle), *map(str, series.values()), "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 3 and table["error"].isna().all(), table.to_string()
    assert (table["label"] == "malignant").all(), table[["roi", "p_malignant"]].to_string()
    assert (table["p_malignant"] > table["threshold"]).all()
    assert np.allclose(table["p_benign"] + table["p_malignant"], 1.0)
    first = table.iloc[0]
    assert "LIDC-IDRI-0001" in first["path"] and "4 readers" in first["roi"] and "5/5/5/4" in first["roi"]
    assert pd.isna(first["patient_id"]) and first["patient_pseudonym"] == pseudonym("LIDC-IDRI-0001")
    assert "LIDC-IDRI-0001" not in out.read_text().replace(first["path"], "")  # the PatientID only in the path
    assert first["series_uid"] == "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    kept = tmp_path / "kept.csv"
    result = CliRunner().invoke(app, ["predict", str(nodule_bundle), str(series["0001"]), "--out", str(kept),
                                      "--keep-identifiers", "--quiet"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(kept)["patient_id"][0] == "LIDC-IDRI-0001"


def test_series_cube_matches_the_training_cube(series, data_root):
    """The DICOM path reproduces the builder's cube of the same nodule (from the LIDC VOI file)."""
    config = load_config(CONFIG)
    cubes, features, rois, ids = lesion_inputs(series["0001"], config, LesionSelection())
    assert cubes.shape == (1, 2, 32, 32, 32) and len(rois) == 1
    vois = lidc_nodules(data_root / "lidc_idri_nodule_vois", max_samples=None)
    train_cube = vois.images[list(vois.ids).index("LIDC-IDRI-0001_R_1")]
    assert np.corrcoef(cubes[0, 0].ravel(), train_cube[0].ravel())[0, 1] > 0.9
    ours, theirs = cubes[0, 1] > 0.5, train_cube[1] > 0.5
    assert 2 * (ours & theirs).sum() / (ours.sum() + theirs.sum()) > 0.85
    volume = features[0]["shape_volume_mm3"]
    assert volume == pytest.approx(vois.features[list(vois.ids).index("LIDC-IDRI-0001_R_1"),
                                                 vois.meta["feature_names"].index("shape_volume_mm3")], rel=0.1)


def test_voi_box_keeps_one_slice_and_43_voxels(series):
    image = read_dicom(series["0001"])
    nodule = consensus_nodules(next(series["0001"].glob("*.xml")), image)[0]
    box = voi_box(nodule.mask)
    z = np.flatnonzero(nodule.mask.any(axis=(1, 2)))
    assert (box[0].start, box[0].stop) == (z[0] - 1, z[-1] + 2)
    assert all(b.stop - b.start >= 43 for b in box[1:])
    assert nodule.mask[box].sum() == nodule.mask.sum()


def test_lesion_selection_errors_are_rows_not_crashes(nodule_bundle, series, tmp_path):
    out = tmp_path / "preds.csv"
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    result = CliRunner().invoke(app, ["predict", str(nodule_bundle), str(series["0001"]), str(broken),
                                      "--at", "5,300,300", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["error"].notna().all()
    assert "mask" in table["error"][0]  # this model reads the mask channel: a position is not enough
    assert "broken.nii.gz" in table["error"][1]


def test_position_selects_the_lesion_for_a_model_without_mask(series, data_root, tmp_path):
    """A CT-only cube model takes a voxel position; the nodule scores above a point in the air outside."""
    raw = load_config(CONFIG).model_dump(mode="json", exclude={"source"})
    raw["data"]["params"]["mask_channel"] = False
    raw["features"]["gabor"] = None
    raw["models"] = [{"id": "cnn3d_ct", "name": "cnn", "params": {"arch": "compact", "epochs": 4},
                      "quick_params": {"epochs": 4}}]
    config = parse_config(raw)
    out = tmp_path / "ct_only"
    manifest = train_bundle(config, out, quick=True, max_samples=240, quiet=True, exclude_groups=list(HELD_OUT))
    assert manifest["data"]["image_shape"] == [1, 32, 32, 32]
    image = read_dicom(series["0001"])
    centre = consensus_nodules(next(series["0001"].glob("*.xml")), image)[0].centre
    from medlens.deploy.classifier import load_classifier as load_bundle
    from medlens.deploy.predict import predict_files

    bundle = load_bundle(out)
    nodule, _ = predict_files(bundle, [series["0001"]], selection=LesionSelection(at=centre))
    air, _ = predict_files(bundle, [series["0001"]], selection=LesionSelection(at=(8.0, 20.0, 20.0)))
    assert nodule["error"].isna().all() and air["error"].isna().all()
    assert "at voxel" in nodule["roi"][0]
    assert nodule["p_malignant"][0] > air["p_malignant"][0]
    cams = tmp_path / "cams"
    at = ",".join(f"{c:.1f}" for c in centre)
    result = CliRunner().invoke(app, ["predict", str(out), str(series["0001"]), "--at", at, "--explain", str(cams),
                                      "--method", "gradcam++", "--quiet"])
    assert result.exit_code == 0, result.output
    overlay = np.asarray(Image.open(next(cams.glob("*.png"))))
    assert overlay.shape[1] > 2 * overlay.shape[0]  # axial, coronal and sagittal panels side by side


def test_unknown_excluded_patient_is_an_error(tmp_path):
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match="LIDC-IDRI-9999"):
        train_bundle(config, tmp_path / "b", model_id="bp_radiomics", exclude_groups=["LIDC-IDRI-9999"])
