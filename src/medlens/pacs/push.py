"""Push DICOM objects to a PACS, then ask it what arrived.

Nothing is sent unless every object was validated first (:mod:`medlens.pacs.validate`; callers pass
:class:`~medlens.pacs.validate.Validation` results, one per file). The objects go in one STOW-RS request
(DICOMweb; the server stores or refuses each, see :mod:`medlens.pacs.dicomweb` on chunked requests) or one
association of C-STOREs (DIMSE; every object's SOP class must have an accepted presentation context before
the first is sent). Afterwards medlens searches the server for each object's SOP Instance UID in its study
and series (QIDO-RS / C-FIND): an object the server acknowledged but does not list is an error, the silent
loss that some Orthanc versions showed with chunked STOW-RS requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom

from medlens.errors import DicomObjectError, PacsError
from medlens.pacs.client import Pacs
from medlens.pacs.validate import Validation


@dataclass(frozen=True)
class PushResult:
    """What the server acknowledged and what a search found afterwards (SOP Instance UIDs)."""

    server: str
    acknowledged: list[str]
    found: list[str]


def push_objects(pacs: Pacs, validations: list[Validation]) -> PushResult:
    """Send the validated files to ``pacs`` and verify that each one arrived.

    Raises
    ------
    DicomObjectError
        No files, or a file without a validation.
    PacsError
        The server cannot be reached, refuses an object, or does not list an object it acknowledged.
    """
    if not validations:
        raise DicomObjectError("push: no objects to send")
    files = [v.path for v in validations]
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    wanted = [str(h.SOPInstanceUID) for h in headers]
    acknowledged = pacs.store(files)
    server = str(pacs.address)
    missing_answers = [uid for uid in wanted if uid not in acknowledged]
    if missing_answers:
        raise PacsError(f"{server}: the server did not acknowledge {len(missing_answers)} of {len(wanted)} object(s): "
                        f"{', '.join(missing_answers)}")
    found = []
    for study_uid, series_uid in sorted({(str(h.StudyInstanceUID), str(h.SeriesInstanceUID)) for h in headers}):
        listed = {i.sop_uid for i in pacs.find_instances(study_uid, series_uid)}
        found += [str(h.SOPInstanceUID) for h in headers
                  if str(h.SeriesInstanceUID) == series_uid and str(h.SOPInstanceUID) in listed]
    lost = [uid for uid in wanted if uid not in found]
    if lost:
        raise PacsError(f"{server}: acknowledged {len(wanted)} object(s) but does not hold {len(lost)} of them "
                        f"afterwards ({', '.join(lost)}): a filter on the server dropped them, or the server has the "
                        "fault some Orthanc versions show with chunked STOW-RS requests; check the server's log")
    return PushResult(server, acknowledged, found)
