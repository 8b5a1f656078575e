"""Prepared folder sets downloaded file by file from a public GitHub repository at a pinned commit.

The prepared copies of ``lidc-nodule-vois``, ``lidc-idri-ct`` and ``lidc-idri-ct-more`` were taken from public
repositories (shared data README, sections 3, 7 and 8). ``github_sources.json`` (beside this module) pins each
set to one commit and lists every file as ``[path in the set, path in the repository, md5, bytes]``, in the order
of the set's ``manifest.csv``. A file is fetched from::

    https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path in the repository>

(GitHub's raw-content host serves a file of any commit by its full SHA; no account is needed), streamed into a
temporary file beside its target with its md5 computed on the way, and renamed onto the target only when the md5
is the recorded one. Files already present with the right md5 are kept, so an interrupted download resumes where
it stopped; files are fetched by a small pool of threads.

Converted files: ``lidc-nodule-vois``'s ``MetadatabyNoduleMaxVoting.csv`` is not in the repository; its source is
the sheet ``ML4PM_MetadatabyNoduleMaxVoting`` of ``data/MetadatabyNoduleMaxVoting.xlsx``, converted exactly as
the shipped CSV was: ``pandas.read_excel(xlsx, sheet_name=SHEET).to_csv(index=False)`` (openpyxl reads the
sheet). The xlsx is checked against its md5 before conversion and the CSV against its own after.

Sets with a ``manifest`` get their ``manifest.csv`` (``md5,bytes,path`` per file) written last, so
:func:`medlens.data.fetch.verify` checks the download like the shared copy.

How ``github_sources.json`` was made (2026-12-04): from the ``manifest.csv`` of the shared copies (and the
manifest table of the shared data README for ``lidc_idri_ct``); each md5 was then compared with the git blob of
the pinned commit in a snapshot of the repository (``PabloLION/ct-slicing`` 07d32ab, 1,988 of 1,988 NIfTI equal;
``drivendataorg/concept-to-clinic`` 3a2cea3, 42 of 42 files equal), and the xlsx conversion above reproduced
the shipped CSV's md5 ``fcbfb302bd884137cda1854f16aedd23``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from medlens.errors import ChecksumError, DownloadError

SOURCES = Path(__file__).with_name("github_sources.json")
RAW_BASE = "https://raw.githubusercontent.com"
"""GitHub's raw-content host (``<base>/<owner>/<repo>/<commit>/<path>``); tests point it at a loopback server."""
THREADS = 8
TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
_console = Console(stderr=True)


@dataclass(frozen=True)
class SourceFile:
    """One file of a set: where it goes, where it comes from, and its md5 and size."""

    path: str
    source: str
    md5: str
    bytes: int
    sheet: str | None = None
    """For a CSV converted from an xlsx sheet: the sheet's name (``source`` is then the xlsx)."""
    source_md5: str | None = None
    source_bytes: int | None = None


@dataclass(frozen=True)
class GithubSource:
    """A set's repository, pinned commit, files and manifest."""

    name: str
    repo: str
    commit: str
    files: tuple[SourceFile, ...]
    manifest: str | None

    @property
    def total_bytes(self) -> int:
        """Bytes to download (the xlsx, not the CSV made from it)."""
        return sum(f.source_bytes or f.bytes for f in self.files)

    def url(self, source_path: str, base: str | None = None) -> str:
        return f"{base or RAW_BASE}/{self.repo}/{self.commit}/{source_path}"

    def describe(self) -> str:
        """One line for the user: how many files, how large, from where."""
        return (f"{len(self.files):,} files, {self.total_bytes / 1e6:.1f} MB, from github.com/{self.repo} at commit "
                f"{self.commit[:7]}")


@functools.cache
def _table() -> dict[str, GithubSource]:
    sets = json.loads(SOURCES.read_text(encoding="utf-8"))["sets"]
    out = {}
    for name, entry in sets.items():
        converted = [SourceFile(c["path"], c["from"], c["md5"], c["bytes"], c["sheet"], c["from_md5"], c["from_bytes"])
                     for c in entry["converted"]]
        files = [SourceFile(path, source, md5, size) for path, source, md5, size in entry["files"]]
        out[name] = GithubSource(name, entry["repo"], entry["commit"], tuple(converted + files), entry["manifest"])
    return out


def github_source(name: str) -> GithubSource | None:
    """The pinned GitHub source of catalogue set ``name``, or None when it has none."""
    return _table().get(name)


def manifest_text(source: GithubSource) -> str:
    """The set's ``manifest.csv``: header ``md5,bytes,path`` and one row per file, in the recorded order."""
    return "md5,bytes,path\n" + "".join(f"{f.md5},{f.bytes},{f.path}\n" for f in source.files)


def _md5(path: Path) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _stream(url: str, target: Path, md5: str, advance) -> None:
    """Stream ``url`` into a temporary file beside ``target``; rename it onto ``target`` once its md5 is ``md5``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(name)
    try:
        digest = hashlib.md5()
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: received bytes have md5 {digest.hexdigest()}, expected {md5}")
        temp.chmod(0o644)
        os.replace(temp, target)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"could not download {url} (expected md5 {md5}): {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def _convert_sheet(xlsx: Path, sheet: str, target: Path, md5: str) -> None:
    """Write sheet ``sheet`` of ``xlsx`` as CSV (``to_csv(index=False)``) to ``target``, checking its md5."""
    import pandas as pd

    from medlens.files import write_atomically

    text = pd.read_excel(xlsx, sheet_name=sheet).to_csv(index=False).encode()
    actual = hashlib.md5(text).hexdigest()
    if actual != md5:
        raise ChecksumError(f"{xlsx}: sheet {sheet} converted to CSV has md5 {actual}, expected {md5}")
    write_atomically(target, lambda path: path.write_bytes(text))


def _fetch_one(source: GithubSource, item: SourceFile, folder: Path, base: str | None, advance) -> None:
    target = folder / item.path
    if _md5(target) == item.md5:
        return
    if item.sheet is None:
        _stream(source.url(item.source, base), target, item.md5, advance)
        return
    xlsx = folder / ".sources" / Path(item.source).name
    if _md5(xlsx) != item.source_md5:
        _stream(source.url(item.source, base), xlsx, item.source_md5, advance)
    _convert_sheet(xlsx, item.sheet, target, item.md5)


def download_github_set(name: str, folder: str | Path, *, progress: bool = True, threads: int = THREADS,
                        base: str | None = None) -> Path:
    """Download set ``name`` into ``folder`` (the set's own folder), file by file with md5 checks.

    Parameters
    ----------
    name : str
        A catalogue name with a GitHub source (:func:`github_source`).
    folder : str or Path
        Where the set's files go (``<data root>/<local_path>``).
    progress : bool
        Show a progress bar (bytes).
    threads : int
        Files fetched at once.
    base : str, optional
        Raw-content base URL instead of :data:`RAW_BASE` (a mirror, or a loopback server in tests).

    Returns
    -------
    Path
        ``folder``, complete and verified.

    Raises
    ------
    DownloadError
        A file could not be fetched or had the wrong md5 (the message names its URL); files already verified stay.
    """
    source = github_source(name)
    if source is None:
        raise DownloadError(f"{name}: no GitHub source is recorded")
    folder = Path(folder).expanduser()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=_console, disable=not progress) as bar:
        task = bar.add_task(name, total=source.total_bytes)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            jobs = [pool.submit(_fetch_one, source, item, folder, base, lambda n: bar.advance(task, n))
                    for item in source.files]
            for job in as_completed(jobs):
                if job.exception() is not None:  # offline or a bad file: stop at the first failure
                    for other in jobs:
                        other.cancel()
                    raise DownloadError(f"{name}: {job.exception()}; files already verified are kept, run the "
                                        "same command again to fetch only what is missing") from job.exception()
    if source.manifest is not None:
        from medlens.files import write_text_atomically

        write_text_atomically(folder / source.manifest, manifest_text(source))
    return folder
