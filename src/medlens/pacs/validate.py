"""Checks that a DICOM object medlens wrote is what it should be, before anything is pushed.

Each SEG and SR must

1. pass ``dciodvfy`` (David Clunie's IOD validator, Debian package ``dicom3tools``) without an error
   (its warnings, e.g. attributes a DICOMDIR would need, are kept in the result);
2. be read back by highdicom (``segread`` / ``srread``);
3. hold what was meant: a SEG's masks, read back frame by frame for the source instances, equal the
   predicted label map voxel for voxel, and each frame's plane position equals the position of the source
   slice it references; an SR holds one measurement group per finding, with the probability written.

A failure raises :class:`~medlens.errors.DicomObjectError` naming the file and the problem.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medlens.errors import DicomObjectError

DCIODVFY = "dciodvfy"
POSITION_TOLERANCE_MM = 1e-3


@dataclass
class Validation:
    """What the checks found for one object (errors raise; warnings are kept)."""

    path: Path
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` reported by dciodvfy for a DICOM file."""
    program = shutil.which(DCIODVFY)
    if program is None:
        raise DicomObjectError(f"{path}: cannot validate: {DCIODVFY} is not installed (Debian/Ubuntu: apt-get install "
                               "dicom3tools; scripts/system.sh installs it); nothing is pushed unvalidated")
    run = subprocess.run([program, str(path)], capture_output=True, text=True, errors="replace", timeout=300)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    if run.returncode not in (0, 1) or (run.returncode == 1 and not errors):
        errors.append(f"dciodvfy exited with status {run.returncode}")
    return errors, warnings


def _dciodvfy_or_raise(path: Path, result: Validation) -> None:
    errors, warnings = dciodvfy(path)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise DicomObjectError(f"{path}: dciodvfy reports {len(errors)} error(s): {shown}")
    result.warnings = warnings
    result.checks.append("dciodvfy: no error")


def validate_seg(path: Path, labels: np.ndarray, sources: list[Dataset]) -> Validation:
    """Check a SEG written for ``labels`` (``(D, H, W)``) on ``sources`` (the slices, in the same order)."""
    import highdicom as hd

    result = Validation(Path(path))
    _dciodvfy_or_raise(path, result)
    try:
        seg = hd.seg.segread(path)
        uids = [str(s.SOPInstanceUID) for s in sources]
        read = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    except Exception as exc:  # highdicom raises ValueError, KeyError, RuntimeError... on objects it cannot use
        raise DicomObjectError(f"{path}: highdicom cannot read the SEG back ({exc})") from exc
    result.checks.append("highdicom reads it")
    if read.shape != labels.shape or not np.array_equal(read, labels):
        differing = int(np.count_nonzero(read != labels)) if read.shape == labels.shape else labels.size
        raise DicomObjectError(f"{path}: the SEG's masks differ from the predicted ones in {differing} voxel(s)")
    result.checks.append(f"masks equal the prediction voxel for voxel ({int(np.count_nonzero(labels))} voxels)")
    touched = sum(int(np.count_nonzero((labels == k).any(axis=(1, 2)))) for k in np.unique(labels[labels > 0]))
    if int(seg.NumberOfFrames) != touched:
        raise DicomObjectError(f"{path}: {seg.NumberOfFrames} frames, but the segments touch {touched} slice(s)")
    _check_frame_positions(path, seg, sources)
    result.checks.append(f"one frame per touched slice and segment ({touched}), each at its source slice's position")
    _check_same_subject(path, seg, sources[0])
    return result


def _check_frame_positions(path: Path, seg: Dataset, sources: list[Dataset]) -> None:
    where = {str(s.SOPInstanceUID): np.asarray(s.ImagePositionPatient, float) for s in sources}
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        if uid not in where:
            raise DicomObjectError(f"{path}: frame {number} references {uid}, which is not a source slice")
        if np.abs(position - where[uid]).max() > POSITION_TOLERANCE_MM:
            raise DicomObjectError(f"{path}: frame {number} lies at {position.tolist()}, its source slice {uid} at "
                                   f"{where[uid].tolist()}")


def _check_same_subject(path: Path, written: Dataset, source: Dataset) -> None:
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID"):
        if str(written.get(keyword, "")) != str(source.get(keyword, "")):
            raise DicomObjectError(f"{path}: {keyword} differs from the source series'")
    if str(written.SeriesInstanceUID) == str(source.SeriesInstanceUID):
        raise DicomObjectError(f"{path}: reuses the source's SeriesInstanceUID")


def validate_sr(path: Path, probabilities: list[float], source: Dataset) -> Validation:
    """Check an SR written for findings with these probabilities of the positive class, in order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    result = Validation(Path(path))
    _dciodvfy_or_raise(path, result)
    try:
        sr = hd.sr.srread(path)
        groups = sr.content.get_volumetric_roi_measurement_groups()
    except Exception as exc:  # highdicom raises ValueError, TypeError, AttributeError... on content it cannot parse
        raise DicomObjectError(f"{path}: highdicom cannot read the SR back ({exc})") from exc
    result.checks.append("highdicom reads it as a TID 1500 measurement report")
    if len(groups) != len(probabilities):
        raise DicomObjectError(f"{path}: {len(groups)} measurement group(s) for {len(probabilities)} finding(s)")
    for number, (group, expected) in enumerate(zip(groups, probabilities), start=1):
        found = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)
        if len(found) != 1 or abs(float(found[0].value) - expected) > 1e-6:
            raise DicomObjectError(f"{path}: finding {number} does not hold its probability {expected:.6f}")
    result.checks.append(f"{len(groups)} finding(s), each with its probability")
    _check_same_subject(path, pydicom.dcmread(path, stop_before_pixels=True), source)
    return result


def validate_for_push(path: Path) -> Validation:
    """Checks for a file given to ``medlens pacs push``: a readable DICOM object with its UIDs; a SEG or SR
    (what medlens writes) must also pass dciodvfy and be read back by highdicom."""
    import highdicom as hd

    result = Validation(Path(path))
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        uids = [str(header[k].value) for k in keywords]
    except Exception as exc:  # not DICOM, truncated, or without the UIDs every stored object needs
        raise DicomObjectError(f"{path}: not a DICOM object that can be stored ({exc})") from exc
    if not all(uids):
        raise DicomObjectError(f"{path}: an empty SOP class, SOP instance, study or series UID")
    result.checks.append("DICOM file with its UIDs")
    modality = str(header.get("Modality", ""))
    if modality in ("SEG", "SR"):
        _dciodvfy_or_raise(path, result)
        try:
            (hd.seg.segread if modality == "SEG" else hd.sr.srread)(path)
        except Exception as exc:  # see validate_seg / validate_sr
            raise DicomObjectError(f"{path}: highdicom cannot read the {modality} back ({exc})") from exc
        result.checks.append("highdicom reads it")
    return result
