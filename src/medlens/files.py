"""Atomic file writes: the files medlens writes (bundles, plans, masks, reports, figures, tables,
checkpoints) go to a hidden temporary name beside their target and are then renamed over it
(``os.replace``, atomic within one file system). Low-level writers that a caller wraps (``write_nifti``)
and the ONNX exporter, which may write companion files named after its target, write in place.

A crash or a failing writer therefore never leaves half a file at the target, a file already there stays
intact until the new one is complete, and the temporary file is removed when the writer fails. The
temporary name ends with the target's name, so writers that choose a format from the suffix (NIfTI's
``.nii.gz``, NumPy's ``.npz``) write the target's format; it is created by the writer itself, so the file
gets the usual permissions.

The second half of the module guards outputs as a whole: :func:`check_output` refuses a dangerous
``--out`` before any work, :func:`output_lock` keeps two runs out of one output, :func:`remove_stale_partials`
cleans the ``.tmp-<pid>-*`` files a killed run left, and :func:`claim_output` does the three for a command.
:func:`write_csv_atomically` and :func:`csv_text` write CSV whose cells a spreadsheet cannot run as formulas.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from medlens.errors import OutputError, OutputLockedError


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``target`` (folders are created).

    Returns ``target``. If ``write`` raises, the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_text_atomically(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` with :func:`write_atomically`."""
    return write_atomically(target, lambda path: path.write_text(text, encoding="utf-8"))


def json_ready(value):
    """A copy of ``value`` that :func:`json.dumps` can write: numpy scalars become Python numbers, arrays
    and tuples become lists, mapping keys become strings (NaN stays NaN)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def resume_folder(out: str | Path, resume: bool) -> Path:
    """The folder beside ``out`` where a command keeps the progress of unfinished work (``.<name>.resume``).

    Its presence means an earlier run into ``out`` was killed or stopped: with ``resume`` the command continues
    from it; without, it is refused with a message (the progress is never thrown away unasked).
    """
    out = Path(out)
    folder = out.parent / f".{out.name}.resume"
    if folder.exists() and not resume:
        from medlens.errors import MedlensError

        raise MedlensError(f"{out}: an earlier run into it did not finish (its progress is in {folder}); pass "
                           f"--resume to continue it, or delete {folder} to start again")
    return folder


# --------------------------------------------------------------------------------------------------
# Output paths: checked before any work, locked while a run writes, cleaned of what a killed run left
# --------------------------------------------------------------------------------------------------
_PARTIAL = re.compile(r"^\.tmp-(\d+)-")
"""Temporary names this module (and ``medlens data fetch``'s ``.part`` downloads) give: ``.tmp-<pid>-<name>``."""


def partial_path(target: str | Path) -> Path:
    """The temporary name of ``target`` while this process writes it: ``.tmp-<pid>-<name>`` beside it.

    A kill leaves it behind; :func:`remove_stale_partials` recognises it by the pid of a process that no
    longer runs.
    """
    target = Path(target)
    return target.with_name(f".tmp-{os.getpid()}-{target.name}")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_partials(folder: str | Path, *, recursive: bool = True, name: str | None = None) -> list[Path]:
    """Remove the temporary files (``.tmp-<pid>-*``, :func:`partial_path`) that killed runs left in ``folder``.

    Only files whose pid is no running process are removed (a live writer's file is kept). Returns the
    removed paths.

    Parameters
    ----------
    folder : str or Path
        Where to look (nothing happens when it does not exist).
    recursive : bool
        Also look in its subfolders.
    name : str, optional
        Only the temporary files of this target name (``.tmp-<pid>-<name>``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob(".tmp-*") if recursive else folder.glob(".tmp-*")
    for path in candidates:
        match = _PARTIAL.match(path.name)
        if match is None or (name is not None and path.name[match.end():] != name):
            continue
        if _running(int(match.group(1))) or not (path.is_file() or path.is_symlink()):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(out: str | Path, *, kind: str, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse an output path before any work is done; every command calls it on its ``--out``.

    Refused, with :class:`~medlens.errors.OutputError` naming the path:

    * one of the ``inputs``, or a path inside an input folder (a DICOM series folder, a bundle): writing
      there would overwrite an input or add files to it;
    * a device, FIFO or socket (``--out /dev/full`` once replaced the device node);
    * an existing folder where a file is meant (``kind="file"``), or an existing file where a folder is
      meant (``kind="folder"``), or a path below an existing file;
    * a place that cannot be written (a temporary file is created and removed in the nearest existing
      folder, which also catches read-only file systems and runs as root).

    An existing regular file (``kind="file"``) or folder (``kind="folder"``) that is none of these is
    accepted: the command replaces its files atomically or refuses by its own rules (``study`` needs
    ``--overwrite``). Nothing is created.

    Parameters
    ----------
    out : str or Path
        The ``--out`` value.
    kind : {"file", "folder"}
        What the command writes there.
    inputs : iterable of str or Path
        Every path the command reads (files and folders, the bundle or model included).

    Returns
    -------
    Path
        ``out`` unchanged.
    """
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    out = Path(out)
    where = Path(os.path.abspath(out))
    resolved = out.resolve()
    for source in inputs:
        source = Path(source)
        if not source.exists():
            continue
        real = source.resolve()
        if resolved == real or (out.exists() and os.path.samefile(out, source)):
            raise OutputError(f"{out}: is also an input ({source}); choose an output path that is not one of "
                              "the inputs, which medlens never overwrites")
        if real.is_dir() and _inside(resolved, real):
            raise OutputError(f"{out}: lies inside the input folder {source}; writing there would add files to "
                              "an input. Choose an output outside it")
    if out.exists() or out.is_symlink():
        try:
            mode = os.stat(out).st_mode
        except OSError as exc:  # a dangling link, a loop
            raise OutputError(f"{out}: cannot be used as an output ({exc})") from exc
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise OutputError(f"{out}: is a device, FIFO or socket, not a {kind}; medlens writes only regular "
                              "files and folders")
        if kind == "file" and stat.S_ISDIR(mode):
            raise OutputError(f"{out}: is a folder, but a file is written here; give a file name "
                              f"(e.g. {out / 'out.csv'})")
        if kind == "folder" and stat.S_ISREG(mode):
            raise OutputError(f"{out}: is a file, but a folder is written here; choose a folder path")
    existing = where if where.is_dir() else where.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{out}: {existing} is a file, so nothing can be created below it")
    try:
        handle, probe = tempfile.mkstemp(prefix=".medlens-write-test-", dir=existing)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {existing} ({exc.strerror or exc})") from exc
    os.close(handle)
    os.unlink(probe)
    return out


def _lock_path(out: Path) -> Path:
    where = Path(os.path.abspath(out))
    return where.with_name(f".{where.name}.lock")


def _read_lock(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("started"):
        parts.append(f"started {info['started']}")
    if info.get("command"):
        parts.append(f"`{info['command']}`")
    return ", ".join(parts)


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``out`` while a run writes into it; a second run is refused.

    The lock is an exclusive ``flock`` on that file, which the kernel releases when the process dies
    however it dies, so a lock left by a killed run is never mistaken for a live one: the next run takes
    it over and says so (a :class:`StaleLockWarning` naming the dead run's pid, start time and command).
    The file holds the holder's pid, host, start time and command line, for the message of a refused run.
    It is removed when the block ends. The folder that holds the lock is created if needed (and removed
    again if the block fails and leaves it empty).

    Raises
    ------
    OutputLockedError
        Another process holds the lock.
    """
    out = Path(out)
    lock = _lock_path(out)
    created = _make_folders(lock.parent)
    fd = None
    try:
        for _ in range(10):  # the lock file may be removed by its holder between our open and our flock
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_lock(fd)
                os.close(fd)
                fd = None
                raise OutputLockedError(f"{out}: another medlens run is writing here ({_describe(info)}); wait "
                                        f"for it to finish or choose another output (lock: {lock})") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            fd = None
        else:
            raise OutputLockedError(f"{out}: could not take the lock {lock}; another run keeps replacing it")
        stale = _read_lock(fd)
        if stale:
            warnings.warn(f"{out}: took over the lock of an earlier run that is no longer running "
                          f"({_describe(stale)}); it was probably killed",
                          StaleLockWarning, stacklevel=3)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:500]}).encode("utf-8"))
        try:
            yield out
        except BaseException:
            lock.unlink(missing_ok=True)
            os.close(fd)
            fd = None
            _remove_empty(created)
            raise
        lock.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)


class StaleLockWarning(UserWarning):
    """A run took over the output lock of a run that had died (see :func:`output_lock`)."""


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the ones created, deepest first."""
    created = []
    current = folder
    while not current.exists():
        created.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def claim_output(out: str | Path, *, kind: str, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Everything a command does with its ``--out`` before and around its work, in one block.

    :func:`check_output` (before anything is read or computed), then :func:`output_lock` for the length
    of the block, then :func:`remove_stale_partials` on what a killed earlier run left there (the whole
    output folder, or the output file's own temporary files), reported as a warning. Use::

        with claim_output(out, kind="folder", inputs=[model_dir, *inputs]):
            ...  # read, compute, write into out

    Parameters are those of :func:`check_output`.
    """
    check_output(out, kind=kind, inputs=list(inputs))
    out = Path(out)
    with output_lock(out):
        if kind == "folder":
            removed = remove_stale_partials(out)
        else:
            removed = remove_stale_partials(Path(os.path.abspath(out)).parent, recursive=False, name=out.name)
        if removed:
            warnings.warn(f"{out}: removed {len(removed)} partial file(s) left by a killed run: "
                          + ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""),
                          StaleLockWarning, stacklevel=3)
        yield out


# --------------------------------------------------------------------------------------------------
# CSV files that a spreadsheet opens safely
# --------------------------------------------------------------------------------------------------
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make Excel, LibreOffice or Google Sheets treat a cell as a formula (CSV
injection, OWASP): a file named ``=HYPERLINK(...)`` would put a live formula into a prediction table."""


def spreadsheet_safe(value: Any) -> Any:
    """``value`` with a ``'`` in front when it is a string that starts with a formula trigger
    (:data:`SPREADSHEET_TRIGGERS`); spreadsheets show the text, without the quote, and run nothing.

    Numbers are returned as they are (a negative number is not a formula); so is every other string.
    """
    if isinstance(value, str) and value.startswith(SPREADSHEET_TRIGGERS):
        return "'" + value
    return value


def spreadsheet_safe_frame(table: Any) -> Any:
    """A copy of ``table`` (a pandas DataFrame, or rows as a list of dicts) whose text cells, column
    names and index labels went through :func:`spreadsheet_safe`; a DataFrame either way."""
    import pandas as pd

    frame = table.copy() if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    for column in frame.columns:
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column])):
            frame[column] = frame[column].map(spreadsheet_safe)
    frame.columns = [spreadsheet_safe(c) for c in frame.columns]
    if not pd.api.types.is_numeric_dtype(frame.index):
        frame.index = frame.index.map(spreadsheet_safe)
    return frame


def csv_text(table: Any, **to_csv: Any) -> str:
    """``table`` as CSV text with formula-like cells escaped (:func:`spreadsheet_safe_frame`);
    ``to_csv`` goes to ``DataFrame.to_csv`` (default ``index=False``)."""
    to_csv.setdefault("index", False)
    return spreadsheet_safe_frame(table).to_csv(**to_csv)


def write_csv_atomically(target: str | Path, table: Any, **to_csv: Any) -> Path:
    """Write ``table`` (DataFrame or list of row dicts) as CSV with :func:`write_atomically`, formula-like
    cells escaped; the one CSV writer of medlens (predictions, metrics, instance tables, study tables)."""
    to_csv.setdefault("index", False)
    frame = spreadsheet_safe_frame(table)
    return write_atomically(target, lambda tmp: frame.to_csv(tmp, **to_csv))
