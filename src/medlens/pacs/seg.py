"""A segmentation bundle's label map as a DICOM Segmentation (SEG) object, written with ``highdicom``.

The SEG (PS3.3 A.51, Segmentation IOD, BINARY type) is derived from the source series: it carries the
source's patient and study modules, its Frame of Reference UID, a reference to every source instance
(``ReferencedSeriesSequence``) and new Series and SOP Instance UIDs. Each class of the label map is one
segment; each segment has one frame per source slice it touches (empty frames are left out), with that
slice's ``ImagePositionPatient`` as its Plane Position and a reference to that slice as its derivation
source, so that a viewer lays each frame on its slice. The segments' Algorithm Identification names the
algorithm (``medlens <bundle>``), its version (the medlens version) and, as parameters, the bundle's name,
kind, model, digest (:func:`medlens.pacs.models.bundle_digest`) and "research use only"; Content Qualification
is ``RESEARCH`` and the series and content descriptions say "research use only" too.

Class names map to codes (Segmented Property Category / Type, CID 7150 / 7151) through :data:`STRUCTURES`;
an unknown name is coded as tissue and keeps its name as the segment label.

Encoding cost
-------------
highdicom packs each frame of a BINARY segmentation to 1 bit per pixel and, in version 0.28, builds the
per-frame functional groups once per frame; ``benchmarks/speed/bench_pacs.py --seg-only`` measures both this
writer and highdicom's own defaults on a 512 × 512 × 300 mask (figures in benchmarks/results/pacs.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medlens.errors import DicomObjectError
from medlens.files import write_atomically
from medlens.pacs.models import ModelIdentity

SEG_SERIES_NUMBER = 9001
RESEARCH_ONLY = "research use only, not for clinical use"
STRUCTURES = {
    "nodule": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Nodule),
    "lung": (codes.SCT.AnatomicalStructure, codes.SCT.Lung),
    "lungs": (codes.SCT.AnatomicalStructure, codes.SCT.Lung),
    "tumour": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "tumor": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
    "lesion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
}
"""Class name → (segmented property category, segmented property type)."""
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                       "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class WrittenSeg:
    """What was written: the file, its UIDs and its number of frames."""

    path: Path
    sop_uid: str
    series_uid: str
    n_frames: int


def source_headers(datasets: list[Dataset]) -> list[Dataset]:
    """Copies of the source headers with the type 2 patient and study attributes present (empty when the
    source lacks them: the derived objects must carry them, PS3.3 C.7.1.1, C.7.2.1)."""
    headers = []
    for dataset in datasets:
        header = copy.copy(dataset)
        for keyword in TYPE2_PATIENT_STUDY:
            if keyword not in header:
                setattr(header, keyword, "")
        headers.append(header)
    return headers


def segment_descriptions(class_names: list[str], identity: ModelIdentity):
    """One highdicom SegmentDescription per class (numbered from 1)."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medlens {identity.name}"[:64], family=codes.DCM.ArtificialIntelligence,
        version=identity.medlens_version,
        parameters={**dict(line.split("=", 1) for line in identity.parameters()), "use": RESEARCH_ONLY})
    descriptions = []
    for number, name in enumerate(class_names, start=1):
        category, kind = STRUCTURES.get(name.lower(), (codes.SCT.Tissue, codes.SCT.Tissue))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=generate_uid(), tracking_id=f"{name} (medlens)"[:64]))
    return descriptions


def build_seg(labels: np.ndarray, sources: list[Dataset], class_names: list[str], identity: ModelIdentity,
              series_number: int = SEG_SERIES_NUMBER):
    """The highdicom Segmentation of a label map ``(D, H, W)`` whose slice ``k`` lies on ``sources[k]``."""
    import highdicom as hd

    if labels.ndim != 3 or len(sources) != labels.shape[0]:
        raise DicomObjectError(f"SEG: label map of shape {labels.shape} for {len(sources)} source slices")
    if not labels.any():
        raise DicomObjectError("SEG: the mask is empty; there is nothing to write")
    if int(labels.max()) > len(class_names):
        raise DicomObjectError(f"SEG: label {int(labels.max())} but only {len(class_names)} class names")
    seg = hd.seg.Segmentation(
        source_images=source_headers(sources), pixel_array=labels, segmentation_type="BINARY",
        segment_descriptions=segment_descriptions(class_names, identity), series_instance_uid=generate_uid(),
        series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medlens",
        manufacturer_model_name=f"medlens {identity.name}"[:64], software_versions=identity.medlens_version,
        device_serial_number=identity.digest[:16], content_description=RESEARCH_ONLY,
        content_label="MEDLENS_SEG", content_qualification="RESEARCH",
        series_description=f"medlens {identity.name} ({RESEARCH_ONLY})"[:64])
    return seg


def write_seg(labels: np.ndarray, sources: list[Dataset], class_names: list[str], identity: ModelIdentity,
              out: Path, series_number: int = SEG_SERIES_NUMBER) -> WrittenSeg:
    """Write the SEG of ``labels`` to ``out`` (atomically); see :func:`build_seg`."""
    seg = build_seg(labels, sources, class_names, identity, series_number)
    write_atomically(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    return WrittenSeg(Path(out), str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID), int(seg.NumberOfFrames))
