"""Pull a study (or some of its series) from a PACS into a private temporary folder, and check it.

The steps, each of which stops the pull with a :class:`~medlens.errors.PacsError` naming the server and
the UID, after removing everything downloaded so far:

1. list the study's series (QIDO-RS / C-FIND); no series means the server does not hold the study;
2. choose the series: those named, else every series (of ``modality`` when given);
3. list each series' instances: the SOP Instance UIDs the download must bring, checked against the
   series' own instance count (``NumberOfSeriesRelatedInstances``) where the server gives one;
4. retrieve each series (WADO-RS, C-GET or C-MOVE) into a folder created with :func:`tempfile.mkdtemp`
   (readable by this user only);
5. check what arrived: exactly the listed SOP Instance UIDs, and a listing made after the download equal
   to the one made before (a study that changes while it is pulled is refused, not half-used);
6. check that every instance has readable pixel data (:func:`check_pixel_data`) before any model runs.

:class:`PulledStudy` removes its folder when closed (``with pull_study(...) as pulled:``), unless its
series were moved elsewhere with :meth:`PulledStudy.move_to`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pydicom
from pydicom.pixels import get_decoder

from medlens.errors import MedlensError, PacsError
from medlens.pacs.client import InstanceRecord, Pacs, SeriesRecord

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD", "PLAN"})
"""Series of these modalities hold no pixel data by nature (reports, selections, presentation states...)."""


@dataclass
class PulledSeries:
    """One downloaded, checked series."""

    record: SeriesRecord
    folder: Path
    files: list[Path]


@dataclass
class PulledStudy:
    """A downloaded study: its checked series in a private folder, and who it belongs to.

    ``patient_id``, ``patient_name`` and ``birth_date`` come from the first instance; they are for
    pseudonyms (:mod:`medlens.data.identifiers`) and DICOM objects, never for other files.
    """

    server: str
    study_uid: str
    root: Path
    series: list[PulledSeries] = field(default_factory=list)
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""

    @property
    def n_instances(self) -> int:
        return sum(len(s.files) for s in self.series)

    def close(self) -> None:
        """Remove the temporary folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PulledStudy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def move_to(self, out: Path) -> list[Path]:
        """Move each series folder to ``out/<SeriesInstanceUID>/`` (``out`` must be empty or absent; nothing a
        user already has is overwritten); returns the new series folders. The temporary folder is then removed."""
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise MedlensError(f"{out}: exists and is not an empty folder; pull into a new folder")
        out.mkdir(parents=True, exist_ok=True)
        moved = []
        for item in self.series:
            target = out / item.record.series_uid
            shutil.move(str(item.folder), target)
            item.files = [target / f.name for f in item.files]
            item.folder = target
            moved.append(target)
        self.close()
        return moved


def choose_series(server: str, study_uid: str, found: list[SeriesRecord], series_uids: list[str] | None,
                  modality: str | None) -> list[SeriesRecord]:
    """The series to pull (see the module docstring, step 2)."""
    if not found:
        raise PacsError(f"{server}: no study {study_uid} (the server lists no series for it); check the UID with "
                        "`medlens pacs query`")
    if series_uids:
        by_uid = {s.series_uid: s for s in found}
        missing = [uid for uid in series_uids if uid not in by_uid]
        if missing:
            raise PacsError(f"{server}: study {study_uid} has no series {', '.join(missing)}; its series: "
                            f"{_listing(found)}")
        chosen = [by_uid[uid] for uid in series_uids]
    else:
        chosen = list(found)
    if modality:
        wrong = [s for s in chosen if s.modality != modality]
        if series_uids and wrong:
            kind = wrong[0].modality or "of unknown modality"
            raise PacsError(f"{server}: series {wrong[0].series_uid} of study {study_uid} is {kind}, not {modality}")
        chosen = [s for s in chosen if s.modality == modality]
        if not chosen:
            raise PacsError(f"{server}: study {study_uid} has no {modality} series; its series: {_listing(found)}")
    return chosen


def _listing(series: list[SeriesRecord]) -> str:
    return "; ".join(f"{s.series_uid} ({s.modality or '?'}, {s.n_instances if s.n_instances is not None else '?'} "
                     "instances)" for s in series)


def pull_study(pacs: Pacs, study_uid: str, *, series_uids: list[str] | None = None, modality: str | None = None,
               workdir: Path | None = None, every_series_an_image: bool = True,
               on_listed: Callable[[SeriesRecord, list[InstanceRecord]], None] | None = None) -> PulledStudy:
    """Download and check the series of a study (see the module docstring).

    Parameters
    ----------
    pacs : Pacs
        The server (:func:`medlens.pacs.client.connect`).
    study_uid : str
        StudyInstanceUID.
    series_uids : list of str, optional
        SeriesInstanceUIDs to pull; default every series of the study.
    modality : str, optional
        Pull only series of this modality (with ``series_uids``: each must have it).
    workdir : Path, optional
        Where the private temporary folder is created (default the system's temporary folder); put it on
        the file system of a later :meth:`PulledStudy.move_to` target so that the move is a rename.
    every_series_an_image : bool
        Check every series for pixel data (a series for a model); False exempts series of
        :data:`NON_IMAGE_MODALITIES` (a whole study pulled to a folder).
    on_listed : callable, optional
        Called with each series and its listed instances after listing and before retrieving them
        (progress display).

    Returns
    -------
    PulledStudy
        Close it (or use it in a ``with`` block) to remove the files.
    """
    server = str(pacs.address)
    chosen = choose_series(server, study_uid, pacs.find_series(study_uid), series_uids, modality)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="medlens-pull-", dir=workdir))
    pulled = PulledStudy(server=server, study_uid=study_uid, root=root)
    try:
        for number, record in enumerate(chosen):
            folder = root / f"series-{number}"
            folder.mkdir()
            listed = pacs.find_instances(study_uid, record.series_uid)
            _check_listing(server, study_uid, record, listed)
            if on_listed is not None:
                on_listed(record, listed)
            files = pacs.retrieve_series(study_uid, record.series_uid, listed, folder)
            _check_arrived(server, study_uid, record, listed, files)
            _check_unchanged(server, study_uid, record, listed, pacs.find_instances(study_uid, record.series_uid))
            if every_series_an_image or record.modality not in NON_IMAGE_MODALITIES:
                check_pixel_data(server, record.series_uid, files)
            pulled.series.append(PulledSeries(record, folder, sorted(files)))
        first = pydicom.dcmread(pulled.series[0].files[0], stop_before_pixels=True)
        pulled.patient_id = str(first.get("PatientID", ""))
        pulled.patient_name = str(first.get("PatientName", ""))
        pulled.birth_date = str(first.get("PatientBirthDate", ""))
    except BaseException:
        pulled.close()
        raise
    return pulled


def _check_listing(server: str, study_uid: str, record: SeriesRecord, listed: list[InstanceRecord]) -> None:
    if not listed:
        raise PacsError(f"{server}: series {record.series_uid} of study {study_uid} lists no instance")
    if record.n_instances is not None and record.n_instances != len(listed):
        raise PacsError(f"{server}: study {study_uid} changed while being pulled: series {record.series_uid} counted "
                        f"{record.n_instances} instances, then listed {len(listed)}; pull again when it is complete")


def _check_arrived(server: str, study_uid: str, record: SeriesRecord, listed: list[InstanceRecord],
                   files: list[Path]) -> None:
    expected = {i.sop_uid for i in listed}
    arrived = set()
    for path in files:
        try:
            arrived.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, AttributeError... on broken files
            raise PacsError(f"{server}: series {record.series_uid} (study {study_uid}): instance {path.name} arrived "
                            f"unreadable ({exc})") from exc
    if arrived != expected or len(files) != len(expected):
        missing, extra = sorted(expected - arrived), sorted(arrived - expected)
        raise PacsError(f"{server}: study {study_uid} changed while being pulled: series {record.series_uid} listed "
                        f"{len(expected)} instances and {len(files)} arrived ({len(missing)} missing, {len(extra)} not "
                        f"listed{': ' + ', '.join((missing + extra)[:3]) if missing or extra else ''}); pull again")


def _check_unchanged(server: str, study_uid: str, record: SeriesRecord, before: list[InstanceRecord],
                     after: list[InstanceRecord]) -> None:
    if {i.sop_uid for i in before} != {i.sop_uid for i in after}:
        raise PacsError(f"{server}: study {study_uid} changed while being pulled: series {record.series_uid} listed "
                        f"{len(before)} instances before the download and {len(after)} after; pull again")


def check_pixel_data(server: str, series_uid: str, files: list[Path]) -> None:
    """Every file of a series has pixel data that can be decoded.

    Native (uncompressed) pixel data must hold at least ``Rows × Columns × SamplesPerPixel × frames ×
    BitsAllocated / 8`` bytes; encapsulated pixel data needs a pydicom decoder for its transfer syntax
    (the pylibjpeg plugins installed with medlens). The values are decoded later, by the reader.
    """
    for path in files:
        header = pydicom.dcmread(path, defer_size=1024)
        keyword = next((k for k in PIXEL_KEYWORDS if k in header), None)
        where = f"{server}: series {series_uid}, instance {header.get('SOPInstanceUID', path.name)}"
        if keyword is None:
            raise PacsError(f"{where}: no pixel data (modality {header.get('Modality', '?')}, SOP class "
                            f"{header.get('SOPClassUID', '?')}); choose an image series")
        syntax = header.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed:
            try:
                available = get_decoder(syntax).is_available
            except NotImplementedError:
                available = False
            if not available:
                raise PacsError(f"{where}: pixel data in {syntax.name}, which no installed decoder reads")
            continue
        rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples, bits = int(header.get("SamplesPerPixel", 1)), int(header.get("BitsAllocated", 16))
        needed = rows * cols * samples * frames * bits // 8
        length = _value_length(header, keyword)
        if rows == 0 or cols == 0 or length < needed:
            raise PacsError(f"{where}: pixel data of {length} bytes for {rows}×{cols}×{frames} pixels "
                            f"(needs {needed}); the instance is truncated")


def _value_length(header: pydicom.Dataset, keyword: str) -> int:
    """Length in bytes of an element's value, without reading a deferred value from the file."""
    element = header.get_item(keyword, keep_deferred=True)
    length = getattr(element, "length", None)  # a RawDataElement (not yet decoded) knows its length
    return int(length) if length is not None else len(element.value or b"")
