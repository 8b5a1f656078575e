"""SEG and SR objects on LIDC-IDRI-0001: valid for dciodvfy, read back by highdicom, holding what was meant.

The masks are real: the readers' 50 % consensus of the nodule (the LIDC XML beside the series) and, as a
second class, the voxels below −400 HU inside the body's bounding box (a crude lung field).
"""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

import medlens
from medlens.errors import DicomObjectError
from medlens.pacs.lesions import lesions_from_mask
from medlens.pacs.models import CLASSIFIER, SEGMENTER, Classifier, ModelIdentity, Prediction
from medlens.pacs.seg import write_seg
from medlens.pacs.sr import Finding, write_sr
from medlens.pacs.validate import dciodvfy, validate_seg, validate_sr

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                reason="dciodvfy is not installed (apt-get install dicom3tools; scripts/system.sh)")
SEGMENTER_ID = ModelIdentity("nodule-seg", SEGMENTER, "ab" * 32, "unet", None)
CLASSIFIER_ID = ModelIdentity("nodules", CLASSIFIER, "cd" * 32, "bp_radiomics", "0.1.0")


def test_seg_of_the_readers_nodule(lidc, tmp_path):
    image, sources, nodule = lidc
    labels = nodule.astype(np.uint8)
    written = write_seg(labels, sources, ["nodule"], SEGMENTER_ID, tmp_path / "seg.dcm")
    assert dciodvfy(written.path)[0] == []
    validation = validate_seg(written.path, labels, sources)
    assert any("voxel for voxel" in check for check in validation.checks)

    seg = hd.seg.segread(written.path)
    touched = np.flatnonzero(labels.any(axis=(1, 2)))
    assert written.n_frames == seg.NumberOfFrames == len(touched) < len(sources)  # one frame per touched slice
    first = sources[0]
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.PatientID == first.PatientID == "LIDC-IDRI-0001"
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID and seg.SOPInstanceUID not in {s.SOPInstanceUID
                                                                                          for s in sources}
    frame_positions = [tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient)
                       for f in seg.PerFrameFunctionalGroupsSequence]
    assert sorted(frame_positions) == sorted(tuple(float(v) for v in sources[k].ImagePositionPatient) for k in touched)
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Nodule.value
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medlens nodule-seg" and algorithm.AlgorithmVersion == medlens.__version__
    assert "bundle_sha256=" + "ab" * 32 in algorithm.AlgorithmParameters
    assert "research use only" in algorithm.AlgorithmParameters and "research use only" in seg.SeriesDescription


def test_seg_with_two_classes(lidc, tmp_path):
    image, sources, nodule = lidc
    labels = np.zeros(image.shape, np.uint8)
    labels[image.array[0] < -400] = 2
    labels[:, :60], labels[:, -60:], labels[:, :, :30], labels[:, :, -30:] = 0, 0, 0, 0  # outside the body
    labels[nodule] = 1
    written = write_seg(labels, sources, ["nodule", "lung"], SEGMENTER_ID, tmp_path / "seg.dcm")
    validate_seg(written.path, labels, sources)
    seg = hd.seg.segread(written.path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["nodule", "lung"]
    assert written.n_frames == sum(int((labels == k).any(axis=(1, 2)).sum()) for k in (1, 2))


def test_a_seg_that_differs_from_the_prediction_is_refused(lidc, tmp_path):
    image, sources, nodule = lidc
    labels = nodule.astype(np.uint8)
    written = write_seg(labels, sources, ["nodule"], SEGMENTER_ID, tmp_path / "seg.dcm")
    changed = labels.copy()
    z, y, x = np.argwhere(labels)[0]
    changed[z, y, x] = 0
    with pytest.raises(DicomObjectError, match="differ from the predicted ones in 1 voxel"):
        validate_seg(written.path, changed, sources)
    dataset = pydicom.dcmread(written.path)
    position = dataset.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 1.0 for v in position.ImagePositionPatient]
    moved = tmp_path / "moved.dcm"
    dataset.save_as(moved)
    with pytest.raises(DicomObjectError, match="frame 1 lies at"):
        validate_seg(moved, labels, sources)


def test_sr_of_two_nodules(lidc, tmp_path):
    image, sources, nodule = lidc
    second = np.zeros_like(nodule)
    second[2:5, 100:110, 380:392] = True
    lesions, _ = lesions_from_mask(nodule | second, image)
    classifier = Classifier(CLASSIFIER_ID, None, ["benign", "malignant"], 0.3, "sensitivity ≥ 0.95 on validation data",
                            "CT", True)
    findings = [Finding(lesion, Prediction({"benign": 1 - p, "malignant": p}, label, 0.3))
                for lesion, p, label in zip(lesions, (0.91, 0.12), ("malignant", "benign"))]
    written = write_sr(findings, sources, classifier, tmp_path / "sr.dcm")
    assert dciodvfy(written.path)[0] == []
    validate_sr(written.path, [0.91, 0.12], sources[0])

    sr = hd.sr.srread(written.path)
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID and sr.PatientID == "LIDC-IDRI-0001"
    assert "research use only" in sr.SeriesDescription
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    for group, lesion, p in zip(groups, lesions, (0.91, 0.12)):
        assert group.finding_type == codes.SCT.Nodule
        diameter = group.get_measurements(name=codes.SCT.Diameter)[0]
        assert diameter.value == pytest.approx(lesion.diameter_mm, abs=1e-3) and diameter.unit == codes.UCUM.Millimeter
        assert group.get_measurements(name=codes.DCM.ThresholdValue)[0].value == pytest.approx(0.3)
        probability = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0]
        assert probability.value == pytest.approx(p)
        surface = group.roi
        assert np.allclose(surface.graphic_data[0], lesion.position_mm, atol=1e-3)
        assert surface.frame_of_reference_uid == sources[0].FrameOfReferenceUID
    text = pydicom.dcmread(written.path).to_json()
    for expected in ("medlens nodules", "bundle_sha256=" + "cd" * 32, "threshold rule: sensitivity >= 0.95",
                     "decision threshold on p(malignant)=0.3", "research use only, not for clinical use",
                     medlens.__version__, "Malignant", "Benign"):
        assert expected in text, expected
