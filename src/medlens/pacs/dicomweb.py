"""DICOMweb (PS3.18) with ``dicomweb-client``: QIDO-RS to search, WADO-RS to retrieve, STOW-RS to store.

Retrieval asks for every instance in the transfer syntax the server holds it in
(``application/dicom; transfer-syntax=*``), so nothing is transcoded on the way (lossless, and the cheapest
for the server); compressed pixel data is decoded by pydicom's plugins when read.

**STOW-RS without chunked transfer encoding.** ``dicomweb-client`` sends a STOW-RS body larger than its
``chunk_size`` (1 MB by default) with ``Transfer-Encoding: chunked``. Some Orthanc versions answered such
requests with 200 and stored nothing (dicomweb-client issue #42). The Orthanc of this project's test suite
(Debian bookworm: Orthanc 1.10.1, DICOMweb plugin 1.7) stores chunked requests correctly
(``tests/pacs/test_orthanc_behaviour.py`` checks it on every run), but a PACS on site may be older, so
medlens sends every STOW-RS request with a ``Content-Length`` instead, and then checks both the answer
(every SOP Instance UID in ``ReferencedSOPSequence``, none in ``FailedSOPSequence``) and, in
:func:`medlens.pacs.push.push_objects`, what a fresh QIDO-RS search finds on the server.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pydicom
import requests
from pydicom.dataset import Dataset

from medlens.errors import PacsError
from medlens.pacs.address import PacsAddress
from medlens.pacs.client import (
    INSTANCE_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    InstanceRecord,
    SeriesRecord,
    StudyQuery,
    StudyRecord,
    instance_record,
    series_record,
    study_record,
)

ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
ATTEMPTS, RETRY_WAIT_MS = 3, 250
"""A request that fails (no connection, or HTTP 408, 429, 503, 504) is tried 3 times, waiting 0.5 s then 1 s
(dicomweb-client's default, 5 attempts with waits of 2 to 16 s, makes an unreachable server take 30 s to report)."""
PAGE = 1000
"""QIDO-RS results asked for per request (``limit``); the next page starts at ``offset``."""
STUDY_UID_TAG, SERIES_UID_TAG, SOP_UID_TAG = "0020000D", "0020000E", "00080018"
UNCHUNKED = 1 << 62
"""A chunk size no request body reaches: STOW-RS bodies are then sent whole, with a Content-Length."""


class DicomWebPacs:
    """A DICOMweb server (see the module docstring)."""

    def __init__(self, address: PacsAddress, timeout: float, session: requests.Session | None = None):
        from dicomweb_client.api import DICOMwebClient

        self.address = address
        self._client = DICOMwebClient(address.url, session=session or requests.Session(), timeout=timeout,
                                      chunk_size=UNCHUNKED)
        self._client.set_http_retry_params(retry=True, max_attempts=ATTEMPTS, wait_exponential_multiplier=RETRY_WAIT_MS)

    @contextlib.contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        """Turn the HTTP client's errors into a :class:`PacsError` naming the server and ``what`` was asked."""
        try:
            yield
        except requests.exceptions.HTTPError as exc:
            response = exc.response
            status = f"HTTP {response.status_code} {response.reason}" if response is not None else str(exc)
            raise PacsError(f"{self.address}: {what} failed: {status}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PacsError(f"{self.address}: cannot reach the server while {what} "
                            f"({exc.__class__.__name__}); check the URL and that the server runs") from exc
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{self.address}: {what} failed ({exc})") from exc

    def find_studies(self, query: StudyQuery) -> list[StudyRecord]:
        with self._answers(f"searching studies ({query.describe()})"):
            found = _paged(self._client.search_for_studies, STUDY_UID_TAG, search_filters=query.keys(),
                           fields=list(STUDY_FIELDS))
        return [study_record(Dataset.from_json(item)) for item in found]

    def find_series(self, study_uid: str) -> list[SeriesRecord]:
        with self._answers(f"searching the series of study {study_uid}"):
            found = _paged(self._client.search_for_series, SERIES_UID_TAG, study_uid, fields=list(SERIES_FIELDS))
        return [series_record(Dataset.from_json(item)) for item in found]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceRecord]:
        with self._answers(f"searching the instances of series {series_uid} (study {study_uid})"):
            found = _paged(self._client.search_for_instances, SOP_UID_TAG, study_uid, series_uid,
                           fields=list(INSTANCE_FIELDS))
        return [instance_record(Dataset.from_json(item)) for item in found]

    def retrieve_series(self, study_uid: str, series_uid: str, instances: list[InstanceRecord],
                        folder: Path) -> list[Path]:
        paths = []
        with self._answers(f"retrieving series {series_uid} (study {study_uid})"):
            for dataset in self._client.retrieve_series(study_uid, series_uid, media_types=ANY_TRANSFER_SYNTAX):
                path = folder / f"{dataset.SOPInstanceUID}.dcm"
                dataset.save_as(path, enforce_file_format=True)
                paths.append(path)
        return paths

    def store(self, files: list[Path]) -> list[str]:
        datasets = [pydicom.dcmread(path) for path in files]
        wanted = [str(ds.SOPInstanceUID) for ds in datasets]
        with self._answers(f"storing {len(files)} object(s) with STOW-RS"):
            answer = self._client.store_instances(datasets)
        failed = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in answer.get("FailedSOPSequence", [])]
        if failed:
            raise PacsError(f"{self.address}: STOW-RS refused {len(failed)} of {len(wanted)} object(s): "
                            f"{', '.join(failed)}")
        stored = [str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence", [])]
        return [uid for uid in wanted if uid in stored]


def _paged(search, uid_tag: str, *args, **kwargs) -> list[dict]:
    """Every result of a QIDO-RS search, :data:`PAGE` at a time.

    dicomweb-client's own ``get_remaining`` asks for pages until one comes back empty; Orthanc 1.10's DICOMweb
    plugin ignores ``offset`` in some searches without ``limit`` (e.g. with ``ModalitiesInStudy``), so that
    loop never ends. Here each request has a ``limit``, a short page is the last, and a page that repeats a
    UID already seen (a server ignoring ``offset``) ends the search too.
    """
    results, seen, offset = [], set(), 0
    while True:
        page = search(*args, limit=PAGE, offset=offset, **kwargs)
        uids = [str((item.get(uid_tag) or {}).get("Value", [""])[0]) for item in page]
        fresh = [item for item, uid in zip(page, uids) if uid not in seen]
        results += fresh
        seen.update(uids)
        if len(page) < PAGE or len(fresh) < len(page):
            return results
        offset += len(page)
