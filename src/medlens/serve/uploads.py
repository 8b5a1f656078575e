"""Uploads: from the bytes a client sent to a file or DICOM series folder that medlens's readers can open.

Safety rules, in the order they apply:

1. Every request gets a private workspace (:class:`Workspace`): a folder with a random name made by
   :func:`tempfile.mkdtemp` (mode 0700) inside the server's own temporary root, removed once the answer
   is sent and no worker thread still uses it.
2. The format is recognised from the content's first bytes (:func:`sniff`), never from the name the
   client sent; the file is stored under a name the server chooses (``image.png``, ``volume.nii.gz``,
   ``series/00001.dcm``...). The client's file name is kept only as a display name (:func:`display_name`).
3. Archives (a zipped DICOM series, an npz) are checked before anything is extracted: a member whose path
   is absolute, climbs out (``..``) or is a link is refused; so is an archive that declares more than
   :attr:`Limits.max_unzipped_bytes`, more than :attr:`Limits.max_files` members, or a member compressed
   more than :data:`MAX_RATIO` to one (a zip bomb). Extraction counts the bytes really written and stops
   at the limit whatever the archive declares. Member names never choose where a file is written.
4. The pixel count is read from the headers (PNG/JPEG/BMP through Pillow's lazy open, TIFF pages, the
   NIfTI header, DICOM Rows × Columns × frames × samples of every file, the ``.npy`` headers of an npz)
   and compared with :attr:`Limits.max_voxels` before any pixel is decoded: a decompression bomb is
   refused without being decompressed.
"""

from __future__ import annotations

import math
import re
import shutil
import stat
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from medlens.serve.errors import RequestError

CHUNK = 1 << 20
MAX_RATIO = 100
"""Largest compression ratio of an archive member (CT slices deflate 2-10 to one; a zip bomb 1000 to one)."""
RATIO_FLOOR = 8 << 20
"""Members that expand to less than this many bytes are not held to :data:`MAX_RATIO`."""
READABLE = ("medlens reads PNG, JPEG, BMP and TIFF pictures, NIfTI (.nii, .nii.gz), DICOM (a file, the files of "
            "one series, or a zipped series) and .npz archives")
NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")


@dataclass(frozen=True)
class Limits:
    """What one request may send and make the server decode.

    Attributes
    ----------
    max_upload_bytes : int
        Size of the request body (checked from ``Content-Length`` first, then counted as it arrives).
    max_voxels : int
        Pixels × channels (× slices) of the decoded image, read from the headers before decoding.
        The default, 2**28, holds a 512 × 512 CT series of 1024 slices.
    max_unzipped_bytes : int
        Bytes an archive may expand to.
    max_files : int
        Members of an archive, or files of a multi-file upload.
    request_seconds : float
        Wall time of one request, upload included; past it the client gets 504.
    """

    max_upload_bytes: int = 1 << 30
    max_voxels: int = 1 << 28
    max_unzipped_bytes: int = 2 << 30
    max_files: int = 4096
    request_seconds: float = 120.0


@dataclass
class Upload:
    """An upload stored in a workspace, recognised and checked, not yet decoded.

    ``path`` is a file, or a folder holding one DICOM series (and possibly an LIDC reader XML);
    ``format`` one of ``picture``, ``tiff``, ``nifti``, ``dicom``, ``npz``; ``shape`` the spatial shape
    read from the headers (for DICOM the slices of all files, for npz the images of the stack, first axis);
    ``volume`` whether the image is 3D (a series, a 3D NIfTI, a TIFF stack), as opposed to one or many
    2D images.
    """

    path: Path
    format: str
    name: str
    shape: tuple[int, ...] = ()
    volume: bool = False
    voxels: int = 0
    notes: list[str] = field(default_factory=list)


class Workspace:
    """A private temporary folder for one request, removed when the request is done and no step uses it.

    A worker thread wraps each step that touches the folder in :meth:`use`; the request closes the
    workspace when it answers (or times out). The folder is removed by whichever comes last, so a step
    still running after a timeout never finds its files gone, and never recreates the folder afterwards:
    a step that starts after :meth:`close` is refused.
    """

    def __init__(self, root: Path):
        self.path = Path(tempfile.mkdtemp(prefix="req-", dir=root))
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False
        self.names: dict[str, str] = {}
        """Workspace paths → the client's display names, for :meth:`scrub`."""

    @contextmanager
    def use(self) -> Iterator[Path]:
        with self._lock:
            if self._closed:
                raise RequestError(504, "the request was abandoned (time limit)")
            self._users += 1
        try:
            yield self.path
        finally:
            with self._lock:
                self._users -= 1
                remove = self._closed and self._users == 0
            if remove:
                shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            remove = self._users == 0
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)

    def scrub(self, message: str) -> str:
        """``message`` with every workspace path replaced by the client's name for it: the server's
        folders never reach a client."""
        for path, name in sorted(self.names.items(), key=lambda item: -len(item[0])):
            message = message.replace(path, name)
        return message.replace(str(self.path), "upload")


def display_name(filename: str | None) -> str:
    """The last component of a client's file name, printable, at most 120 characters; only ever shown."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or "upload"


def sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes (at least 352): ``png``, ``jpeg``, ``bmp``, ``tiff``,
    ``zip``, ``gzip``, ``nifti``, ``dicom``, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[344:348] in NIFTI1_MAGIC or head[4:8] == b"n+2\x00":
        return "nifti"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


# --------------------------------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------------------------------
def receive(parts: list[tuple[str | None, BinaryIO]], workspace: Workspace, limits: Limits) -> Upload:
    """Store the uploaded ``parts`` (client file name, stream) in ``workspace`` and recognise them.

    One part is a picture, a NIfTI file, a DICOM file, a zip of a DICOM series or an npz; several parts
    are the files of one DICOM series (an LIDC reader XML may come with them).

    Raises
    ------
    RequestError
        400 nothing sent / empty / unsafe archive, 413 over a limit, 415 not a format medlens reads,
        422 DICOM without pixel data.
    """
    if not parts:
        raise RequestError(400, "no file in the request: send the image as the multipart field 'file'")
    if len(parts) > limits.max_files:
        raise RequestError(413, f"{len(parts)} files in one request; at most {limits.max_files}")
    names = [display_name(name) for name, _ in parts]
    name = names[0] if len(parts) == 1 else f"{names[0]} and {len(parts) - 1} more files"
    staged = []
    for number, (_, stream) in enumerate(parts):
        target = workspace.path / f"part{number:05d}"
        _copy(stream, target, limits.max_upload_bytes, names[number])
        staged.append(target)
    if len(staged) == 1:
        upload = _single(staged[0], workspace, name, limits)
    else:
        series = workspace.path / "series"
        series.mkdir()
        for number, (part, part_name) in enumerate(zip(staged, names)):
            kind = sniff(_head(part))
            if kind != "dicom" and not part_name.lower().endswith(".xml"):
                raise RequestError(415, f"{part_name}: several files are read as one DICOM series, and this one is "
                                        "not DICOM; send other images one per request")
            target = part.rename(series / f"{number:05d}{'.xml' if kind != 'dicom' else '.dcm'}")
            if kind != "dicom":
                workspace.names[target.name] = part_name
        upload = _dicom_series(series, name, limits)
    workspace.names[str(upload.path)] = name
    return upload


def _copy(stream: BinaryIO, target: Path, max_bytes: int, name: str) -> None:
    written = 0
    with open(target, "wb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise RequestError(413, f"{name}: larger than the upload limit of {max_bytes} bytes")
            out.write(chunk)
    if written == 0:
        raise RequestError(400, f"{name}: the upload is empty (0 bytes)")


def _head(path: Path, size: int = 352) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def _single(part: Path, workspace: Workspace, name: str, limits: Limits) -> Upload:
    kind = sniff(_head(part))
    if kind in ("png", "jpeg", "bmp"):
        return _picture(part.rename(workspace.path / f"image.{kind}"), name, limits)
    if kind == "tiff":
        return _tiff(part.rename(workspace.path / "image.tif"), name, limits)
    if kind in ("gzip", "nifti"):
        return _nifti(part.rename(workspace.path / ("volume.nii.gz" if kind == "gzip" else "volume.nii")), name,
                      limits)
    if kind == "dicom":
        series = workspace.path / "series"
        series.mkdir()
        part.rename(series / "00000.dcm")
        return _dicom_series(series, name, limits)
    if kind == "zip":
        with _open_zip(part, name) as archive:
            members = _checked_members(archive, name, limits)
            if members and all(m.filename.endswith(".npy") for m in members):
                return _npz(part.rename(workspace.path / "images.npz"), archive, members, name, limits)
            series = workspace.path / "series"
            series.mkdir()
            workspace.names.update(_extract(archive, members, series, name, limits))
        part.unlink()
        return _dicom_series(series, name, limits)
    raise RequestError(415, f"{name}: not an image in a format medlens reads; {READABLE}")


# --------------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------------
@contextmanager
def _open_zip(path: Path, name: str) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise RequestError(400, f"{name}: not a readable zip archive ({exc})") from exc


def _unsafe(member: str) -> bool:
    path = PurePosixPath(member)
    return (member.startswith(("/", "\\")) or "\\" in member or ".." in path.parts
            or bool(re.match(r"^[A-Za-z]:", member)))


def _checked_members(archive: zipfile.ZipFile, name: str, limits: Limits) -> list[zipfile.ZipInfo]:
    """The archive's file members, after the path, count, size and ratio checks of the module docstring."""
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise RequestError(413, f"{name}: {len(infos)} archive members; at most {limits.max_files}")
    for info in infos:
        if _unsafe(info.filename):
            raise RequestError(400, f"{name}: archive member {info.filename!r} has an unsafe path (absolute or "
                                    "climbing out with '..'); refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise RequestError(400, f"{name}: archive member {info.filename!r} is a symbolic link; refused")
    files = [i for i in infos if not i.is_dir()]
    declared = sum(i.file_size for i in files)
    if declared > limits.max_unzipped_bytes:
        raise RequestError(413, f"{name}: the archive expands to {declared} bytes, over the limit of "
                                f"{limits.max_unzipped_bytes}")
    for info in files:
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise RequestError(413, f"{name}: archive member {info.filename!r} is compressed "
                                    f"{info.file_size // max(info.compress_size, 1)} to one (a zip bomb?); refused")
    return files


def _extract(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], folder: Path, name: str,
             limits: Limits) -> dict[str, str]:
    """Write the members that may belong to a DICOM series under numbered names of the server's choosing
    (reader XML keeps its suffix, which the LIDC lesion lookup needs), counting what is really written.
    Returns the XML files' names → their names in the archive (for messages)."""
    total, xml_names = 0, {}
    wanted = [m for m in members
              if not any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(m.filename).parts)]
    for number, info in enumerate(wanted):
        suffix = ".xml" if info.filename.lower().endswith(".xml") else ".dcm"
        target = folder / f"{number:05d}{suffix}"
        if suffix == ".xml":
            xml_names[target.name] = display_name(info.filename)
        try:
            with archive.open(info) as source, open(target, "wb") as out:
                while chunk := source.read(CHUNK):
                    total += len(chunk)
                    if total > limits.max_unzipped_bytes:
                        raise RequestError(413, f"{name}: the archive expands beyond the limit of "
                                                f"{limits.max_unzipped_bytes} bytes")
                    out.write(chunk)
        except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
            raise RequestError(400, f"{name}: archive member {info.filename!r} cannot be extracted ({exc})") from exc
    return xml_names


def _npz(path: Path, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], name: str, limits: Limits) -> Upload:
    """An npz: the shapes of its arrays from their ``.npy`` headers."""
    import numpy as np

    voxels, shapes = 0, {}
    for info in members:
        try:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = header(member)
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise RequestError(400, f"{name}: member {info.filename!r} is not a readable .npy array ({exc})") from exc
        if dtype.hasobject:
            raise RequestError(415, f"{name}: member {info.filename!r} holds Python objects; only numeric arrays "
                                    "are read")
        shapes[info.filename[:-4]] = shape
        voxels += math.prod(shape)
    _check_voxels(voxels, name, limits)
    images = next((shapes[k] for k in ("test_images", "images") if k in shapes), None)
    shape = tuple(images) if images is not None else ()
    volume = images is not None and len(images) == 4 and images[-1] not in (3, 4)
    return Upload(path, "npz", name, shape, volume=volume, voxels=voxels)


# --------------------------------------------------------------------------------------------------
# Header checks of each format
# --------------------------------------------------------------------------------------------------
def _check_voxels(voxels: int, name: str, limits: Limits) -> None:
    if voxels > limits.max_voxels:
        raise RequestError(413, f"{name}: {voxels} pixel values to decode, over the limit of {limits.max_voxels}; "
                                "refused before decoding")


def _picture(path: Path, name: str, limits: Limits) -> Upload:
    from PIL import Image

    try:
        with Image.open(path) as image:  # lazy: reads the header only
            width, height = image.size
            bands = len(image.getbands())
            frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"{name}: refused before decoding ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(415, f"{name}: cannot read the picture header ({exc})") from exc
    voxels = width * height * bands * frames
    _check_voxels(voxels, name, limits)
    return Upload(path, "picture", name, (height, width), volume=False, voxels=voxels)


def _tiff(path: Path, name: str, limits: Limits) -> Upload:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise RequestError(415, f"{name}: cannot read the TIFF header ({exc})") from exc
    voxels = math.prod(shape)
    _check_voxels(voxels, name, limits)
    spatial = tuple(n for n, a in zip(shape, axes) if a not in "SC")
    return Upload(path, "tiff", name, spatial, volume=len(spatial) == 3, voxels=voxels)


def _nifti(path: Path, name: str, limits: Limits) -> Upload:
    import nibabel as nib

    try:
        shape = tuple(int(n) for n in nib.load(str(path)).shape)  # header only; the data stay on disk
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib and gzip errors...
        raise RequestError(415, f"{name}: not a readable NIfTI file ({exc})") from exc
    voxels = math.prod(shape)
    _check_voxels(voxels, name, limits)
    spatial = shape[:3]
    return Upload(path, "nifti", name, spatial, volume=len(spatial) == 3 and spatial[2] > 1, voxels=voxels)


def _dicom_series(folder: Path, name: str, limits: Limits) -> Upload:
    """A folder of DICOM files (and possibly a reader XML): the pixel count of every file from its header."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    voxels, slices, rows_cols, without_pixels, dicom_files = 0, 0, None, 0, 0
    for file in sorted(folder.iterdir()):
        if file.suffix == ".xml":
            continue
        try:
            header = pydicom.dcmread(file, defer_size=4096)  # pixel data deferred: headers only
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # not DICOM: the reader skips it with a warning
        dicom_files += 1
        if not any(k in header for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            without_pixels += 1
            continue
        try:
            rows, cols = int(header.get("Rows", 0)), int(header.get("Columns", 0))
            frames = int(header.get("NumberOfFrames", 1) or 1)
            samples = int(header.get("SamplesPerPixel", 1) or 1)
        except (TypeError, ValueError) as exc:
            raise RequestError(422, f"{name}: a DICOM file has unreadable image dimensions ({exc})") from exc
        voxels += rows * cols * frames * samples
        slices += frames
        rows_cols = rows_cols or (rows, cols)
        _check_voxels(voxels, name, limits)
    if dicom_files == 0:
        raise RequestError(415, f"{name}: no DICOM file in the upload; {READABLE}")
    if slices == 0:
        raise RequestError(422, f"{name}: no DICOM file with pixel data (PixelData (7FE0,0010) missing): "
                                "nothing to show or predict")
    notes = [f"{without_pixels} DICOM file(s) without pixel data left out"] if without_pixels else []
    shape = (slices, *rows_cols)
    return Upload(folder, "dicom", name, shape, volume=slices > 1, voxels=voxels, notes=notes)
