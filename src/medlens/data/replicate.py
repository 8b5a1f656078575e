"""Copies of real LIDC-IDRI patients under new patient IDs and UIDs, for speed and memory measurements only.

A copy keeps every pixel and every reader contour; it changes the identifiers, so that a build treats it as
another patient: ``PatientID`` and ``PatientName`` become the new ID, and ``StudyInstanceUID``,
``SeriesInstanceUID``, ``SOPInstanceUID`` (with the file meta's ``MediaStorageSOPInstanceUID``) and
``FrameOfReferenceUID`` are replaced by UIDs derived from the old UID and the new ID
(:func:`pydicom.uid.generate_uid` with them as entropy, so a copy is reproducible). The reader XML gets the same
replacements. Copies carry no new information: **never use them for accuracy figures**.

:func:`lengthen_patient` makes a partial series as long as a real one (the shared series have 11–16 slices, the
archive's about 240), by stacking copies of its slices at the positions of the missing ones; the slices the
reader XML names get the SOP Instance UIDs it names, so every contour of the XML lies on the long series, as in
the archive. The anatomy of such a series is wrong (each added slice repeats its nearest real one): it exists
only to measure how the build's cost grows with the series' length.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def new_uid(old: str, patient_id: str) -> str:
    """The UID that replaces ``old`` in the copy for ``patient_id`` (deterministic)."""
    return generate_uid(entropy_srcs=[old, patient_id])


def replicate_patient(patient_dir: str | Path, out: str | Path, patient_id: str, record: bool = False) -> Path:
    """Copy one patient folder of the download tree (``<patient>/<study>/<series>/``) as ``out/<patient_id>``.

    With ``record``, each series folder also gets the file record that ``medlens data fetch lidc-idri`` writes
    (:data:`medlens.data.tcia.RECORD`: every file's md5), as if the copy had been downloaded.
    Returns the new patient folder.
    """
    patient_dir, out = Path(patient_dir), Path(out)
    mapping: dict[str, str] = {}
    target_root = out / patient_id
    for series in sorted(p for p in patient_dir.glob("*/*") if p.is_dir()):
        files = sorted(p for p in series.iterdir() if p.is_file())
        dicoms = [f for f in files if f.suffix.lower() != ".xml"]
        for file in dicoms:
            dataset = pydicom.dcmread(file)
            for tag in _UID_TAGS:
                if tag in dataset:
                    old = str(dataset.data_element(tag).value)
                    mapping.setdefault(old, new_uid(old, patient_id))
                    setattr(dataset, tag, mapping[old])
            dataset.PatientID = patient_id
            dataset.PatientName = patient_id
            if getattr(dataset, "file_meta", None) is not None and "SOPInstanceUID" in dataset:
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            study = mapping.get(series.parent.name, series.parent.name)
            folder = target_root / study / mapping.get(series.name, series.name)
            folder.mkdir(parents=True, exist_ok=True)
            dataset.save_as(folder / file.name, enforce_file_format=True)
        study = mapping.get(series.parent.name, series.parent.name)
        folder = target_root / study / mapping.get(series.name, series.name)
        for xml in (f for f in files if f.suffix.lower() == ".xml"):
            text = xml.read_text(encoding="utf-8", errors="surrogateescape")
            for old, new in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                text = text.replace(old, new)
            (folder / xml.name).write_text(text, encoding="utf-8", errors="surrogateescape")
        if record:
            _write_record(folder, patient_id)
    return target_root


def _write_record(folder: Path, patient_id: str) -> None:
    import hashlib
    import json

    from medlens.data.tcia import RECORD

    files = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        files[file.name] = hashlib.md5(file.read_bytes()).hexdigest()
    (folder / RECORD).write_text(json.dumps({"patient_id": patient_id, "source": "replicate", "files": files},
                                            indent=1), encoding="utf-8")


def lengthen_patient(patient_dir: str | Path, out: str | Path, n_slices: int) -> Path:
    """Copy one patient folder of the download tree with each series lengthened to ``n_slices`` slices.

    Each series' slices stay as they are; slices are added on the series' own grid (its first position and
    median gap) so that the series covers every ``imageZposition`` of its reader XML, then equally below and
    above it up to ``n_slices`` (more when the XML needs more). An added slice is a copy of the nearest real
    one with a new ``ImagePositionPatient``, ``SliceLocation`` and ``InstanceNumber``, and as
    ``SOPInstanceUID`` the one the XML gives for that position (else a UID derived from the series' UID and the
    position). Patient, study and series UIDs are kept: replicate the result for distinct patients.
    Returns the new patient folder (``out/<patient folder name>``).
    """
    import numpy as np

    from medlens.data.readers.lidc_xml import read_lidc_xml

    patient_dir, out = Path(patient_dir), Path(out)
    target_root = out / patient_dir.name
    for series in sorted(p for p in patient_dir.glob("*/*") if p.is_dir()):
        files = sorted(p for p in series.iterdir() if p.is_file() and not p.name.startswith("."))
        xmls = [f for f in files if f.suffix.lower() == ".xml"]
        slices = sorted(((float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]), f)
                         for f in files if f.suffix.lower() != ".xml"))
        z = np.array([zz for zz, _ in slices])
        step = float(np.median(np.diff(z)))
        named = {round(r.z, 3): r.sop_uid for x in xmls for s in read_lidc_xml(x) for n in s.nodules for r in n.rois}
        wanted = [*z, *named]
        low = int(np.floor((min(wanted) - z[0]) / step + 1e-6))
        high = int(np.ceil((max(wanted) - z[0]) / step - 1e-6))
        extra = max(0, n_slices - (high - low + 1))
        low, high = low - extra // 2, high + extra - extra // 2
        folder = target_root / series.parent.name / series.name
        folder.mkdir(parents=True, exist_ok=True)
        series_uid = None
        for number, k in enumerate(range(low, high + 1), start=1):
            position = z[0] + k * step
            near = int(np.argmin(np.abs(z - position)))
            if abs(z[near] - position) < 1e-3:
                shutil.copy2(slices[near][1], folder / slices[near][1].name)
                continue
            dataset = pydicom.dcmread(slices[near][1])
            series_uid = series_uid or str(dataset.SeriesInstanceUID)
            dataset.ImagePositionPatient = [*dataset.ImagePositionPatient[:2], f"{position:.6f}"]
            if "SliceLocation" in dataset:
                dataset.SliceLocation = f"{position:.6f}"
            dataset.InstanceNumber = number
            dataset.SOPInstanceUID = named.get(round(position, 3)) or generate_uid(
                entropy_srcs=[series_uid, f"{position:.6f}"])
            if getattr(dataset, "file_meta", None) is not None:
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.save_as(folder / f"{position:.6f}.dcm", enforce_file_format=True)
        for xml in xmls:
            shutil.copy2(xml, folder / xml.name)
    return target_root


def replicate_archive(patient_dirs: list[Path], out: str | Path, n_patients: int, prefix: str = "REPL",
                      record: bool = False) -> list[Path]:
    """``n_patients`` copies, cycling through ``patient_dirs``, named ``<prefix>-<00001>``…; existing copies kept.

    ``record`` writes the download record of each series (see :func:`replicate_patient`)."""
    out = Path(out)
    made = []
    for i in range(n_patients):
        patient_id = f"{prefix}-{i + 1:05d}"
        target = out / patient_id
        if not target.exists():
            partial = out / f".{patient_id}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            replicate_patient(patient_dirs[i % len(patient_dirs)], partial, patient_id, record)
            (partial / patient_id).rename(target)
            shutil.rmtree(partial, ignore_errors=True)
        made.append(target)
    return made
