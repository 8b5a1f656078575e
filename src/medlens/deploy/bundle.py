"""One bundle format for every trained artefact: classifiers, segmenters, denoisers and generators.

A bundle is a folder that travels. Nothing in it is executed when it is read:

``manifest.json``
    What the artefact is: ``format`` (``"medlens-bundle"``), ``format_version``, ``kind`` (one of
    :data:`KINDS`), the medlens version that wrote it, its config with the preprocessing, labels, threshold,
    temperature, the training data's checksum, package versions, and kind-specific fields.
``weights.safetensors``
    Named numeric arrays (network weights, scaler statistics), read with :mod:`safetensors` (no pickle).
``*.skops``
    Fitted scikit-learn objects, read with :func:`skops.io.load` and an explicit list of trusted types.
``checksums.sha256``
    The integrity record: the sha256 of **every** other file, the manifest included, in ``sha256sum``'s
    format (``sha256sum -c checksums.sha256`` checks a bundle by hand).

Reading (:func:`open_bundle`) refuses, with the file named: a folder without the record or the manifest,
a listed path that leaves the folder (absolute, ``..``, or a link pointing outside), a listed file that is
missing or whose sha256 differs, a manifest that the record does not cover, a format or kind this medlens
does not read, and a bundle from another medlens major version. A loader reads only listed files
(:meth:`BundleReader.path`). The record protects against corruption and edits made without it (a changed
threshold or label list); it is not a signature: whoever can rewrite the record can rewrite the bundle.

Writing (:func:`write_bundle`) happens in a temporary folder beside the target; files and folder are
flushed to disk (``fsync``) and the new folder then replaces the old one in one step
(:func:`replace_folder`), so a bundle killed half-way through a re-save leaves the old bundle whole; the
next save of the same bundle removes the dead writer's temporary folder.

Each kind's loader registers itself with :func:`register_kind`; :func:`load_bundle` reads any bundle and
returns the object its kind loads (a :class:`~medlens.deploy.classifier.ClassifierBundle`, a segmenter, a
:class:`~medlens.enhance.autoencoder.Denoiser`, a :class:`~medlens.synth.gan.GAN`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

import medlens
from medlens.errors import MedlensError
from medlens.files import json_ready
from medlens.report.provenance import package_versions

FORMAT = "medlens-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"
WEIGHTS = "weights.safetensors"
CARD = "model_card.md"
#: The kinds of trained artefact, and the module whose import registers each one's loader.
KINDS = {"classifier": "medlens.deploy.classifier", "segmenter": "medlens.segment.bundle",
         "denoiser": "medlens.enhance.autoencoder", "generator": "medlens.synth.gan"}


class BundleError(MedlensError):
    """A bundle cannot be read: missing, modified, unsafe, or of a format or kind this medlens does not read."""


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target``, replacing what is there in one step.

    An existing ``target`` is swapped with ``new`` atomically where the system can (Linux ``renameat2``),
    otherwise renamed aside first (a crash between the two renames leaves the old folder under
    ``.old-<name>-*`` beside the target, never a half-written one). The old folder is then removed. The parent
    folder is flushed so that the swap survives a power cut.
    """
    new, target = Path(new), Path(target)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target}: exists and is not a folder; refusing to replace it with a bundle")
    if target.is_dir():
        if _exchange(new, target):
            shutil.rmtree(new)
        else:
            aside = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
            os.rename(target, aside)
            os.rename(new, target)
            shutil.rmtree(aside)
    else:
        os.rename(new, target)
    _fsync(target.parent)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned_staging(target: Path) -> None:
    """Remove the staging folders that writers of ``target`` killed half-way left behind (their process is gone)."""
    prefix = f".tmp-{target.name}-"
    for folder in target.parent.glob(f"{prefix}*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if folder.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def write_bundle(target: str | Path, kind: str, manifest: dict[str, Any],
                 files: dict[str, Callable[[Path], object]]) -> Path:
    """Write a bundle folder of ``kind`` at ``target`` (replacing one there as a whole; see the module docstring).

    Parameters
    ----------
    target : str or Path
        The bundle folder.
    kind : str
        One of :data:`KINDS`.
    manifest : dict
        Kind-specific fields; ``format``, ``format_version``, ``kind``, ``medlens_version``, ``created`` and
        ``versions`` (:func:`medlens.report.provenance.package_versions`) are added here.
    files : dict
        File name (relative, inside the bundle) → ``write(path)``, which writes that file.

    Returns
    -------
    Path
        ``target``.
    """
    if kind not in KINDS:
        raise BundleError(f"bundle kind {kind!r} is unknown; known kinds: {', '.join(KINDS)}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    staging = target.with_name(f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        for name, write in files.items():
            _inside(staging, name)
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            write(staging / name)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                "medlens_version": medlens.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": package_versions(), **manifest}
        (staging / MANIFEST).write_text(json.dumps(json_ready(full), indent=2, allow_nan=True), encoding="utf-8")
        listed = sorted([*files, MANIFEST])
        record = "".join(f"{sha256(staging / name)}  {name}\n" for name in listed)
        (staging / CHECKSUMS).write_text(record, encoding="utf-8")
        for name in [*listed, CHECKSUMS]:
            _fsync(staging / name)
        _fsync(staging)
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def write_arrays(arrays: dict[str, np.ndarray]) -> Callable[[Path], None]:
    """A ``files`` writer for :func:`write_bundle`: named numeric arrays as safetensors."""
    from safetensors.numpy import save_file

    def write(path: Path) -> None:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))

    return write


def write_json(value: Any) -> Callable[[Path], None]:
    """A ``files`` writer for :func:`write_bundle`: a JSON document."""
    return lambda path: path.write_text(json.dumps(json_ready(value), indent=2, allow_nan=True), encoding="utf-8")


def write_text(text: str) -> Callable[[Path], None]:
    """A ``files`` writer for :func:`write_bundle`: UTF-8 text."""
    return lambda path: path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a relative name that stays inside ``folder`` (links resolved); else an error."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BundleError(f"{folder}: the bundle lists {name!r}, a path outside the bundle; refusing to read it")
    path = folder / name
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise BundleError(f"{path}: leads outside the bundle (a link); refusing to read it") from None
    return path


def _major(version: str) -> str:
    return str(version).split(".")[0]


@dataclass
class BundleReader:
    """A bundle whose integrity record has been checked: its manifest, and access to its listed files only."""

    folder: Path
    manifest: dict[str, Any]
    listed: dict[str, str]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def path(self, name: str) -> Path:
        """The path of a listed file; a file the record does not list is refused."""
        if name not in self.listed:
            raise BundleError(f"{self.folder / name}: not listed in the bundle's {CHECKSUMS}; refusing to read it")
        return self.folder / name

    def has(self, name: str) -> bool:
        return name in self.listed

    def arrays(self, name: str = WEIGHTS) -> dict[str, np.ndarray]:
        """The named arrays of a safetensors file of the bundle."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.path(name)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable safetensors file ({exc})") from exc

    def json(self, name: str) -> Any:
        path = self.path(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: not valid JSON ({exc})") from exc

    def text(self, name: str) -> str:
        return self.path(name).read_text(encoding="utf-8")


def _read_record(folder: Path) -> dict[str, str]:
    record_path = folder / CHECKSUMS
    try:
        lines = record_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{record_path}: unreadable integrity record ({exc})") from exc
    listed: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise BundleError(f"{record_path}: line {number} is not '<sha256>  <file>'")
        listed[name.strip()] = digest
    return listed


def open_bundle(path: str | Path, kind: str | None = None) -> BundleReader:
    """Check a bundle's integrity record, format, version and kind; the reader of its listed files.

    Raises
    ------
    BundleError
        See the module docstring; the message names the file at fault and what to do.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if not (folder / CHECKSUMS).is_file():
        if (folder / MANIFEST).is_file() or (folder / "plan.json").is_file():
            raise BundleError(f"{folder}: written by an earlier medlens (bundle format 1, before "
                              f"{CHECKSUMS} existed): its manifest is not covered by any integrity record, so it "
                              "cannot be trusted. Train it again with this medlens (`medlens train`, `medlens "
                              "segment train`, `medlens denoise train`, `medlens synth train`).")
        raise BundleError(f"{folder}: not a medlens bundle (no {CHECKSUMS} and no {MANIFEST})")
    listed = _read_record(folder)
    if MANIFEST not in listed:
        raise BundleError(f"{folder / CHECKSUMS}: does not cover {MANIFEST}; refusing the bundle")
    for name, digest in listed.items():
        file = _inside(folder, name)
        if not file.is_file():
            raise BundleError(f"{file}: listed in the bundle's {CHECKSUMS} but missing")
        if sha256(file) != digest:
            raise BundleError(f"{file}: sha256 differs from the bundle's {CHECKSUMS} (file modified or corrupt); "
                              "refusing to load the bundle")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        found_format, layout = manifest["format"], int(manifest["format_version"])
        found_kind, written_by = manifest["kind"], manifest["medlens_version"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{folder / MANIFEST}: unreadable bundle manifest ({exc})") from exc
    if found_format != FORMAT:
        raise BundleError(f"{folder / MANIFEST}: format {found_format!r} is not {FORMAT!r}")
    if layout > FORMAT_VERSION:
        raise BundleError(f"{folder / MANIFEST}: bundle format {layout} is newer than this medlens reads "
                          f"(up to {FORMAT_VERSION}); upgrade medlens")
    if layout < FORMAT_VERSION:
        raise BundleError(f"{folder / MANIFEST}: bundle format {layout} is no longer read; train the model again "
                          "with this medlens")
    if _major(written_by) != _major(medlens.__version__):
        raise BundleError(f"{folder / MANIFEST}: bundle written by medlens {written_by}, incompatible with the "
                          f"installed medlens {medlens.__version__} (major versions differ); train it again")
    if found_kind not in KINDS:
        raise BundleError(f"{folder / MANIFEST}: unknown bundle kind {found_kind!r}; known: {', '.join(KINDS)}")
    if kind is not None and found_kind != kind:
        raise BundleError(f"{folder}: a {found_kind} bundle, where a {kind} bundle is needed")
    return BundleReader(folder, manifest, listed)


_LOADERS: dict[str, Callable[[BundleReader], Any]] = {}


def register_kind(kind: str) -> Callable[[Callable[[BundleReader], Any]], Callable[[BundleReader], Any]]:
    """Decorator: register the loader of a bundle kind (called with the checked :class:`BundleReader`)."""

    def decorate(loader: Callable[[BundleReader], Any]) -> Callable[[BundleReader], Any]:
        _LOADERS[kind] = loader
        return loader

    return decorate


def load_bundle(path: str | Path, kind: str | None = None) -> Any:
    """Read any bundle (checked by :func:`open_bundle`) and return what its kind's loader makes of it.

    ``kind`` restricts what is accepted (e.g. ``"classifier"`` for ``medlens predict``).
    """
    reader = open_bundle(path, kind)
    if reader.kind not in _LOADERS:
        import_module(KINDS[reader.kind])
    return _LOADERS[reader.kind](reader)


def bundle_kind(path: str | Path) -> str:
    """The kind of the bundle at ``path`` (after the integrity checks of :func:`open_bundle`)."""
    return open_bundle(path).kind
