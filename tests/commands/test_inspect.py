"""``medlens inspect`` on a real CT series, a NIfTI VOI, a chest X-ray and MedMNIST archives."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from realdata import need
from medlens.commands.inspect import inspect
from medlens.data.identifiers import pseudonym

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The command alone in a Typer app, so that the test does not depend on the other commands."""
    single = typer.Typer()
    single.command(name="inspect")(inspect)

    @single.callback()
    def main() -> None:
        """Keep ``inspect`` a sub-command."""

    return single


def _json(app, path) -> dict:
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_for_the_lidc_series(app, lidc_series_dir):
    summary = _json(app, lidc_series_dir)
    assert summary["shape"] == [16, 512, 512]
    assert summary["spacing"] == [2.5, 0.703125, 0.703125]
    assert summary["modality"] == "CT" and summary["units"] == "HU"
    assert (summary["min"], summary["max"]) == (-2048.0, 3071.0)  # README: raw -1024..4095, HU = raw - 1024
    assert "patient_id" not in summary
    assert summary["patient_pseudonym"] == pseudonym("LIDC-IDRI-0001")
    assert summary["series_uid"] == lidc_series_dir.name
    assert (summary["rescale_slope"], summary["rescale_intercept"], summary["non_finite"]) == (1.0, -1024.0, 0)
    assert summary["n_slices"] == 16 and summary["dtype"] == "float32"


def test_table_for_the_lidc_series_shows_the_skipped_xml(app, lidc_series_dir):
    result = runner.invoke(app, ["inspect", str(lidc_series_dir)])
    assert result.exit_code == 0
    assert "16 × 512 × 512" in result.stdout and "-2048 … 3071 HU" in result.stdout
    assert pseudonym("LIDC-IDRI-0001") in result.stdout
    assert "69.xml" in result.stderr


def test_json_for_a_nifti_voi_and_a_png(app, data_root):
    voi = _json(app, need(data_root, "lidc_idri_nodule_vois/image/LIDC-IDRI-0001_R_1.nii.gz"))
    assert voi["shape"] == [11, 64, 53] and voi["spacing"] == [2.5, 0.703125, 0.703125]
    assert voi["dtype"] == "int16" and -1445 <= voi["min"] < voi["max"] <= 3071
    xray = _json(app, need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png"))
    assert xray["shape"] == [512, 512] and xray["channels"] == 1 and xray["spacing"] == [1.0, 1.0]


def test_medmnist_archive_splits_and_label_counts(app, data_root):
    summary = _json(app, need(data_root, "medmnist/pneumoniamnist.npz"))
    assert summary["format"] == "npz" and summary["shape"] == [28, 28]
    splits = summary["splits"]
    assert splits["train"]["images"]["shape"] == [4708, 28, 28]
    # README table: train 1214/3494, val 135/389, test 234/390
    assert splits["train"]["labels"]["counts"] == {"0": 1214, "1": 3494}
    assert splits["val"]["labels"]["counts"] == {"0": 135, "1": 389}
    assert splits["test"]["labels"]["counts"] == {"0": 234, "1": 390}
    table = runner.invoke(app, ["inspect", str(need(data_root, "medmnist/breastmnist.npz"))])
    assert table.exit_code == 0 and "0: 147, 1: 399" in table.stdout


def test_npz_without_splits_lists_its_arrays(app, data_root):
    summary = _json(app, need(data_root, "msd_lung_tumour_patches/val_patches.npz"))
    assert summary["arrays"]["images"]["shape"] == [130, 1, 48, 48]
    assert (summary["min"], summary["max"]) == (0.0, 1.0)


def test_errors_exit_with_status_2(app, tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "absent.dcm")])
    assert result.exit_code == 2 and "absent.dcm" in result.stderr and "no such" in result.stderr
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    result = runner.invoke(app, ["inspect", str(tmp_path / "broken.npz")])
    assert result.exit_code == 2 and "broken.npz" in result.stderr


def test_wired_into_the_medlens_cli(lidc_series_dir):
    cli = pytest.importorskip("medlens.cli")
    result = runner.invoke(cli.app, ["inspect", str(lidc_series_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["shape"] == [16, 512, 512]


def test_identifiers_only_with_keep_identifiers(app, tmp_path, lidc_series_dir):
    """PatientID, PatientName and PatientBirthDate of a real series (given a name and birth date here) stay out
    of the table and the JSON; --keep-identifiers shows them. The copy's folder names carry no patient id."""
    import pydicom

    series = tmp_path / "series"
    series.mkdir()
    for file in sorted(lidc_series_dir.glob("*.dcm")):
        ds = pydicom.dcmread(file)
        ds.PatientName, ds.PatientBirthDate = "Doe^Jane", "19470312"
        ds.save_as(series / file.name)
    for args in (["--json"], []):
        shown = runner.invoke(app, ["inspect", str(series), *args])
        assert shown.exit_code == 0, shown.output
        for identifier in ("LIDC-IDRI-0001", "Doe", "Jane", "19470312"):
            assert identifier not in shown.stdout
        assert pseudonym("LIDC-IDRI-0001") in shown.stdout
    kept = json.loads(runner.invoke(app, ["inspect", str(series), "--json", "--keep-identifiers"]).stdout)
    assert (kept["patient_id"], kept["patient_name"], kept["patient_birth_date"]) == (
        "LIDC-IDRI-0001", "Doe^Jane", "19470312")
    assert "patient_pseudonym" not in kept
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.name for p in lidc_series_dir.glob("*.dcm"))  # inspect wrote nothing
