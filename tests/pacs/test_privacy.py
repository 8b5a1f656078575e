"""Outside DICOM objects a PACS run writes no patient name, ID or birth date, unless asked.

The series stored in Orthanc is LIDC-IDRI-0001's with a made-up identity (LIDC is de-identified: it has no
name or birth date to leak), as a new study. Every file the query, pull and predict commands write is read,
except the DICOM objects themselves (the pulled series, the SEG and the SR, which must carry the patient
module), and so is everything they print.
"""

from __future__ import annotations

import io

import pandas as pd
import pydicom
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medlens.cli import app
from medlens.data.identifiers import pseudonym

PATIENT_ID, NAME, BIRTH_DATE = "MRN-00421337", "Doe^Jane", "19450312"
IDENTIFIERS = (PATIENT_ID, "Doe", "Jane", BIRTH_DATE, "1945-03-12")


def _store_identified_copy(orthanc, lidc_series_dir) -> str:
    study, series = generate_uid(), generate_uid()
    encoded = []
    for path in sorted(lidc_series_dir.glob("*.dcm")):
        dataset = pydicom.dcmread(path)
        dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate = PATIENT_ID, NAME, BIRTH_DATE
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        encoded.append(buffer.getvalue())
    orthanc.clear()
    orthanc.upload(encoded)
    return study


def _run(args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _leaks(folder, printed: str) -> dict[str, list[str]]:
    """Identifiers found in each non-DICOM file under ``folder`` and in the printed output."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[128:132] == b"DICM":
            continue  # a DICOM object: the patient module belongs there
        text = data.decode("utf-8", errors="replace")
        hits = [i for i in IDENTIFIERS if i in text]
        if hits:
            found[str(path.relative_to(folder))] = hits
    hits = [i for i in IDENTIFIERS if i in printed]
    if hits:
        found["printed output"] = hits
    return found


def test_a_pacs_run_writes_pseudonyms_only(orthanc, lidc_series_dir, nodule_bundle, nodule_segmenter, tmp_path):
    study = _store_identified_copy(orthanc, lidc_series_dir)
    work = tmp_path / "work"
    printed = _run(["pacs", "query", orthanc.dicomweb, "--patient", PATIENT_ID, "--out", work / "studies.csv"])
    printed += _run(["pacs", "query", orthanc.dimse, "--patient", PATIENT_ID])
    printed += _run(["pacs", "pull", orthanc.dimse, "--study", study, "--out", work / "pulled"])
    printed += _run(["predict", nodule_bundle, "--segmenter", nodule_segmenter, "--pacs", orthanc.dicomweb,
                     "--study", study, "--push", "--out", work / "results"])
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    assert {"studies.csv", "pulled/pull.json", "results/findings.csv", "results/run.json", "results/seg.dcm",
            "results/sr.dcm"} <= set(written)
    assert _leaks(work, printed) == {}
    # the pseudonym is there instead, and the DICOM objects keep the patient module
    alias = pseudonym(PATIENT_ID)
    assert set(pd.read_csv(work / "results/findings.csv")["patient_pseudonym"]) == {alias}
    assert pd.read_csv(work / "studies.csv")["patient_pseudonym"].tolist() == [alias]
    sr = pydicom.dcmread(work / "results/sr.dcm")
    assert (sr.PatientID, str(sr.PatientName), sr.PatientBirthDate) == (PATIENT_ID, NAME, BIRTH_DATE)


def test_keep_identifiers_writes_them_and_the_check_sees_it(orthanc, lidc_series_dir, tmp_path):
    _store_identified_copy(orthanc, lidc_series_dir)
    work = tmp_path / "work"
    printed = _run(["pacs", "query", orthanc.dicomweb, "--patient", PATIENT_ID, "--keep-identifiers",
                    "--out", work / "studies.csv"])
    assert _leaks(work, printed) == {"studies.csv": [PATIENT_ID, "Doe", "Jane", BIRTH_DATE]}
