"""End to end with a real Orthanc: LIDC-IDRI-0001 found by patient ID, pulled over DICOMweb and DIMSE, a nodule
bundle and a nodule segmentation bundle run on it, SEG + SR pushed back and found in the study with the content
computed independently from the original files."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from typer.testing import CliRunner

from medlens.cli import app
from medlens.data.identifiers import pseudonym

PATIENT = "LIDC-IDRI-0001"


def invoke(args: list[str]):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def study_uid(lidc) -> str:
    return str(lidc[1][0].StudyInstanceUID)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_the_study_is_found_by_patient_id(pacs, lidc, protocol, tmp_path):
    table = tmp_path / "studies.csv"
    invoke(["pacs", "query", getattr(pacs, protocol), "--patient", PATIENT, "--modality", "CT", "--out", table])
    found = pd.read_csv(table, dtype=str)
    assert len(found) == 1
    row = found.iloc[0]
    assert (row["study_uid"], row["modalities"], row["series"], row["instances"]) == (study_uid(lidc), "CT", "1", "16")
    assert row["patient_pseudonym"] == pseudonym(PATIENT) and "patient_id" not in row
    invoke(["pacs", "query", getattr(pacs, protocol), "--patient", "LIDC-IDRI-9999", "--out", tmp_path / "none.csv"])
    assert len(pd.read_csv(tmp_path / "none.csv")) == 0


@pytest.mark.parametrize("how", ["dicomweb", "c-get", "c-move"])
def test_pull_brings_the_series_unchanged(pacs, lidc, lidc_series_dir, how, tmp_path, private_tmp):
    url = pacs.dicomweb if how == "dicomweb" else pacs.dimse
    extra = ["--move-port", pacs.move_port] if how == "c-move" else []
    out = tmp_path / "pulled"
    invoke(["pacs", "pull", url, "--study", study_uid(lidc), "--out", out, "--quiet", *extra])
    series_uid = str(lidc[1][0].SeriesInstanceUID)
    files = sorted((out / series_uid).glob("*.dcm"))
    originals = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in lidc_series_dir.glob("*.dcm")}
    assert {p.stem for p in files} == set(originals)
    for path in files:
        pulled, original = pydicom.dcmread(path), pydicom.dcmread(originals[path.stem])
        assert np.array_equal(pulled.pixel_array, original.pixel_array)
        assert pulled.ImagePositionPatient == original.ImagePositionPatient
    manifest = json.loads((out / "pull.json").read_text())
    assert manifest["series"] == [{"series_uid": series_uid, "modality": "CT", "instances": 16, "folder": series_uid}]
    assert list(private_tmp.iterdir()) == [] and not list(tmp_path.glob("medlens-pull-*"))


@pytest.mark.filterwarnings("ignore:.*skipped 1 non-DICOM file")  # the reader XML beside the original series
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_predict_pushes_seg_and_sr_into_the_study(pacs, lidc, lidc_series_dir, nodule_bundle, nodule_segmenter,
                                                  protocol, tmp_path, private_tmp):
    from medlens.deploy.bundle import load_bundle
    from medlens.deploy.predict import predict_files
    from medlens.deploy.predict_volume import LesionSelection
    from medlens.pacs.lesions import lesions_from_mask
    from medlens.pacs.models import bundle_digest, load_model, segment

    image, sources, _ = lidc
    out = tmp_path / "results"
    invoke(["predict", nodule_bundle, "--segmenter", nodule_segmenter, "--pacs", getattr(pacs, protocol),
            "--study", study_uid(lidc), "--push", "--out", out, "--quiet"])
    assert list(private_tmp.iterdir()) == []  # the pulled series is gone

    # the study in Orthanc now holds the CT, a SEG and an SR
    series = {s["MainDicomTags"]["Modality"]: s for s in pacs.series_of(study_uid(lidc))}
    assert set(series) == {"CT", "SEG", "SR"} and len(series["SEG"]["Instances"]) == len(series["SR"]["Instances"]) == 1
    seg_path, sr_path = tmp_path / "pushed-seg.dcm", tmp_path / "pushed-sr.dcm"
    seg_path.write_bytes(pacs.instance_file(series["SEG"]["Instances"][0]))
    sr_path.write_bytes(pacs.instance_file(series["SR"]["Instances"][0]))

    # the SEG holds what the segmentation bundle predicts on the original files, voxel for voxel
    expected = segment(load_model(nodule_segmenter), image)
    seg = hd.seg.segread(seg_path)
    uids = [str(s.SOPInstanceUID) for s in sources]
    read = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    assert expected.any() and np.array_equal(read, expected)
    assert seg.SeriesDescription.startswith(f"medlens {nodule_segmenter.name}")
    assert bundle_digest(nodule_segmenter) in seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]\
        .AlgorithmParameters

    # the SR: one finding per component, each with the probability medlens predict gives for that mask
    lesions, _ = lesions_from_mask(expected, image)
    groups = hd.sr.srread(sr_path).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(lesions) >= 1
    bundle = load_bundle(nodule_bundle)
    table = pd.read_csv(out / "findings.csv")
    for number, (group, lesion) in enumerate(zip(groups, lesions), start=1):
        np.save(tmp_path / "mask.npy", lesion.mask)
        row = predict_files(bundle, [lidc_series_dir], selection=LesionSelection(mask=tmp_path / "mask.npy"))[0].iloc[0]
        probability = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0].value
        assert probability == pytest.approx(row["p_malignant"], abs=1e-5)
        assert table.loc[number - 1, "p_malignant"] == pytest.approx(row["p_malignant"], abs=1e-5)
        assert group.get_measurements(name=codes.SCT.Diameter)[0].value == pytest.approx(lesion.diameter_mm, abs=1e-3)
        assert np.allclose(group.roi.graphic_data[0], lesion.position_mm, atol=1e-3)
    text = pydicom.dcmread(sr_path).to_json()
    assert bundle_digest(nodule_bundle) in text and "research use only" in text

    report = json.loads((out / "run.json").read_text())
    assert sorted(report["pushed"]) == sorted([str(seg.SOPInstanceUID), str(pydicom.dcmread(sr_path).SOPInstanceUID)])
    assert [o["kind"] for o in report["objects"]] == ["SEG", "SR"]
    assert all("dciodvfy: no error" in o["checks"] for o in report["objects"])
    assert set(report["seconds"]) == {"query", "pull", "read", "segment", "classify", "write", "validate", "push"}
