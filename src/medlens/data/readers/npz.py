"""``.npz`` archives read safely: every array's size is checked from its header before it is decompressed.

``np.load`` on a damaged archive raises ``EOFError`` (which the command line used to turn into a bare
"Aborted."), ``zipfile.BadZipFile`` or ``ValueError``, and allocates whatever shape a member's header
claims before reading a byte of it. :class:`NpzArchive` opens the zip itself, reads each member's ``.npy``
header (magic string, shape, dtype: NumPy's format, ``numpy.lib.format``), refuses object arrays (they need
pickle), checks the claimed size against :mod:`medlens.limits` (``MEDLENS_MAX_BYTES``) and only then lets
NumPy read the data. Every failure is a :class:`~medlens.errors.MedlensError` naming the file and the array.

Every reader of ``.npz`` input (MedMNIST archives, ``medlens inspect``, ``predict``'s image archives, feature
tables) should go through :func:`open_npz`, and of a single ``.npy`` through :func:`read_npy`.
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from medlens.data.readers._checks import existing_file
from medlens.errors import UnreadableFileError
from medlens.limits import check_size

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
               struct.error, zlib.error, RuntimeError, SyntaxError, tokenize.TokenError)
"""What ``zipfile`` and ``numpy.lib.format`` raise on a damaged archive (RuntimeError: an encrypted member;
tokenize.TokenError: a damaged ``.npy`` header, found by benchmarks/quality/fuzz_readers.py)."""


class NpzArchive:
    """An open ``.npz`` archive; use as a context manager (:func:`open_npz`).

    Attributes
    ----------
    path : Path
        The archive.
    files : list of str
        The array names (member names without ``.npy``), in archive order.
    """

    def __init__(self, path: Path, archive: zipfile.ZipFile):
        self.path = path
        self._zip = archive
        self._members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        self.files = list(self._members)

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of array ``key``, read from its ``.npy`` header without decompressing the data."""
        self._require(key)
        try:
            with self._zip.open(self._members[key]) as member:
                shape, dtype = _read_header(member)
        except _ZIP_ERRORS as exc:
            raise UnreadableFileError(self.path, f"array {key!r}: cannot read its header "
                                                 f"({type(exc).__name__}: {exc})") from exc
        return shape, dtype

    def read(self, key: str) -> np.ndarray:
        """Array ``key``, after its header's shape and dtype passed :func:`medlens.limits.check_size`.

        Raises
        ------
        UnreadableFileError
            Missing key, object dtype (pickle), damaged member.
        ImageTooLargeError
            The header claims more than ``MEDLENS_MAX_BYTES``.
        """
        shape, dtype = self.header(key)
        if dtype.hasobject:
            raise UnreadableFileError(self.path, f"array {key!r} holds Python objects ({dtype}), which need "
                                                 "pickle to load; medlens never unpickles data")
        check_size(f"{self.path} [{key}]", shape, itemsize=dtype.itemsize, what="array")
        try:
            with self._zip.open(self._members[key]) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise UnreadableFileError(self.path, f"array {key!r} cannot be read, the archive may be truncated "
                                                 f"({type(exc).__name__}: {exc})") from exc

    def _require(self, key: str) -> None:
        if key not in self._members:
            raise UnreadableFileError(self.path, f"no array {key!r} (this archive has: "
                                                 f"{', '.join(self.files) or 'nothing'})")


def _read_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format version {version} is not supported (1.0 and 2.0 are)")
    return tuple(int(n) for n in shape), np.dtype(dtype)


def open_npz(path: str | Path) -> NpzArchive:
    """Open an ``.npz`` archive for :meth:`NpzArchive.header` and :meth:`NpzArchive.read`.

    Raises
    ------
    MissingPathError, EmptyImageError
        No such file, or 0 bytes.
    UnreadableFileError
        Not a zip archive, or one whose directory is damaged (a truncated download).
    """
    path = existing_file(path)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise UnreadableFileError(path, f"not a readable .npz archive ({type(exc).__name__}: {exc}); "
                                        "the file may be truncated") from exc
    return NpzArchive(path, archive)


def read_npy(path: str | Path) -> np.ndarray:
    """A single ``.npy`` array (a lesion mask for ``predict --mask``...), read like an ``.npz`` member: its
    header's shape and dtype checked against :mod:`medlens.limits` first, no pickle, named errors."""
    path = existing_file(path)
    try:
        with path.open("rb") as handle:
            shape, dtype = _read_header(handle)
            if dtype.hasobject:
                raise UnreadableFileError(path, f"holds Python objects ({dtype}), which need pickle to load; "
                                                "medlens never unpickles data")
            check_size(path, shape, itemsize=dtype.itemsize, what="array")
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
    except _ZIP_ERRORS as exc:
        raise UnreadableFileError(path, f"not a readable .npy array ({type(exc).__name__}: {exc})") from exc
