"""Classic DICOM networking (PS3.7 DIMSE, PS3.8 upper layer) with ``pynetdicom``.

* search: C-FIND in the Study Root Query/Retrieve information model, at STUDY, SERIES and IMAGE level;
* retrieve: **C-GET** by default (the PACS sends the instances back on the association medlens opened, with
  medlens in the SCP role for their storage SOP classes, PS3.7 §9.1.3; nothing to configure on the PACS
  beyond allowing C-GET), or **C-MOVE** when a ``move_port`` is given: medlens opens a storage listener
  (Storage SCP) with its own AE title on that port and asks the PACS to send the instances there (the PACS
  must know that AE title at medlens's host and port). The listener binds to 127.0.0.1 when the PACS is
  on the loopback interface, else to every interface;
* store: C-STORE of each file as it is on disk (its own transfer syntax, no re-encoding).

Every received instance is written as it arrived (``event.encoded_dataset()``, the DICOM file format),
``<SOPInstanceUID>.dcm``. An association that cannot be opened is an error naming the server: "cannot reach"
(no TCP connection: wrong host or port, server down) or "rejected" with the reason the PACS gave (e.g. an
unknown called AE title).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import pydicom
from pydicom.dataset import Dataset

from medlens.errors import PacsError
from medlens.network import is_loopback
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

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
WARNING_CLASS = 0xB000
"""Status values 0xB000-0xBFFF are warnings: the operation was done (PS3.7 C.4)."""


def _is_warning(status: int) -> bool:
    return status & 0xF000 == WARNING_CLASS


class DimsePacs:
    """A DICOM application entity reached over DIMSE (see the module docstring)."""

    def __init__(self, address: PacsAddress, aet: str, move_port: int | None, timeout: float):
        self.address = address
        self.aet = aet
        self.move_port = move_port
        self.timeout = timeout

    # ------------------------------------------------------------------------------------------------
    # associations
    # ------------------------------------------------------------------------------------------------
    def _entity(self):
        from pynetdicom import AE

        entity = AE(ae_title=self.aet)
        entity.connection_timeout = self.timeout
        entity.acse_timeout = self.timeout
        entity.dimse_timeout = self.timeout
        entity.network_timeout = self.timeout
        return entity

    def _associate(self, entity, **kwargs: Any):
        """``entity.associate`` to the PACS, tried once more when the first try ends without an answer but
        before the timeout.

        Orthanc answers a wrong called AE title with A-ASSOCIATE-RJ and closes the connection; about one try
        in 70 the close arrives first and pynetdicom reports an abort, not the rejection (measured: 3 of 200
        tries). A quick abort is therefore tried again; a try that ran into the timeout is not.
        """
        for _ in range(2):
            start = time.monotonic()
            assoc = entity.associate(self.address.host, self.address.port, ae_title=self.address.called_aet,
                                     **kwargs)
            if assoc.is_established or assoc.is_rejected or time.monotonic() - start >= self.timeout:
                break
        return assoc

    @contextlib.contextmanager
    def _association(self, entity, what: str, **kwargs: Any) -> Iterator[Any]:
        """An established association to the PACS, released afterwards; a :class:`PacsError` otherwise."""
        assoc = self._associate(entity, **kwargs)
        if not assoc.is_established:
            if assoc.is_rejected:
                answer = assoc.acceptor.primitive
                reason = f"{answer.result_str}: {answer.reason_str}" if answer is not None else "no reason given"
                raise PacsError(f"{self.address}: association rejected while {what} ({reason}); check the called "
                                f"AE title and that the PACS accepts the calling AE title {self.aet}")
            raise PacsError(f"{self.address}: cannot reach the server while {what} (no association: connection "
                            "refused, timed out or aborted); check the host, the port, that the server runs and that "
                            f"it accepts the calling AE title {self.aet}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, level: str, keys: dict[str, str], fields: tuple[str, ...], what: str) -> list[Dataset]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for keyword in fields:
            setattr(identifier, keyword, "")
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        entity = self._entity()
        entity.add_requested_context(FIND)
        found = []
        with self._association(entity, what) as assoc:
            for status, answer in assoc.send_c_find(identifier, FIND):
                code = _status(status, self.address, what, self.aet)
                if code in PENDING:
                    found.append(answer)
                elif code != SUCCESS:
                    raise PacsError(f"{self.address}: {what} failed: C-FIND status 0x{code:04X}")
        return found

    # ------------------------------------------------------------------------------------------------
    # search
    # ------------------------------------------------------------------------------------------------
    def find_studies(self, query: StudyQuery) -> list[StudyRecord]:
        answers = self._find("STUDY", query.keys(), ("StudyInstanceUID",) + STUDY_FIELDS,
                             f"searching studies ({query.describe()})")
        return [study_record(a) for a in answers]

    def find_series(self, study_uid: str) -> list[SeriesRecord]:
        answers = self._find("SERIES", {"StudyInstanceUID": study_uid}, ("SeriesInstanceUID",) + SERIES_FIELDS,
                             f"searching the series of study {study_uid}")
        return [series_record(a) for a in answers]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceRecord]:
        answers = self._find("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
                             ("SOPInstanceUID",) + INSTANCE_FIELDS,
                             f"searching the instances of series {series_uid} (study {study_uid})")
        return [instance_record(a) for a in answers]

    # ------------------------------------------------------------------------------------------------
    # retrieve
    # ------------------------------------------------------------------------------------------------
    def retrieve_series(self, study_uid: str, series_uid: str, instances: list[InstanceRecord],
                        folder: Path) -> list[Path]:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

        # the SOP classes the listing named; a PACS that leaves SOPClassUID out of its C-FIND answers gets the
        # common storage classes (127 of them: a request holds at most 128 presentation contexts)
        classes = sorted({i.sop_class_uid for i in instances if i.sop_class_uid}) or \
            [str(c.abstract_syntax) for c in StoragePresentationContexts[:127]]
        received: list[Path] = []

        def write(event) -> int:
            uid = str(event.request.AffectedSOPInstanceUID)
            path = folder / f"{uid}.dcm"
            path.write_bytes(event.encoded_dataset())
            received.append(path)
            return SUCCESS

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        what = f"retrieving series {series_uid} (study {study_uid})"
        if self.move_port is None:
            self._get(identifier, classes, ALL_TRANSFER_SYNTAXES, write, evt.EVT_C_STORE, what)
        else:
            self._move(identifier, classes, ALL_TRANSFER_SYNTAXES, write, evt.EVT_C_STORE, what)
        return received

    def _get(self, identifier: Dataset, classes: list[str], syntaxes, write, event, what: str) -> None:
        from pynetdicom import build_role
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        entity = self._entity()
        entity.add_requested_context(GET)
        for uid in classes:
            entity.add_requested_context(uid, syntaxes)
        roles = [build_role(uid, scp_role=True) for uid in classes]
        with self._association(entity, what + " with C-GET", ext_neg=roles, evt_handlers=[(event, write)]) as assoc:
            self._check_retrieve(assoc.send_c_get(identifier, GET), what + " with C-GET")

    def _move(self, identifier: Dataset, classes: list[str], syntaxes, write, event, what: str) -> None:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        listener = self._entity()
        for uid in classes:
            listener.add_supported_context(uid, syntaxes)
        bind = "127.0.0.1" if is_loopback(self.address.host) else ""
        try:
            server = listener.start_server((bind, self.move_port), block=False, evt_handlers=[(event, write)])
        except OSError as exc:
            raise PacsError(f"{self.address}: cannot listen for C-MOVE on port {self.move_port} ({exc}); choose "
                            "another port (the PACS must know it for AE title " f"{self.aet})") from exc
        try:
            entity = self._entity()
            entity.add_requested_context(MOVE)
            with self._association(entity, what + " with C-MOVE") as assoc:
                self._check_retrieve(assoc.send_c_move(identifier, self.aet, MOVE), what + " with C-MOVE")
        finally:
            server.shutdown()

    def _check_retrieve(self, answers, what: str) -> None:
        last = None
        for status, _ in answers:
            code = _status(status, self.address, what, self.aet)
            last = (code, status)
            if code not in PENDING and code != SUCCESS and not _is_warning(code):
                hint = (f"; does the PACS know AE title {self.aet} at this host and port {self.move_port}?"
                        if code == 0xA801 else "")
                raise PacsError(f"{self.address}: {what} failed: status 0x{code:04X}{hint}")
        if last is not None:
            failed = int(last[1].get("NumberOfFailedSuboperations", 0) or 0)
            if failed:
                raise PacsError(f"{self.address}: {what}: the PACS reports {failed} instance(s) not sent")

    # ------------------------------------------------------------------------------------------------
    # store
    # ------------------------------------------------------------------------------------------------
    def store(self, files: list[Path]) -> list[str]:
        from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
        entity = self._entity()
        for uid in sorted({str(h.SOPClassUID) for h in headers}):
            syntaxes = sorted({str(h.file_meta.TransferSyntaxUID) for h in headers if str(h.SOPClassUID) == uid}
                              | set(DEFAULT_TRANSFER_SYNTAXES))
            entity.add_requested_context(uid, syntaxes)
        stored = []
        what = f"storing {len(files)} object(s) with C-STORE"
        with self._association(entity, what) as assoc:
            accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
            refused = [h for h in headers if (str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) not in accepted]
            if refused:  # checked before the first C-STORE, so that nothing is half-pushed
                raise PacsError(f"{self.address}: the PACS does not accept {refused[0].SOPClassUID} in "
                                f"{refused[0].file_meta.TransferSyntaxUID} (object {refused[0].SOPInstanceUID}); "
                                "nothing was sent")
            for path, header in zip(files, headers):
                status = assoc.send_c_store(path)
                code = _status(status, self.address, f"storing {header.SOPInstanceUID} with C-STORE", self.aet)
                if code != SUCCESS and not _is_warning(code):
                    raise PacsError(f"{self.address}: C-STORE of {header.SOPInstanceUID} refused: status 0x{code:04X}")
                stored.append(str(header.SOPInstanceUID))
        return stored


def _status(status: Dataset, address: PacsAddress, what: str, aet: str) -> int:
    """The Status of a DIMSE answer; an empty answer (timeout, abort, bad reply) is a :class:`PacsError`."""
    if status is None or "Status" not in status:
        raise PacsError(f"{address}: no valid answer while {what} (timed out, or the PACS aborted the association: "
                        f"does it accept requests from the AE title {aet} at this host?)")
    return int(status.Status)
