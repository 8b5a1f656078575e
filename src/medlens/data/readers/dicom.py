"""DICOM files and series folders to :class:`~medlens.image.MedImage`, in Hounsfield units for CT.

Shape rule
----------
* A file (or a series of files) that carries ``ImagePositionPatient`` and ``ImageOrientationPatient``
  is a slice of a volume: a series of D slices gives ``(C, D, H, W)`` and a single such file gives
  ``(C, 1, H, W)`` with z spacing ``SpacingBetweenSlices``, else ``SliceThickness``, else 1.0. C is 1
  for grayscale and 3 for colour (``SamplesPerPixel`` 3; YBR is converted to RGB by pydicom).
* A single-frame file without them (radiographs, ultrasound, secondary capture) is a 2D image
  ``(C, H, W)`` with spacing ``PixelSpacing`` (or ``ImagerPixelSpacing``, else 1.0).
* A multi-frame file gives ``(C, F, H, W)`` with the same frame spacing rule (per-frame functional
  groups are not read).

Geometry
--------
Slices are sorted by their position along the slice normal, ``p = IPP · (r × c)`` with ``r`` and
``c`` the row and column direction cosines of ``ImageOrientationPatient`` (DICOM PS3.3 C.7.6.2.1.1),
never by file name. Spacing is (z, y, x): z is the median gap of ``p``, y and x are ``PixelSpacing``
(row spacing, column spacing). Gaps that differ from the median by more than 1 % (and 0.01 mm) warn,
or raise :class:`~medlens.errors.GeometryError` with ``strict_spacing=True``. The origin is the
first sorted slice's ``ImagePositionPatient`` in (z, y, x) order; ``direction`` holds the LPS
directions of the (z, y, x) array axes as columns: ``r × c``, ``c`` and ``r``.

Intensities
-----------
``value = stored × RescaleSlope + RescaleIntercept`` (PS3.3 C.11.1.1.2), computed per slice in
float32, which is exact for integer stored values and integer slope and intercept (LIDC-IDRI:
HU = stored − 1024). The output is float32 when the modality is CT or any slice has a slope ≠ 1 or
an intercept ≠ 0; otherwise the stored dtype is kept. Voxels equal to ``PixelPaddingValue`` (or
within ``PixelPaddingValue`` … ``PixelPaddingRangeLimit``) are padding, not tissue: they are set
to :data:`PADDING_HU` (−1024 HU, the bottom of the air range) for CT and to 0 (no signal)
otherwise, and their number is ``meta["padding_voxels"]``. The padding value
is read with the pixel data's signedness: LIDC-IDRI-0001 stores 63536 (US), which is −2000 for
its signed 16-bit pixels.

Each file is parsed once, with values over :data:`DEFER_BYTES` (the pixel data) deferred: scanning a
folder reads headers only, and only the chosen series' pixels are then read and decoded, straight
into the preallocated volume. Pixel data is decoded by pydicom; compressed transfer syntaxes need
its pylibjpeg plugins (``pylibjpeg-openjpeg`` for JPEG 2000, ``pylibjpeg-libjpeg`` for JPEG and JPEG-LS,
``pylibjpeg-rle`` for a faster RLE).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.uid as uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder

from medlens.errors import (
    CompressedDicomError,
    EmptyImageError,
    GeometryError,
    MissingPathError,
    MissingPixelDataError,
    MixedSeriesError,
    NoDicomError,
    UnreadableFileError,
)
from medlens.image import MedImage

PADDING_HU = -1024.0
"""Value given to CT padding voxels (``PixelPaddingValue``): air, −1024 HU."""

GAP_RTOL = 0.01
GAP_ATOL = 0.01
DEFER_BYTES = 4096
"""Element values larger than this (the pixel data) are read from the file only when decoded."""
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_DICOMDIR = "1.2.840.10008.1.3.10"
_PLUGINS = {
    **{ts: "pylibjpeg-openjpeg" for ts in uid.JPEG2000TransferSyntaxes},
    **{ts: "pylibjpeg-openjpeg" for ts in (uid.HTJ2K, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL)},
    **{ts: "pylibjpeg-libjpeg" for ts in uid.JPEGTransferSyntaxes + uid.JPEGLSTransferSyntaxes},
    uid.RLELossless: "pylibjpeg-rle",
}


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    n_files: int
    modality: str
    description: str


@dataclass
class _Slice:
    path: Path
    header: Dataset


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The series of a folder (searched recursively), largest first.

    Parameters
    ----------
    folder : str or Path
        A folder holding DICOM files, possibly several series and non-DICOM files (skipped with a
        warning).

    Returns
    -------
    list of SeriesInfo
        ``uid`` (SeriesInstanceUID), ``n_files``, ``modality``, ``description`` (SeriesDescription).
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingPathError(folder, "folder")
    return _series_infos(_group_by_series(_scan_folder(folder)))


def read_dicom(path: str | Path, *, series_uid: str | None = None, strict_spacing: bool = False) -> MedImage:
    """Read a DICOM file or a series folder (see the module docstring for shapes and units).

    Parameters
    ----------
    path : str or Path
        A DICOM file, or a folder searched recursively for the files of one series.
    series_uid : str, optional
        The SeriesInstanceUID to load when the folder holds several series.
    strict_spacing : bool
        Raise :class:`GeometryError` instead of warning when the slice gaps are uneven.

    Returns
    -------
    MedImage
        ``meta`` has ``modality``, ``patient_id``, ``study_uid``, ``series_uid``, ``source``,
        ``sop_uids`` and ``slice_positions`` (per sorted slice), ``rescale_slope``,
        ``rescale_intercept``, ``padding_voxels`` and, where present, ``window_center``,
        ``window_width``, ``manufacturer``, ``kvp``, ``series_description``.

    Raises
    ------
    MissingPathError, NoDicomError, MixedSeriesError, UnreadableFileError, MissingPixelDataError,
    CompressedDicomError, EmptyImageError, GeometryError
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path)
    if path.is_dir():
        slices = _choose_series(path, _group_by_series(_scan_folder(path)), series_uid)
    else:
        header = _read_header(path)
        if header is None:
            raise UnreadableFileError(
                path, "not a DICOM file (no 'DICM' prefix after the preamble); medlens reads DICOM, "
                "NIfTI (.nii, .nii.gz), pictures (.png, .jpg, .bmp, .tif) and .npz archives"
            )
        slices = [_Slice(path, header)]
    return _build(path, slices, strict_spacing)


def _read_header(path: Path) -> Dataset | None:
    """The dataset of ``path`` with its pixel data deferred (read when decoded); None if not DICOM."""
    if path.stat().st_size == 0:
        raise EmptyImageError(path, "file is empty (0 bytes)")
    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        return None
    except Exception as exc:  # pydicom raises EOFError, struct.error, ValueError... on broken files
        raise UnreadableFileError(path, f"cannot read the DICOM header ({exc})") from exc


def _scan_folder(folder: Path) -> list[_Slice]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    slices, skipped = [], []
    for file in files:
        header = _read_header(file)
        if header is not None and "SeriesInstanceUID" in header:
            slices.append(_Slice(file, header))
        elif header is None or _media_class(header) == _DICOMDIR:
            skipped.append(file)
        else:
            raise UnreadableFileError(file, "no SeriesInstanceUID (0020,000E): the file may be truncated")
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{folder}: skipped {len(skipped)} non-DICOM file(s) (or DICOMDIR): {names}{more}",
                      stacklevel=3)
    if not slices:
        raise NoDicomError(folder, f"no DICOM file among {len(files)} file(s)")
    return slices


def _media_class(header: Dataset) -> str:
    meta = getattr(header, "file_meta", None)
    return str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""


def _group_by_series(slices: list[_Slice]) -> dict[str, list[_Slice]]:
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(str(s.header.SeriesInstanceUID), []).append(s)
    return groups


def _series_infos(groups: dict[str, list[_Slice]]) -> list[SeriesInfo]:
    infos = [
        SeriesInfo(
            uid=key,
            n_files=len(members),
            modality=str(members[0].header.get("Modality", "OT")),
            description=str(members[0].header.get("SeriesDescription", "")),
        )
        for key, members in groups.items()
    ]
    return sorted(infos, key=lambda i: (-i.n_files, i.uid))


def _choose_series(folder: Path, groups: dict[str, list[_Slice]], series_uid: str | None) -> list[_Slice]:
    if series_uid is not None:
        if series_uid not in groups:
            listing = ", ".join(groups)
            raise NoDicomError(folder, f"no file of series {series_uid}; series present: {listing}")
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(
            f"{i.uid} ({i.modality}, {i.n_files} files, {i.description or 'no description'})"
            for i in _series_infos(groups)
        )
        raise MixedSeriesError(
            f"{folder}: holds {len(groups)} DICOM series; choose one with series_uid: {listing}"
        )
    return next(iter(groups.values()))


def _floats(header: Dataset, keyword: str) -> list[float] | None:
    value = header.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return [float(v) for v in value]
    return [float(value)]


def _orientation(header: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    cosines = _floats(header, "ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    return np.array(cosines[:3]), np.array(cosines[3:])


def _sort(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray | None]:
    """Slices in order along the normal and their positions ``p`` along it (None without geometry)."""
    orientation = _orientation(slices[0].header)
    positions = [_floats(s.header, "ImagePositionPatient") for s in slices]
    if orientation is None or any(p is None or len(p) != 3 for p in positions):
        if len(slices) > 1:
            raise GeometryError(
                f"{folder}: slices lack ImagePositionPatient/ImageOrientationPatient, so they cannot "
                "be ordered in space"
            )
        return slices, None
    for s in slices[1:]:
        other = _orientation(s.header)
        if other is None or not (np.allclose(other[0], orientation[0], atol=1e-4)
                                 and np.allclose(other[1], orientation[1], atol=1e-4)):
            raise GeometryError(f"{s.path}: ImageOrientationPatient differs from {slices[0].path}")
    normal = np.cross(*orientation)
    along = np.array(positions) @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) > 1:
        dup = np.flatnonzero(np.diff(along) < GAP_ATOL)
        if dup.size:
            a, b = slices[order[dup[0]]].path, slices[order[dup[0] + 1]].path
            raise GeometryError(f"{a} and {b}: two slices at the same position {along[dup[0]]:.3f} mm")
    return [slices[i] for i in order], along


def _z_spacing(folder: Path, along: np.ndarray | None, header: Dataset, strict: bool) -> float:
    if along is None or len(along) < 2:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _floats(header, keyword)
            if value:
                return value[0]
        return 1.0
    gaps = np.diff(along)
    median = float(np.median(gaps))
    uneven = np.abs(gaps - median) > max(GAP_ATOL, GAP_RTOL * median)
    if uneven.any():
        shown = ", ".join(f"{g:.3f}" for g in gaps[:20])
        message = (f"{folder}: uneven slice gaps (mm): {shown}{' ...' if len(gaps) > 20 else ''}; "
                   f"using the median {median:.4f} mm")
        if strict:
            raise GeometryError(message)
        warnings.warn(message, stacklevel=5)
    return median


def _signed(value: int, header: Dataset) -> int:
    """A padding value in the pixel data's signedness (US 63536 is −2000 for signed 16-bit pixels)."""
    if int(header.get("PixelRepresentation", 0)) != 1:
        return value
    allocated = int(header.get("BitsAllocated", 16))
    stored = int(header.get("BitsStored", allocated))
    if value >= 2 ** (allocated - 1):
        return value - 2**allocated
    if value >= 2 ** (stored - 1):
        return value - 2**stored
    return value


def _padding_range(header: Dataset) -> tuple[int, int] | None:
    if header.get("PixelPaddingValue") is None:
        return None
    low = _signed(int(header.PixelPaddingValue), header)
    limit = header.get("PixelPaddingRangeLimit")
    high = low if limit is None else _signed(int(limit), header)
    return min(low, high), max(low, high)


def _pixels(s: _Slice) -> np.ndarray:
    """Decoded stored values of one file, channel first: ``(C, H, W)`` or ``(C, F, H, W)``."""
    if not any(k in s.header for k in _PIXEL_KEYWORDS):
        raise MissingPixelDataError(s.path, "no PixelData (7FE0,0010) element: nothing to show")
    syntax = s.header.file_meta.get("TransferSyntaxUID")
    try:
        arr, _ = get_decoder(syntax).as_array(s.header, view_only=True)  # read-only; copied by the caller
    except Exception as exc:  # pydicom raises ValueError/RuntimeError/NotImplementedError/OSError...
        raise _pixel_error(s, syntax, exc) from exc
    samples = int(s.header.get("SamplesPerPixel", 1))
    return np.moveaxis(arr, -1, 0) if samples > 1 else arr[None]


def _pixel_error(s: _Slice, syntax: uid.UID | None, exc: Exception) -> Exception:
    """CompressedDicomError when no installed decoder handles ``syntax``, else UnreadableFileError."""
    if syntax is not None and syntax.is_compressed:
        try:
            decodable = get_decoder(syntax).is_available
        except NotImplementedError:  # pydicom has no decoder at all for this transfer syntax
            decodable = False
        if not decodable:
            plugin = _PLUGINS.get(syntax)
            advice = (f"pip install {plugin}" if plugin else
                      "no pydicom plugin decodes it; convert the file to an uncompressed transfer syntax "
                      "(e.g. gdcmconv --raw)")
            return CompressedDicomError(s.path, f"cannot decode {syntax.name} pixel data ({exc}); {advice}")
    return UnreadableFileError(s.path, f"cannot decode the pixel data, the file may be truncated ({exc})")


def _build(source: Path, slices: list[_Slice], strict_spacing: bool) -> MedImage:
    slices, along = _sort(source, slices)
    first = slices[0].header
    rows, cols = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    if rows == 0 or cols == 0:
        raise EmptyImageError(slices[0].path, f"image has {rows} rows and {cols} columns")
    for s in slices[1:]:
        if (int(s.header.get("Rows", 0)), int(s.header.get("Columns", 0))) != (rows, cols):
            raise GeometryError(f"{s.path}: {s.header.get('Rows')}×{s.header.get('Columns')} pixels, "
                                f"but {slices[0].path} has {rows}×{cols}")

    slopes = [(_floats(s.header, "RescaleSlope") or [1.0])[0] for s in slices]
    intercepts = [(_floats(s.header, "RescaleIntercept") or [0.0])[0] for s in slices]
    modality = str(first.get("Modality", "OT"))
    rescale = modality == "CT" or any(v != 1.0 for v in slopes) or any(v != 0.0 for v in intercepts)
    padding = _padding_range(first)
    fill = PADDING_HU if modality == "CT" else 0

    stored = _pixels(slices[0])
    if len(slices) > 1 and stored.ndim == 4:
        raise GeometryError(f"{slices[0].path}: a multi-frame file inside a series folder")
    if stored.size == 0:
        raise EmptyImageError(slices[0].path, f"decoded pixel array has shape {stored.shape}")
    dtype = np.float32 if rescale else stored.dtype
    if along is None or stored.ndim == 4:  # a 2D image or a multi-frame file: one piece
        array = np.empty(stored.shape, dtype)
        n_pad = _fill(array, stored, slopes[0], intercepts[0], padding, fill)
    else:  # slice by slice, straight into the volume (each slice's work stays in cache)
        array = np.empty((stored.shape[0], len(slices)) + stored.shape[1:], dtype)
        n_pad = _fill(array[:, 0], stored, slopes[0], intercepts[0], padding, fill)
        for i, s in enumerate(slices[1:], start=1):
            n_pad += _fill(array[:, i], _pixels(s), slopes[i], intercepts[i], padding, fill)
    spacing, origin, direction = _geometry(source, first, along, array.ndim - 1, strict_spacing)
    meta = _meta(source, slices, first, modality, slopes, intercepts, padding, n_pad)
    return MedImage(array, spacing, origin, direction, meta)


def _fill(out: np.ndarray, stored: np.ndarray, slope: float, intercept: float,
          padding: tuple[int, int] | None, fill: float) -> int:
    """Write ``stored × slope + intercept`` into ``out``, padding voxels as ``fill``; their count.

    Padding is found in the stored integers, before the cast to ``out``'s dtype.
    """
    out[...] = stored
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    if padding is None:
        return 0
    hit = stored == padding[0] if padding[0] == padding[1] else (stored >= padding[0]) & (stored <= padding[1])
    n_pad = int(np.count_nonzero(hit))
    if n_pad:
        np.copyto(out, fill, where=hit, casting="unsafe")
    return n_pad


def _geometry(source: Path, first: Dataset, along: np.ndarray | None, nspatial: int,
              strict_spacing: bool) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray | None]:
    """Spacing, origin and direction in (z, y, x) order (see the module docstring)."""
    row_spacing, col_spacing = (_floats(first, "PixelSpacing") or _floats(first, "ImagerPixelSpacing")
                                or [1.0, 1.0])[:2]
    if nspatial == 2:
        return (row_spacing, col_spacing), (), None
    spacing = (_z_spacing(source, along, first, strict_spacing), row_spacing, col_spacing)
    ipp = _floats(first, "ImagePositionPatient")
    origin = (ipp[2], ipp[1], ipp[0]) if ipp and len(ipp) == 3 else ()
    orientation = _orientation(first)
    direction = (np.column_stack([np.cross(*orientation), orientation[1], orientation[0]])
                 if orientation is not None else None)
    return spacing, origin, direction


def _first(header: Dataset, keyword: str) -> float | None:
    values = _floats(header, keyword)
    return values[0] if values else None


def _meta(source: Path, slices: list[_Slice], first: Dataset, modality: str, slopes: list[float],
          intercepts: list[float], padding: tuple[int, int] | None, n_pad: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "modality": modality,
        "patient_id": str(first.get("PatientID", "")),
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "source": str(source),
        "format": "dicom",
        "n_files": len(slices),
        "sop_uids": [str(s.header.get("SOPInstanceUID", "")) for s in slices],
        "slice_positions": [_floats(s.header, "ImagePositionPatient") for s in slices],
        "rescale_slope": float(slopes[0]),
        "rescale_intercept": float(intercepts[0]),
        "padding_value": None if padding is None else padding[0],
        "padding_voxels": n_pad,
        "photometric": str(first.get("PhotometricInterpretation", "")),
        "transfer_syntax": str(getattr(first, "file_meta", {}).get("TransferSyntaxUID", "")),
    }
    optional = {
        "window_center": _first(first, "WindowCenter"),
        "window_width": _first(first, "WindowWidth"),
        "slice_thickness": _first(first, "SliceThickness"),
        "kvp": _first(first, "KVP"),
        "manufacturer": str(first.get("Manufacturer", "")) or None,
        "model": str(first.get("ManufacturerModelName", "")) or None,
        "series_description": str(first.get("SeriesDescription", "")) or None,
        "kernel": str(first.get("ConvolutionKernel", "")) or None,
    }
    meta.update({k: v for k, v in optional.items() if v is not None})
    return meta
