"""Nodule classifications as a DICOM Structured Report: a TID 1500 Measurement Report, with ``highdicom``.

The document (Comprehensive 3D SR, PS3.3 A.35.13) carries the source's patient and study modules, new
Series and SOP Instance UIDs, and references the source instances as evidence. Its content tree:

* observation context: the observer is a device, medlens running the bundle (name ``medlens <bundle>``,
  model name the bundle, serial number the start of its digest, and a device UID derived from the digest,
  so one bundle always reports as the same device);
* procedure reported: CT (LOINC 25045-6, "CT unspecified body region", CID 100);
* one **measurement group per lesion** (TID 1411, volumetric ROI) with a tracking identifier
  ("nodule N") and UID, finding "Nodule" at site "Lung", the lesion's **location** as a 3D point in the
  source's Frame of Reference (its centre: the mask's centroid, or the position given with ``--at``),
  and the measurements (TID 300):

  - "Diameter" (SCT 81827009, mm): the longest axial diameter (:mod:`medlens.pacs.lesions`), when a
    mask measured it; "Volume" (SCT 118565006, mm³) likewise;
  - "Probability of cancer" (DCM 111047, no unit): the bundle's probability of the positive class,
    with its Algorithm Identification (TID 4019): name ``medlens <bundle>``, version the medlens version,
    parameters the bundle's identity (name, kind, model, digest), the decision threshold and the rule that
    chose it, and "research use only, not for clinical use";
  - "Threshold Value" (DCM 122411, no unit): the decision threshold;

  and a qualitative evaluation "Impression" (DCM 121073): "Malignant" (SCT 21594007) when the probability
  reaches the threshold, else "Benign" (SCT 30807003).

The series description also says "research use only". Text values are written in ASCII (the source's
character set may be ISO_IR 100, which has no "≥").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medlens.errors import DicomObjectError
from medlens.files import write_atomically
from medlens.pacs.lesions import Lesion
from medlens.pacs.models import Classifier, ModelIdentity, Prediction
from medlens.pacs.seg import RESEARCH_ONLY, source_headers

SR_SERIES_NUMBER = 9002
POSITIVE_LABEL = "malignant"
ASCII = {"≥": ">=", "≤": "<=", "×": "x", "–": "-", "—": "-", "µ": "u"}


@dataclass
class Finding:
    """One lesion and what the classifier said of it."""

    lesion: Lesion
    prediction: Prediction


@dataclass(frozen=True)
class WrittenSr:
    """What was written: the file, its UIDs and the number of findings."""

    path: Path
    sop_uid: str
    series_uid: str
    n_findings: int


def ascii_text(text: str) -> str:
    """``text`` with the few non-ASCII signs medlens writes spelled out (and anything else replaced)."""
    for sign, spelled in ASCII.items():
        text = text.replace(sign, spelled)
    return text.encode("ascii", "replace").decode("ascii")


def _algorithm(classifier: Classifier):
    import highdicom as hd

    identity = classifier.identity
    return hd.sr.AlgorithmIdentification(
        name=f"medlens {identity.name}"[:64], version=identity.medlens_version,
        parameters=[*identity.parameters(), f"decision threshold on p({POSITIVE_LABEL})={classifier.threshold:.6g}",
                    ascii_text(f"threshold rule: {classifier.threshold_rule}"), RESEARCH_ONLY])


def _observer(identity: ModelIdentity):
    import highdicom as hd

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[identity.digest]), name=f"medlens {identity.name}"[:64],
        manufacturer_name="medlens", model_name=identity.name[:64], serial_number=identity.digest[:16])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _group(finding: Finding, classifier: Classifier, frame_of_reference: str, series_uid: str):
    import highdicom as hd

    lesion, prediction = finding.lesion, finding.prediction
    probability = prediction.probabilities[POSITIVE_LABEL]
    measurements = []
    if lesion.diameter_mm is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=round(lesion.diameter_mm, 3),
                                              unit=codes.UCUM.Millimeter, derivation=codes.SCT.Maximum))
    if lesion.volume_mm3 is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.Volume, value=round(lesion.volume_mm3, 3),
                                              unit=codes.UCUM.CubicMillimeter))
    measurements.append(hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=round(probability, 6),
                                          unit=codes.UCUM.NoUnits, algorithm_id=_algorithm(classifier)))
    measurements.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=round(classifier.threshold, 6),
                                          unit=codes.UCUM.NoUnits))
    impression = codes.SCT.Malignant if probability >= classifier.threshold else codes.SCT.Benign
    surface = hd.sr.VolumeSurface(graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                                  graphic_data=np.array([lesion.position_mm]),
                                  frame_of_reference_uid=frame_of_reference,
                                  source_series=hd.sr.SourceSeriesForSegmentation(series_uid))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"nodule {lesion.number}"),
        referenced_volume_surface=surface, finding_type=codes.SCT.Nodule,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)], measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=codes.DCM.Impression, value=impression)])


def build_sr(findings: list[Finding], sources: list[Dataset], classifier: Classifier,
             series_number: int = SR_SERIES_NUMBER):
    """The highdicom Comprehensive 3D SR of ``findings`` on the source series (module docstring)."""
    import highdicom as hd

    if not findings:
        raise DicomObjectError("SR: no finding to report")
    if classifier.labels[-1:] != [POSITIVE_LABEL] or len(classifier.labels) != 2:
        raise DicomObjectError(f"SR: the report needs a binary benign/malignant classifier; "
                               f"{classifier.identity.name} has labels {classifier.labels}")
    headers = source_headers(sources)
    first = headers[0]
    groups = [_group(f, classifier, str(first.FrameOfReferenceUID), str(first.SeriesInstanceUID)) for f in findings]
    report = hd.sr.MeasurementReport(observation_context=_observer(classifier.identity),
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups,
                                     title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(evidence=headers, content=report[0], series_instance_uid=generate_uid(),
                                 series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
                                 manufacturer="medlens", is_complete=True, content_qualification="RESEARCH",
                                 series_description=f"medlens nodule report ({RESEARCH_ONLY})"[:64])
    return sr


def write_sr(findings: list[Finding], sources: list[Dataset], classifier: Classifier, out: Path,
             series_number: int = SR_SERIES_NUMBER) -> WrittenSr:
    """Write the SR of ``findings`` to ``out`` (atomically); see :func:`build_sr`."""
    sr = build_sr(findings, sources, classifier, series_number)
    write_atomically(out, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    return WrittenSr(Path(out), str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), len(findings))
