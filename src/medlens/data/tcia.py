"""LIDC-IDRI downloaded series by series from The Cancer Imaging Archive's public REST API (NBIA).

Why TCIA's NBIA API and not NCI's Imaging Data Commons
------------------------------------------------------
Both serve the same 1,018 CT series of LIDC-IDRI without an account. The issue asked to choose by measuring;
this machine has no network, so the choice was made from the documentation alone and **was not measured**:

* the builder (:mod:`medlens.data.lidc_build`) needs the readers' ``LidcReadMessage`` XML beside each series.
  TCIA's series download carries it in the series folder (the folder tree of the NBIA Data Retriever, which
  pylidc and the LIDC tutorials read); IDC serves the DICOM instances only and gives the annotations as DICOM SR
  and SEG conversions (Fedorov et al., the "LIDC-IDRI" conversion in IDC), not the XML;
* ``getImageWithMD5Hash`` returns each file's md5 with the series, so every file is checked;
* IDC's bulk download runs the ``s5cmd`` binary against its public buckets (``idc-index``), one more program
  to install; the NBIA API needs nothing beyond HTTP.

IDC's buckets may well be faster from a cloud machine: measure before choosing it for a large download.

Endpoints (TCIA REST API guide, https://wiki.cancerimagingarchive.net/x/ZoATBg; the base URL and the v4 paths
as used by TCIA's own ``tcia_utils`` package, ``nbia.py``, 2026)
-----------------------------------------------------------------------------------------------------------
``GET {base}/getSeries?Collection=LIDC-IDRI&Modality=CT``
    JSON array, one object per series, among others ``PatientID``, ``StudyInstanceUID``,
    ``SeriesInstanceUID``, ``Modality``, ``ImageCount`` and ``FileSize`` (bytes).
``GET {base}/getImageWithMD5Hash?SeriesInstanceUID=UID``
    ``application/zip``: the series' files and ``md5hashes.csv`` (a header line, then ``file name,md5`` per
    file). The server honours ``Range: bytes=N-`` (HTTP 206), which resumes a broken transfer.

Layout written (the tree of TCIA's download tool, which ``medlens data build lidc-idri`` reads)::

    OUT/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<files>
    OUT/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/.medlens-series.json   (files, md5s, source)

A series is written to a hidden folder under ``OUT/.partial`` and moved into place only when every file matches
its md5, so a series folder without its record is never complete. Series already in place and verified are
skipped; a half-received zip resumes from its last byte; series are fetched in parallel.

Checking a downloaded archive later (``medlens data verify lidc-idri``, :func:`verify_archive`): every series
folder's files against the md5s of its record, which are TCIA's, checked when the file arrived. What that cannot
tell is said in the report: series folders without a record (copied in, or from another download tool) are not
checked, and whether the archive holds every series TCIA has needs TCIA's listing (``medlens data fetch
lidc-idri`` again, which fetches only what is missing).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from medlens.data.fetch import FileCheck, VerifyReport
from medlens.errors import ChecksumError, DownloadError

NBIA_BASE = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4"
COLLECTION = "LIDC-IDRI"
RECORD = ".medlens-series.json"
MD5_LIST = "md5hashes.csv"
TIMEOUT_S = 120.0
CHUNK_BYTES = 1 << 20
THREADS = 4


@dataclass(frozen=True)
class Series:
    """One series as ``getSeries`` lists it."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    image_count: int
    file_size: int

    def folder(self, out: Path) -> Path:
        return out / self.patient_id / self.study_uid / self.series_uid


@dataclass
class FetchReport:
    """What :func:`fetch_lidc_idri` did, series by series."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _get(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"{url}: {exc}; TCIA's API could not be reached (is this machine online?)") from exc


def list_series(base: str = NBIA_BASE, collection: str = COLLECTION, modality: str = "CT") -> list[Series]:
    """Every series of ``collection`` with ``modality``, sorted by patient then series UID (``getSeries``)."""
    url = f"{base}/getSeries?" + urllib.parse.urlencode({"Collection": collection, "Modality": modality})
    with _get(url) as response:
        body = response.read()
    try:
        rows = json.loads(body or b"[]")
        series = [Series(str(r["PatientID"]), str(r["StudyInstanceUID"]), str(r["SeriesInstanceUID"]),
                         str(r.get("Modality", "")), int(r.get("ImageCount") or 0), int(r.get("FileSize") or 0))
                  for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"{url}: unexpected getSeries answer ({exc}): {body[:200]!r}") from exc
    return sorted(series, key=lambda s: (s.patient_id, s.series_uid))


def choose(series: list[Series], patients: Sequence[str] | int | None) -> list[Series]:
    """The series of the first ``patients`` patients (an int), of the named patient IDs, or all (None).

    Raises
    ------
    DownloadError
        A named patient has no series in the listing.
    """
    if patients is None:
        return series
    ids = sorted({s.patient_id for s in series})
    if isinstance(patients, int):
        wanted = set(ids[:patients])
    else:
        wanted = set(patients)
        unknown = sorted(wanted - set(ids))
        if unknown:
            raise DownloadError(f"no {COLLECTION} series for patient(s) {', '.join(unknown)}; "
                                f"IDs look like {ids[0] if ids else 'LIDC-IDRI-0001'}")
    return [s for s in series if s.patient_id in wanted]


def _md5(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a series whose record lists every file with the md5 it now has."""
    record = folder / RECORD
    if not record.is_file():
        return False
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError):
        return False
    return all((folder / name).is_file() and _md5(folder / name) == md5 for name, md5 in files.items())


def _receive(url: str, part: Path) -> None:
    """Stream ``url`` into ``part``, continuing after the bytes already there when the server allows it."""
    have = part.stat().st_size if part.exists() else 0
    response = _get(url, {"Range": f"bytes={have}-"} if have else None)
    received = 0
    try:
        with response:
            announced = response.headers.get("Content-Length")
            mode = "ab" if have and response.status == 206 else "wb"
            with part.open(mode) as out:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
        if announced is not None and received < int(announced):
            raise DownloadError(f"{announced} bytes announced, {received} received")
    except (http.client.HTTPException, OSError, DownloadError) as exc:  # the bytes so far stay for the next try
        raise DownloadError(f"{url}: the transfer broke after {part.stat().st_size} bytes ({exc}); "
                            "run the same command again to resume") from exc


def _unpack(zip_path: Path, into: Path, source: str) -> dict[str, str]:
    """Extract the series' files into ``into``, checking each against ``md5hashes.csv``; their md5s."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{source}: not a complete zip ({exc})") from exc
    with archive:
        names = {Path(n).name: n for n in archive.namelist() if not n.endswith("/")}
        if MD5_LIST not in names:
            raise DownloadError(f"{source}: the zip has no {MD5_LIST}, so its files cannot be checked")
        listed = {}
        with archive.open(names.pop(MD5_LIST)) as fh:
            for row in list(csv.reader(io.TextIOWrapper(fh, encoding="utf-8")))[1:]:
                if len(row) >= 2:
                    listed[Path(row[0]).name] = row[1].strip().lower()
        into.mkdir(parents=True, exist_ok=True)
        done = {}
        for name, member in names.items():
            target = into / name
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
            actual = _md5(target)
            if name in listed and listed[name] != actual:
                raise ChecksumError(f"{source}: {name} has md5 {actual}, {MD5_LIST} says {listed[name]}")
            done[name] = actual
        missing = sorted(set(listed) - set(done))
        if missing:
            raise DownloadError(f"{source}: {MD5_LIST} lists {len(missing)} file(s) absent from the zip: "
                                f"{', '.join(missing[:3])}")
    return done


def fetch_series(series: Series, out: Path, base: str = NBIA_BASE) -> bool:
    """Download one series into its folder under ``out``; False when it was already complete."""
    target = series.folder(out)
    if is_complete(target):
        return False
    partial = out / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    url = f"{base}/getImageWithMD5Hash?" + urllib.parse.urlencode({"SeriesInstanceUID": series.series_uid})
    part = partial / f"{series.series_uid}.zip.part"
    staging = partial / series.series_uid
    shutil.rmtree(staging, ignore_errors=True)
    _receive(url, part)
    try:
        files = _unpack(part, staging, f"series {series.series_uid} of {series.patient_id} ({url})")
    except (DownloadError, ChecksumError):
        part.unlink(missing_ok=True)  # a zip that fails its check is fetched again from the start
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = {"patient_id": series.patient_id, "study_uid": series.study_uid, "series_uid": series.series_uid,
              "source": url, "files": files}
    (staging / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete folder from an older run
    os.replace(staging, target)
    part.unlink(missing_ok=True)
    return True


def fetch_lidc_idri(out: str | Path, patients: Sequence[str] | int | None = None, *, base: str = NBIA_BASE,
                    threads: int = THREADS, on_series: Callable[[Series, str], None] | None = None,
                    series: list[Series] | None = None) -> FetchReport:
    """Download LIDC-IDRI CT series (and their reader XML) into ``out``, in parallel, resumable, md5-checked.

    Parameters
    ----------
    out : str or Path
        Folder of the download tree (see the module docstring).
    patients : int, sequence of str or None
        The first N patients in ID order, the given patient IDs, or every patient.
    base : str
        The NBIA API's base URL (a loopback server in tests).
    threads : int
        Series fetched at once.
    on_series : callable, optional
        Called with each series and ``"downloaded"``, ``"present"`` or ``"failed: <reason>"`` when it is done.
    series : list of Series, optional
        The listing, if already fetched with :func:`list_series`.

    Returns
    -------
    FetchReport
        Series downloaded, already present, and failed with the reason; one failure does not stop the others.
    """
    out = Path(out).expanduser()
    chosen = choose(series if series is not None else list_series(base), patients)
    report = FetchReport()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        jobs = {pool.submit(fetch_series, s, out, base): s for s in chosen}
        for job in as_completed(jobs):
            s = jobs[job]
            try:
                state = "downloaded" if job.result() else "present"
                (report.downloaded if state == "downloaded" else report.present).append(s.series_uid)
            except (DownloadError, ChecksumError, OSError) as exc:
                state = f"failed: {exc}"
                report.failed[s.series_uid] = str(exc)
            if on_series is not None:
                on_series(s, state)
    return report


@dataclass
class ArchiveReport(VerifyReport):
    """:func:`verify_archive`'s result: the files of the recorded series against their record, and what was not
    checked."""

    series: int = 0
    """Series folders with a download record, whose files were checked."""
    unrecorded: list[str] = field(default_factory=list)
    """Series folders (relative paths) without a readable record: their files could not be checked."""
    unlisted: list[str] = field(default_factory=list)
    """Files in a recorded series folder that its record does not list (not from the download)."""
    unfinished: int = 0
    """Downloads left in ``.partial`` by an interrupted fetch (not part of the archive yet)."""

    @property
    def ok(self) -> bool:
        return self.series > 0 and all(c.ok for c in self.checks) and not self.unrecorded and not self.unlisted

    def summary(self) -> str:
        good = len(self.checks) - len(self.failures)
        state = "ok" if self.ok else "NOT verified"
        parts = [f"{self.name} at {self.location}: {self.series} series with a download record, {good}/"
                 f"{len(self.checks)} files match the md5 recorded at download (TCIA's)"]
        if self.failures:
            parts.append(f"{len(self.failures)} bad ({len(self.missing)} missing)")
        if self.unrecorded:
            parts.append(f"{len(self.unrecorded)} series folder(s) without a record, not checked")
        if self.unlisted:
            parts.append(f"{len(self.unlisted)} file(s) not in their series' record")
        if self.unfinished:
            parts.append(f"{self.unfinished} unfinished download(s) in .partial (run `medlens data fetch "
                         "lidc-idri` again)")
        parts.append("not checked: whether every series of TCIA's listing is here (needs the network: `medlens data "
                     f"fetch lidc-idri` fetches only what is missing); {state}")
        return "; ".join(parts)


def verify_archive(root: str | Path, progress: bool = False) -> ArchiveReport:
    """Check a downloaded LIDC-IDRI folder against the download records (:data:`RECORD`) of its series.

    Every folder under ``root`` (hidden ones such as ``.partial`` aside) that holds files or a record is a
    series folder. With a record, each file it lists is hashed and compared with the md5 recorded at download
    (each checked then against TCIA's ``md5hashes.csv``); a listed file that is gone is missing, a file the
    record does not list is reported. Without a readable record the folder cannot be checked and is reported.

    Returns
    -------
    ArchiveReport
        ``ok`` when at least one series was checked, every file matched, and no folder lacked a record or
        held a file outside it.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from medlens.data.fetch import _console

    root = Path(root)
    report = ArchiveReport("lidc-idri", root)
    expected: list[tuple[Path, str, str]] = []  # (folder, file name, md5)
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        visible = sorted(f for f in files if not f.startswith("."))
        if not visible and RECORD not in files:
            continue
        rel = here.relative_to(root).as_posix()
        listed = _recorded_files(here)
        if listed is None:
            report.unrecorded.append(rel)
            continue
        report.series += 1
        expected.extend((here, name, str(md5)) for name, md5 in sorted(listed.items()))
        report.unlisted.extend(f"{rel}/{name}" for name in visible if name not in listed)
    partial = root / ".partial"
    if partial.is_dir():  # <uid>.zip.part and the <uid> folder it is unpacked into
        report.unfinished = len({p.name.removesuffix(".zip.part") for p in partial.iterdir()})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console, disable=not progress) as bar:
        for folder, name, md5 in bar.track(expected, description="verifying lidc-idri"):
            file = folder / name
            report.checks.append(FileCheck(f"{folder.relative_to(root).as_posix()}/{name}", md5,
                                           _md5(file) if file.is_file() else None))
    for what, items in (("no download record, not checked", [f"{r}/" for r in report.unrecorded]),
                        ("not in its series' download record", report.unlisted)):
        report.notes.extend(f"{what}: {item}" for item in items[:20])
        if len(items) > 20:
            report.notes.append(f"{what}: ... and {len(items) - 20} more")
    return report


def _recorded_files(folder: Path) -> dict[str, str] | None:
    """``{file name: md5}`` of the folder's download record, None when there is none or it cannot be read."""
    try:
        listed = json.loads((folder / RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        return None
    return listed
