"""What medlens asks of a PACS, whatever the protocol: find, retrieve, store.

:func:`connect` turns an address (:mod:`medlens.pacs.address`) into a :class:`Pacs`: a
:class:`~medlens.pacs.dicomweb.DicomWebPacs` (QIDO-RS, WADO-RS, STOW-RS with ``dicomweb-client``) or a
:class:`~medlens.pacs.dimse.DimsePacs` (C-FIND, C-GET or C-MOVE, C-STORE with ``pynetdicom``). Both answer
with the records below and raise :class:`~medlens.errors.PacsError` naming the server (and the UID) when
the server cannot be reached, refuses, or answers with an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from medlens.pacs.address import DICOMWEB, PacsAddress, check_ae_title, parse_address

DEFAULT_AET = "MEDLENS"
TIMEOUT_S = 30.0
"""Seconds to wait for a connection or an answer before the server counts as unreachable."""


@dataclass(frozen=True)
class StudyQuery:
    """Study-level search keys; ``None`` matches anything.

    ``date`` is a DICOM date ``YYYYMMDD`` or range ``YYYYMMDD-YYYYMMDD`` (either end may be left open).
    """

    patient_id: str | None = None
    modality: str | None = None
    date: str | None = None
    study_uid: str | None = None

    def keys(self) -> dict[str, str]:
        """The set keys as DICOM keywords: ``PatientID``, ``ModalitiesInStudy``, ``StudyDate``,
        ``StudyInstanceUID``."""
        pairs = {"PatientID": self.patient_id, "ModalitiesInStudy": self.modality, "StudyDate": self.date,
                 "StudyInstanceUID": self.study_uid}
        return {k: v for k, v in pairs.items() if v}

    def describe(self) -> str:
        """The search for messages: every key but the patient ID, which is only said to be set."""
        shown = [f"{k}={v}" if k != "PatientID" else "a patient ID" for k, v in self.keys().items()]
        return ", ".join(shown) or "all studies"


@dataclass(frozen=True)
class StudyRecord:
    """One study as a PACS lists it (counts are None where the server leaves them out)."""

    study_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    date: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass(frozen=True)
class SeriesRecord:
    """One series of a study."""

    series_uid: str
    modality: str
    number: int | None
    description: str
    n_instances: int | None


@dataclass(frozen=True)
class InstanceRecord:
    """One instance of a series."""

    sop_uid: str
    sop_class_uid: str


class Pacs(Protocol):
    """A PACS as medlens uses it; every method raises :class:`~medlens.errors.PacsError` on failure."""

    address: PacsAddress

    def find_studies(self, query: StudyQuery) -> list[StudyRecord]: ...

    def find_series(self, study_uid: str) -> list[SeriesRecord]: ...

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceRecord]: ...

    def retrieve_series(self, study_uid: str, series_uid: str, instances: list[InstanceRecord],
                        folder: Path) -> list[Path]:
        """Write the series' instances into ``folder`` as ``<SOPInstanceUID>.dcm``; their paths."""

    def store(self, files: list[Path]) -> list[str]:
        """Send DICOM files; the SOP Instance UIDs the server acknowledged as stored."""


def text(dataset: Dataset, keyword: str) -> str:
    """An attribute of a query answer as text (``""`` when absent or empty)."""
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def number(dataset: Dataset, keyword: str) -> int | None:
    """An integer attribute of a query answer, None when absent or empty."""
    value = dataset.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def study_record(dataset: Dataset) -> StudyRecord:
    """A study-level answer (QIDO-RS JSON or C-FIND identifier) as a record."""
    modalities = dataset.get("ModalitiesInStudy") or []
    if isinstance(modalities, str):
        modalities = [m for m in modalities.split("\\") if m]
    return StudyRecord(study_uid=text(dataset, "StudyInstanceUID"), patient_id=text(dataset, "PatientID"),
                       patient_name=text(dataset, "PatientName"), birth_date=text(dataset, "PatientBirthDate"),
                       date=text(dataset, "StudyDate"), description=text(dataset, "StudyDescription"),
                       modalities=tuple(str(m) for m in modalities),
                       n_series=number(dataset, "NumberOfStudyRelatedSeries"),
                       n_instances=number(dataset, "NumberOfStudyRelatedInstances"))


def series_record(dataset: Dataset) -> SeriesRecord:
    """A series-level answer as a record."""
    return SeriesRecord(series_uid=text(dataset, "SeriesInstanceUID"), modality=text(dataset, "Modality"),
                        number=number(dataset, "SeriesNumber"), description=text(dataset, "SeriesDescription"),
                        n_instances=number(dataset, "NumberOfSeriesRelatedInstances"))


def instance_record(dataset: Dataset) -> InstanceRecord:
    """An instance-level answer as a record."""
    return InstanceRecord(sop_uid=text(dataset, "SOPInstanceUID"), sop_class_uid=text(dataset, "SOPClassUID"))


STUDY_FIELDS = ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "StudyDescription", "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances")
INSTANCE_FIELDS = ("SOPClassUID",)


def connect(url: str, *, aet: str = DEFAULT_AET, move_port: int | None = None, timeout: float = TIMEOUT_S) -> Pacs:
    """A client for the PACS at ``url``.

    Parameters
    ----------
    url : str
        ``http://host:port/dicom-web`` (DICOMweb) or ``dimse://AET@host:port`` (DIMSE).
    aet : str
        medlens's own AE title (DIMSE): the calling title, and the C-MOVE destination.
    move_port : int, optional
        DIMSE: retrieve with C-MOVE to a storage listener medlens opens on this port (the PACS must know
        ``aet`` at this host and port). Default: C-GET, on the association medlens opens itself.
    timeout : float
        Seconds to wait for a connection or an answer.
    """
    address = parse_address(url)
    if address.kind == DICOMWEB:
        from medlens.pacs.dicomweb import DicomWebPacs

        return DicomWebPacs(address, timeout=timeout)
    from medlens.pacs.dimse import DimsePacs

    return DimsePacs(address, aet=check_ae_title(aet, "--aet"), move_port=move_port, timeout=timeout)
