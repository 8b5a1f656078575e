"""Bad input against a real Orthanc: each gives a clear error naming the server and the UID, nothing is pushed,
and no downloaded file is left behind (``private_tmp`` is the tests' temporary folder)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medlens.cli import app
from medlens.errors import PacsError
from medlens.pacs.client import connect
from medlens.pacs.pull import pull_study
from orthanc_server import free_ports


def fails(args: list, *expected: str) -> str:
    """Run the CLI, expect exit status 2 and every ``expected`` text in its message."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    for text in expected:
        assert text in message, (text, message)
    return message


def copies(files, **changes) -> tuple[str, str, list[bytes]]:
    """The files as a new study and series (new UIDs), with attributes changed (``None`` deletes one)."""
    study, series = generate_uid(), generate_uid()
    encoded = []
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for keyword, value in changes.items():
            if value is None:
                delattr(dataset, keyword)
            else:
                setattr(dataset, keyword, value)
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        encoded.append(buffer.getvalue())
    return study, series, encoded


def nothing_left(private_tmp, *folders) -> None:
    """No download left in the temporary folder, none in (or beside) the output folders."""
    assert list(private_tmp.iterdir()) == [], list(private_tmp.iterdir())
    for folder in folders:
        assert not folder.exists() or not any(folder.rglob("*")), list(folder.rglob("*"))
        assert not list(folder.parent.glob("medlens-pull-*")) and not list(folder.parent.glob(".*.lock"))


@pytest.mark.parametrize("scheme", ["dicomweb", "dimse"])
def test_unreachable_server(scheme, tmp_path, private_tmp):
    port = free_ports(1)[0]  # nothing listens there
    url = f"http://127.0.0.1:{port}/dicom-web" if scheme == "dicomweb" else f"dimse://ORTHANC@127.0.0.1:{port}"
    out = tmp_path / "study"
    fails(["pacs", "pull", url, "--study", "1.2.3.4", "--out", out], url, "cannot reach the server", "1.2.3.4")
    nothing_left(private_tmp, out)


def test_refused_association(pacs, tmp_path, private_tmp):
    url = f"dimse://WRONG@127.0.0.1:{pacs.dicom_port}"
    out = tmp_path / "study"
    fails(["pacs", "pull", url, "--study", "1.2.3.4", "--out", out], url, "association rejected",
          "Called AE title not recognised", "1.2.3.4")
    fails(["pacs", "query", pacs.dimse, "--aet", "STRANGER"], pacs.dimse, "STRANGER")
    nothing_left(private_tmp, out)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_unknown_study(pacs, protocol, tmp_path, private_tmp):
    url, out = getattr(pacs, protocol), tmp_path / "study"
    fails(["pacs", "pull", url, "--study", "1.2.3.4.5.6", "--out", out], url, "no study 1.2.3.4.5.6")
    nothing_left(private_tmp, out)


def test_series_without_pixel_data(pacs, lidc_series_dir, nodule_bundle, nodule_segmenter, tmp_path, private_tmp):
    study, series, encoded = copies(sorted(lidc_series_dir.glob("*.dcm"))[:4], PixelData=None)
    pacs.upload(encoded)
    out = tmp_path / "results"
    fails(["pacs", "pull", pacs.dicomweb, "--study", study, "--out", out], pacs.dicomweb, series, "no pixel data")
    fails(["predict", nodule_bundle, "--segmenter", nodule_segmenter, "--pacs", pacs.dimse, "--study", study,
           "--push", "--out", out], pacs.dimse, series, "no pixel data")
    nothing_left(private_tmp, out)
    assert {s["MainDicomTags"]["Modality"] for s in pacs.series_of(study)} == {"CT"}  # nothing pushed


def test_non_ct_series_for_a_ct_bundle(pacs, lidc_series_dir, nodule_bundle, nodule_segmenter, tmp_path, private_tmp):
    study, series, encoded = copies(sorted(lidc_series_dir.glob("*.dcm")), Modality="MR")
    pacs.upload(encoded)
    out = tmp_path / "results"
    fails(["predict", nodule_bundle, "--segmenter", nodule_segmenter, "--pacs", pacs.dicomweb, "--study", study,
           "--push", "--out", out], pacs.dicomweb, study, "has no CT series", series)
    fails(["predict", nodule_segmenter, "--pacs", pacs.dicomweb, "--study", study, "--series", series,
           "--out", out], pacs.dicomweb, f"series {series}", "is MR", "trained on CT")
    nothing_left(private_tmp, out)
    assert len(pacs.series_of(study)) == 1


@pytest.mark.parametrize("change", ["added", "removed"])
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_study_that_changes_while_being_pulled(pacs, lidc, lidc_series_dir, protocol, change, private_tmp):
    """The study gains or loses an instance between the listing and the download."""
    study_uid, series_uid = str(lidc[1][0].StudyInstanceUID), str(lidc[1][0].SeriesInstanceUID)
    url = getattr(pacs, protocol)

    def change_the_study(record, instances) -> None:
        if change == "added":
            dataset = pydicom.dcmread(next(lidc_series_dir.glob("*.dcm")))
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.ImagePositionPatient = [-166.0, -171.699997, -60.0]
            buffer = io.BytesIO()
            dataset.save_as(buffer)
            pacs.upload([buffer.getvalue()])
        else:
            pacs.delete("instances", pacs.series_of(study_uid)[0]["Instances"][0])

    with pytest.raises(PacsError, match=f"{url}: study {study_uid} changed while being pulled: series {series_uid}"):
        pull_study(connect(url), study_uid, on_listed=change_the_study)
    nothing_left(private_tmp)


def test_nothing_is_pushed_unless_every_object_is_valid(pacs, lidc, tmp_path):
    from medlens.pacs.models import SEGMENTER, ModelIdentity
    from medlens.pacs.seg import write_seg

    image, sources, nodule = lidc
    identity = ModelIdentity("nodule-seg", SEGMENTER, "ab" * 32, "unet", None)
    good = write_seg(nodule.astype(np.uint8), sources, ["nodule"], identity, tmp_path / "good.dcm").path
    dataset = pydicom.dcmread(good)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del dataset.SegmentSequence[0].SegmentLabel  # type 1: dciodvfy reports an error
    broken = tmp_path / "broken.dcm"
    dataset.save_as(broken)
    before = len(pacs.get("/instances"))
    for url in (pacs.dicomweb, pacs.dimse):
        fails(["pacs", "push", url, good, broken], str(broken), "dciodvfy reports 1 error", "SegmentLabel")
    assert len(pacs.get("/instances")) == before
    result = CliRunner().invoke(app, ["pacs", "push", pacs.dicomweb, str(good)])
    assert result.exit_code == 0, result.output
    assert len(pacs.get("/instances")) == before + 1
