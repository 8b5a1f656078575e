"""Find a catalogued dataset on disk, download it when asked, and check it against its md5 sums.

Resolution order of :func:`resolve` (the first that exists wins):

1. an explicit ``path`` (the dataset's file or folder, or a data root that holds its ``local_path``);
2. ``$MEDLENS_DATA/<local_path>`` (the shared real-data folder);
3. the user cache, ``$MEDLENS_CACHE/<local_path>`` or ``~/.cache/medlens/<local_path>``;
4. a download into the user cache, only when ``download=True`` and the catalogue has a verified URL.

A download streams into a temporary file in the target folder, computing the md5 as it goes, and is renamed
onto the target only when the md5 equals the catalogue's, so a failed or interrupted download never leaves
a file that looks complete.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from medlens.data.catalog import DatasetInfo, get
from medlens.files import partial_path, remove_stale_partials
from medlens.errors import (
    ChecksumError,
    DatasetError,
    DownloadError,
    MissingPathError,
    UnreadableFileError,
)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
_console = Console(stderr=True)


class DownloadChecksumError(DownloadError, ChecksumError):
    """A download finished but its md5 differs from the catalogue's (caught as either parent)."""


def data_root() -> Path | None:
    """The folder named by ``MEDLENS_DATA``, or None when the variable is unset or empty."""
    root = os.environ.get("MEDLENS_DATA")
    return Path(root).expanduser() if root else None


def cache_dir() -> Path:
    """The user cache: ``$MEDLENS_CACHE``, else ``~/.cache/medlens``."""
    root = os.environ.get("MEDLENS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "medlens"


def md5sum(path: str | Path) -> str:
    """Hex md5 digest of a file (read in blocks by :func:`hashlib.file_digest`).

    Raises
    ------
    MissingPathError
        When ``path`` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(path, "file")
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _in_explicit(info: DatasetInfo, path: Path) -> Path:
    """The dataset inside an explicit ``path``: the path itself, or for a single-file set given a folder,
    ``path/<local_path>`` or ``path/<file name>``."""
    if not path.exists():
        raise MissingPathError(path, f"file or folder for dataset {info.name}")
    if info.layout == "folder" or path.is_file():
        return path
    inside = [path / info.local_path, path / Path(info.local_path).name]
    for candidate in inside:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{path}: is a folder without {info.name}'s file (looked for {', '.join(str(c) for c in inside)})"
    )


def _search_roots() -> list[Path]:
    """The roots searched after an explicit path: MEDLENS_DATA, then the user cache."""
    return [root for root in (data_root(), cache_dir()) if root is not None]


def find_local(name: str, path: str | Path | None = None) -> Path | None:
    """Where dataset ``name`` is on disk (steps 1-3 of :func:`resolve`), or None when it is nowhere.

    An explicit ``path`` that does not hold the dataset raises instead of falling through, so that a typo
    is never hidden by a copy found elsewhere.
    """
    info = get(name)
    if path is not None:
        return _in_explicit(info, Path(path).expanduser())
    for root in _search_roots():
        candidate = root / info.local_path
        if candidate.exists():
            return candidate
    return None


def _how_to_get(info: DatasetInfo) -> str:
    from medlens.data.github import github_source

    where = f"$MEDLENS_DATA/{info.local_path}"
    source = github_source(info.name)
    if source is not None:
        return (f"run `medlens data fetch {info.name}` to download it ({source.describe()}, each file checked "
                f"against its md5), or put the data at {where} and set MEDLENS_DATA to that data folder")
    if info.name == "lidc-idri":
        return ("run `medlens data fetch lidc-idri --patients N` to download series from TCIA (1,010 patients, "
                "about 124 GB in all), then `medlens data build lidc-idri RAW --out DIR`")
    if info.url is None:
        return (
            f"{info.name} has no verified direct download. Upstream: {info.source}. {info.notes} "
            f"Put the data at {where} and set MEDLENS_DATA to that data folder, or pass its path explicitly"
        )
    return (
        f"run `medlens data fetch {info.name}` to download it from {info.url} (md5 {info.md5}), or copy the "
        f"file to {where} and set MEDLENS_DATA to that data folder"
    )


def resolve(
    name: str, path: str | Path | None = None, download: bool = False, progress: bool = True
) -> Path:
    """The local file or folder of dataset ``name``, downloading it only when ``download`` is true.

    Parameters
    ----------
    name : str
        Catalogue name (see :func:`medlens.data.catalog.names`).
    path : str or Path, optional
        Explicit location; wins over every other place and must exist.
    download : bool
        Download into the user cache when the set is found nowhere else.
    progress : bool
        Show a progress bar while downloading.

    Raises
    ------
    DatasetError
        Unknown name, or the set is absent and ``download`` is false (the message says where it looked and
        how to get it).
    DownloadError
        The download failed (offline, server error, truncated, wrong md5).
    """
    info = get(name)
    found = find_local(name, path)
    if found is not None:
        return found
    if download:
        return download_dataset(name, progress=progress)
    looked = ", ".join(str(root / info.local_path) for root in _search_roots())
    raise DatasetError(f"{info.name}: not found (looked in {looked}); {_how_to_get(info)}")


def download_dataset(name: str, dest: str | Path | None = None, progress: bool = True) -> Path:
    """Download dataset ``name`` to ``<dest>/<local_path>`` (``dest`` defaults to the user cache).

    A file already there with the right md5 is kept. Returns the path of the verified file, or of the folder
    of a folder set downloaded file by file from its pinned GitHub source (:mod:`medlens.data.github`).

    Raises
    ------
    DownloadError
        The set has no verified URL, or the transfer failed; :class:`DownloadChecksumError` (also a
        :class:`ChecksumError`) when the bytes arrived but their md5 is wrong. No partial or unverified
        file is ever written at the target.
    """
    from medlens.data.github import download_github_set, github_source

    info = get(name)
    target = Path(dest).expanduser() / info.local_path if dest is not None else cache_dir() / info.local_path
    if github_source(info.name) is not None:
        return download_github_set(info.name, target, progress=progress)
    if info.url is None or info.md5 is None:
        raise DownloadError(_how_to_get(info))
    if target.is_file() and md5sum(target) == info.md5:
        return target
    _download(info, target, progress)
    return target


def _download(info: DatasetInfo, target: Path, progress: bool) -> None:
    """Stream ``info.url`` into a temporary file beside ``target`` (``.tmp-<pid>-<name>.part``); rename it onto
    ``target`` once its md5 equals ``info.md5``. The temporary file is removed on every failure, and one left
    by a killed download (its pid no longer runs) is removed by the next download of the same file."""

    def failed(reason: str) -> str:
        return (
            f"could not download {info.name} from {info.url} (expected md5 {info.md5}): {reason}. "
            f"Without network, copy the file to $MEDLENS_DATA/{info.local_path} and set MEDLENS_DATA to that "
            "data folder, or pass its path explicitly"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    part = f"{target.name}.part"
    remove_stale_partials(target.parent, recursive=False, name=part)  # left by a killed download
    temp = partial_path(target.with_name(part))
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        digest = hashlib.md5()
        received = 0
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(info.url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=_console, disable=not progress) as bar:
                task = bar.add_task(f"{info.name}", total=total)
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.advance(task, len(chunk))
        if total is not None and received != total:
            raise DownloadError(failed(f"the connection ended after {received} of {total} bytes"))
        actual = digest.hexdigest()
        if actual != info.md5:
            raise DownloadChecksumError(failed(f"the {received} bytes received have md5 {actual}"))
        temp.chmod(0o644)
        os.replace(temp, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DownloadError(failed(str(exc) or type(exc).__name__)) from exc
    finally:
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class FileCheck:
    """One file's md5 against the catalogue (``actual`` is None when the file is missing)."""

    path: str
    expected: str
    actual: str | None

    @property
    def ok(self) -> bool:
        return self.actual == self.expected


@dataclass
class VerifyReport:
    """The result of :func:`verify`: every file checked, with its expected and actual md5."""

    name: str
    location: Path
    checks: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines to show beside the failing files: what else was found, or could not be checked."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[FileCheck]:
        return [check for check in self.checks if not check.ok]

    @property
    def missing(self) -> list[str]:
        return [check.path for check in self.checks if check.actual is None]

    def summary(self) -> str:
        """One line: the set, where, and how many files passed."""
        good = len(self.checks) - len(self.failures)
        state = "ok" if self.ok else f"{len(self.failures)} bad ({len(self.missing)} missing)"
        return f"{self.name} at {self.location}: {good}/{len(self.checks)} files match the catalogue md5, {state}"


def _manifest_rows(manifest: Path) -> list[tuple[str, str]]:
    """``(path, md5)`` rows of a ``manifest.csv`` with columns ``md5,bytes,path``."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"md5", "path"} - set(reader.fieldnames or ())
        if missing:
            raise UnreadableFileError(manifest, f"manifest lacks the column(s) {', '.join(sorted(missing))}")
        return [(row["path"], row["md5"]) for row in reader]


def _check(root: Path, relpath: str, expected: str) -> FileCheck:
    file = root / relpath
    return FileCheck(relpath, expected, md5sum(file) if file.is_file() else None)


def verify(name: str, path: str | Path | None = None, strict: bool = False, progress: bool = False) -> VerifyReport:
    """Check the md5 of every file of dataset ``name`` against the catalogue.

    A single-file set checks its archive. A folder set checks its listed ``files``; one with a manifest
    checks ``manifest.csv`` against the catalogue and then every file the manifest lists against the
    manifest's md5 (a manifest that fails its own check is not used further). The LIDC-IDRI archive has no
    list in the catalogue: every series folder is checked against the record ``medlens data fetch lidc-idri``
    wrote beside it (:func:`medlens.data.tcia.verify_archive`, which says what it cannot check).

    Parameters
    ----------
    name : str
        Catalogue name.
    path : str or Path, optional
        Explicit location, as in :func:`resolve` (no download happens).
    strict : bool
        Raise :class:`ChecksumError` when any file is missing or differs.
    progress : bool
        Show a progress bar over the files.
    """
    info = get(name)
    location = resolve(name, path, download=False)
    if info.name == "lidc-idri":  # no file list of its own: each series' download record says what to expect
        from medlens.data.tcia import verify_archive

        report = verify_archive(location, progress=progress)
    else:
        report = VerifyReport(info.name, location)
        _check_listed(info, location, report, progress)
    if strict and not report.ok:
        bad = "; ".join(
            f"{c.path}: {'missing' if c.actual is None else f'md5 {c.actual}, expected {c.expected}'}"
            for c in report.failures[:5]
        )
        more = f" (and {len(report.failures) - 5} more)" if len(report.failures) > 5 else ""
        raise ChecksumError(f"{info.name} at {location}: {bad}{more}")
    return report


def _check_listed(info: DatasetInfo, location: Path, report: VerifyReport, progress: bool) -> None:
    """Add to ``report`` the catalogue's files of the set and, for a folder with a manifest, those it lists."""
    if info.layout == "file":
        report.checks.append(FileCheck(location.name, info.md5 or "", md5sum(location)))
        return
    report.checks.extend(_check(location, rel, md5) for rel, md5 in info.files)
    if info.manifest is not None and report.ok:
        rows = _manifest_rows(location / info.manifest)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=_console, disable=not progress) as bar:
            for rel, md5 in bar.track(rows, description=f"verifying {info.name}"):
                report.checks.append(_check(location, rel, md5))


def ensure_dataset(name: str, path: str | Path | None = None, *, progress: bool = True,
                   say=None) -> Path:
    """The local copy of ``name`` (as :func:`find_local`), downloaded first when it is nowhere and has a source.

    Before downloading, ``say`` (default: a line on stderr) is told what will be downloaded, how large it is and
    where it goes. An explicit ``path`` never triggers a download; nor does a set without a verified source
    (the :class:`DatasetError` says how to get it).
    """
    from medlens.data.github import github_source

    info = get(name)
    found = find_local(name, path)
    if found is not None:
        return found
    source = github_source(info.name)
    if source is None and info.url is None:
        return resolve(name, path, download=False)
    target = cache_dir() / info.local_path
    what = source.describe() if source is not None else f"1 file from {info.url}"
    (say or (lambda line: _console.print(line, highlight=False)))(
        f"{info.name} is not on this machine: downloading it ({what}) into {target}")
    return download_dataset(name, progress=progress)
