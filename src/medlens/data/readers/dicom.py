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
or raise :class:`~medlens.errors.GeometryError` with ``strict_spacing=True``.

**Missing slices are refused**, not resampled: a gap wider than :data:`MISSING_SLICE_RATIO` (1.5) times
the median gap raises :class:`~medlens.errors.MissingSliceError`, naming the files on either side, before
any pixel is decoded. Reading such a series with the median spacing puts every slice beyond the gap at the
wrong z (the old behaviour); resampling onto the true positions would get z right but fill the gap with
interpolated tissue that was never imaged (a 3 mm nodule can lie entirely inside one missing 2.5 mm slice),
and a gap almost always means an incomplete transfer, which the user can repair by fetching the files.
Positions and orientations that are not finite, orientations that are not two orthogonal unit vectors and
pixel spacings that are not positive are :class:`~medlens.errors.GeometryError` too. The origin is the
first sorted slice's ``ImagePositionPatient`` in (z, y, x) order; ``direction`` holds the LPS
directions of the (z, y, x) array axes as columns: ``r × c``, ``c`` and ``r``.

Intensities
-----------
``value = stored × RescaleSlope + RescaleIntercept`` (PS3.3 C.11.1.1.2), computed per slice in
float32, which is exact for integer stored values and integer slope and intercept (LIDC-IDRI:
HU = stored − 1024). A slope of 0 (every pixel would become the intercept: a blank image that looks like
data) or a slope or intercept that is not finite raises :class:`~medlens.errors.RescaleError` naming the
slice; ``meta["rescale_slope"]``/``["rescale_intercept"]`` hold the value every slice uses, or the
per-slice list when they differ (what ``medlens inspect`` reports). NaN or infinite output values (float
pixel data, or a rescale that overflows float32) raise :class:`~medlens.errors.NonFiniteImageError`
unless ``non_finite="flag"``. The output is float32 when the modality is CT or any slice has a slope ≠ 1 or
an intercept ≠ 0; otherwise the stored dtype is kept. Voxels equal to ``PixelPaddingValue`` (or
within ``PixelPaddingValue`` … ``PixelPaddingRangeLimit``) are padding, not tissue: they are set
to :data:`PADDING_HU` (−1024 HU, the bottom of the air range) for CT and to 0 (no signal)
otherwise, and their number is ``meta["padding_voxels"]``. The padding value
is read with the pixel data's signedness: LIDC-IDRI-0001 stores 63536 (US), which is −2000 for
its signed 16-bit pixels.

Before any pixel is decoded, every slice must store the same layout (rows, columns, frames, samples,
bits) and the volume those headers claim must fit :mod:`medlens.limits`
(:class:`~medlens.errors.ImageTooLargeError` otherwise).

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
    MissingSliceError,
    MixedSeriesError,
    NoDicomError,
    RescaleError,
    UnreadableFileError,
)
from medlens.data.readers._checks import check_non_finite_mode, count_non_finite
from medlens.image import MedImage
from medlens.limits import check_size

PADDING_HU = -1024.0
"""Value given to CT padding voxels (``PixelPaddingValue``): air, −1024 HU."""

GAP_RTOL = 0.01
GAP_ATOL = 0.01
MISSING_SLICE_RATIO = 1.5
"""A gap between neighbouring slices larger than this many median gaps means slices are missing."""
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


def read_dicom(path: str | Path, *, series_uid: str | None = None, strict_spacing: bool = False,
               non_finite: str = "error") -> MedImage:
    """Read a DICOM file or a series folder (see the module docstring for shapes and units).

    Parameters
    ----------
    path : str or Path
        A DICOM file, or a folder searched recursively for the files of one series.
    series_uid : str, optional
        The SeriesInstanceUID to load when the folder holds several series.
    strict_spacing : bool
        Raise :class:`GeometryError` instead of warning when the slice gaps are uneven. Missing slices
        are refused either way (:class:`MissingSliceError`).
    non_finite : {"error", "flag"}
        What a NaN or infinite value does (float pixel data, or a rescale that overflows float32):
        ``"error"`` raises :class:`NonFiniteImageError`; ``"flag"`` returns the image and counts the
        values in ``meta["non_finite_voxels"]`` (``medlens inspect`` uses it to report them).

    Returns
    -------
    MedImage
        ``meta`` has ``modality``, ``patient_id``, ``study_uid``, ``series_uid``, ``source``,
        ``sop_uids`` and ``slice_positions`` (per sorted slice), ``rescale_slope`` and
        ``rescale_intercept`` (one number, or the per-slice list when slices differ),
        ``padding_voxels``, ``non_finite_voxels``, ``patient_name`` and ``patient_birth_date``
        (identifiers: never shown outside DICOM without ``--keep-identifiers``, see
        :mod:`medlens.data.identifiers`) and, where present, ``window_center``, ``window_width``,
        ``manufacturer``, ``kvp``, ``series_description``.

    Raises
    ------
    MissingPathError, NoDicomError, MixedSeriesError, UnreadableFileError, MissingPixelDataError,
    CompressedDicomError, EmptyImageError, GeometryError, MissingSliceError, RescaleError,
    ImageTooLargeError, NonFiniteImageError
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
    return _build(path, slices, strict_spacing, check_non_finite_mode(non_finite))


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
        if header is not None and _text(header, "SeriesInstanceUID"):
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
    return _file_meta(header, "MediaStorageSOPClassUID") or ""


def _file_meta(header: Dataset, keyword: str) -> Any:
    """An element of the file meta information (group 0002), None when absent or unreadable: pydicom
    converts on access and raises NotImplementedError for an unknown VR (found by fuzz_readers.py)."""
    meta = getattr(header, "file_meta", None)
    if meta is None:
        return None
    try:
        return meta.get(keyword)
    except Exception:  # a damaged meta element is treated as absent; decoding then fails with a named error
        return None


def _group_by_series(slices: list[_Slice]) -> dict[str, list[_Slice]]:
    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(_text(s.header, "SeriesInstanceUID"), []).append(s)
    return groups


def _series_infos(groups: dict[str, list[_Slice]]) -> list[SeriesInfo]:
    infos = [
        SeriesInfo(
            uid=key,
            n_files=len(members),
            modality=_text(members[0].header, "Modality") or "OT",
            description=_text(members[0].header, "SeriesDescription"),
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


def _where(header: Dataset) -> str | None:
    return getattr(header, "filename", None) or None


def _element(header: Dataset, keyword: str) -> Any:
    """``header.get(keyword)``; a value pydicom cannot convert (a broken DS or IS string) names the file."""
    try:
        return header.get(keyword)
    except Exception as exc:  # pydicom converts on access and raises ValueError, TypeError, OverflowError...
        raise UnreadableFileError(_where(header), f"{keyword} cannot be read ({exc})") from exc


def _floats(header: Dataset, keyword: str) -> list[float] | None:
    """The numbers of ``keyword`` (None when absent or empty); a value that is not a number names the file."""
    value = _element(header, keyword)
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnreadableFileError(_where(header), f"{keyword} is {value!r}, not a number") from exc


def _finite_floats(header: Dataset, keyword: str) -> list[float] | None:
    """:func:`_floats` that must be finite (geometry): NaN or infinity is a :class:`GeometryError`."""
    values = _floats(header, keyword)
    if values is not None and not all(np.isfinite(values)):
        raise GeometryError(f"{_where(header)}: {keyword} {values} is not finite")
    return values


def _int(header: Dataset, keyword: str, default: int) -> int:
    """An integer attribute (Rows, BitsAllocated...); a value that is not an integer names the file."""
    value = _element(header, keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnreadableFileError(_where(header), f"{keyword} is {value!r}, not an integer") from exc


def _orientation(header: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Row and column direction cosines; None when absent, :class:`GeometryError` when not two
    orthogonal unit vectors (within 0.01)."""
    cosines = _finite_floats(header, "ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    if (abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01
            or abs(float(row @ col)) > 0.01):
        raise GeometryError(f"{_where(header)}: ImageOrientationPatient {cosines} is not two orthogonal unit "
                            "vectors: the slice has no defined orientation")
    return row, col


def _sort(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray | None]:
    """Slices in order along the normal and their positions ``p`` along it (None without geometry)."""
    orientation = _orientation(slices[0].header)
    positions = [_finite_floats(s.header, "ImagePositionPatient") for s in slices]
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
        _refuse_missing_slices(folder, [slices[i] for i in order], along)
    return [slices[i] for i in order], along


def _refuse_missing_slices(folder: Path, slices: list[_Slice], along: np.ndarray) -> None:
    """:class:`MissingSliceError` when a gap exceeds :data:`MISSING_SLICE_RATIO` × the median gap."""
    gaps = np.diff(along)
    median = float(np.median(gaps))
    missing = np.flatnonzero(gaps > MISSING_SLICE_RATIO * median)
    if not missing.size:
        return
    i = int(missing[0])
    more = f"; {missing.size - 1} more such gap(s)" if missing.size > 1 else ""
    raise MissingSliceError(
        f"{folder}: slices missing between {slices[i].path.name} (at {along[i]:.3f} mm) and "
        f"{slices[i + 1].path.name} (at {along[i + 1]:.3f} mm): a gap of {gaps[i]:.3f} mm where the slices "
        f"are {median:.4f} mm apart, about {round(gaps[i] / median) - 1} slice(s) missing{more}. The series "
        "is incomplete (a transfer cut short?): fetch the missing files, or read the parts on either side "
        "of the gap as separate folders"
    )


def _z_spacing(folder: Path, along: np.ndarray | None, header: Dataset, strict: bool) -> float:
    if along is None or len(along) < 2:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _finite_floats(header, keyword)
            if value and value[0] > 0:
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
    if _int(header, "PixelRepresentation", 0) != 1:
        return value
    allocated = _int(header, "BitsAllocated", 16)
    stored = _int(header, "BitsStored", allocated)
    if value >= 2 ** (allocated - 1):
        return value - 2**allocated
    if value >= 2 ** (stored - 1):
        return value - 2**stored
    return value


def _padding_range(header: Dataset) -> tuple[int, int] | None:
    if _element(header, "PixelPaddingValue") is None:
        return None
    low = _signed(_int(header, "PixelPaddingValue", 0), header)
    limit = _element(header, "PixelPaddingRangeLimit")
    high = low if limit is None else _signed(_int(header, "PixelPaddingRangeLimit", 0), header)
    return min(low, high), max(low, high)


def _pixels(s: _Slice) -> np.ndarray:
    """Decoded stored values of one file, channel first: ``(C, H, W)`` or ``(C, F, H, W)``."""
    if not any(k in s.header for k in _PIXEL_KEYWORDS):
        raise MissingPixelDataError(s.path, "no PixelData (7FE0,0010) element: nothing to show")
    syntax = _file_meta(s.header, "TransferSyntaxUID")
    if syntax is not None and not isinstance(syntax, str):  # e.g. several values after damage
        raise UnreadableFileError(s.path, f"TransferSyntaxUID {syntax!r} is not one UID: the file meta "
                                          "information is corrupt")
    syntax = None if syntax is None else uid.UID(str(syntax))
    try:
        arr, _ = get_decoder(syntax).as_array(s.header, view_only=True)  # read-only; copied by the caller
    except Exception as exc:  # pydicom raises ValueError/RuntimeError/NotImplementedError/OSError...
        raise _pixel_error(s, syntax, exc) from exc
    samples = _int(s.header, "SamplesPerPixel", 1)
    return np.moveaxis(arr, -1, 0) if samples > 1 else arr[None]


def _pixel_error(s: _Slice, syntax: uid.UID | None, exc: Exception) -> Exception:
    """CompressedDicomError when no installed decoder handles ``syntax``, else UnreadableFileError."""
    if syntax is not None and not syntax.is_transfer_syntax:
        return UnreadableFileError(s.path, f"TransferSyntaxUID {syntax} is not a transfer syntax: the file meta "
                                           "information is corrupt")
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


def _layout(s: _Slice) -> tuple[int, int, int, int, int, int]:
    """(Rows, Columns, NumberOfFrames, SamplesPerPixel, BitsAllocated, PixelRepresentation) of a slice."""
    h = s.header
    return (_int(h, "Rows", 0), _int(h, "Columns", 0), _int(h, "NumberOfFrames", 1) or 1,
            _int(h, "SamplesPerPixel", 1), _int(h, "BitsAllocated", 16), _int(h, "PixelRepresentation", 0))


def _check_layout(source: Path, slices: list[_Slice], volume: bool, output_itemsize: int) -> None:
    """Every slice stores the same pixel layout, and the decoded volume fits :mod:`medlens.limits`.

    Called before any pixel data is decoded: the size comes from the headers alone.
    """
    first = _layout(slices[0])
    rows, cols, frames, samples, bits, _ = first
    if rows <= 0 or cols <= 0:
        raise EmptyImageError(slices[0].path, f"image has {rows} rows and {cols} columns")
    if frames < 0 or samples <= 0 or bits <= 0:
        raise UnreadableFileError(slices[0].path, f"NumberOfFrames {frames}, SamplesPerPixel {samples}, "
                                                  f"BitsAllocated {bits}: the header is corrupt")
    for s in slices[1:]:
        layout = _layout(s)
        if layout[:2] != (rows, cols):
            raise GeometryError(f"{s.path}: {layout[0]}×{layout[1]} pixels, but {slices[0].path} has {rows}×{cols}")
        if layout != first:
            raise GeometryError(f"{s.path}: frames, samples per pixel, bits allocated or pixel representation "
                                f"{layout[2:]} differ from {slices[0].path} {first[2:]}")
    if len(slices) > 1 and frames > 1:
        raise GeometryError(f"{slices[0].path}: a multi-frame file inside a series folder")
    depth = len(slices) * frames
    spatial = (depth, rows, cols) if (volume or frames > 1) else (rows, cols)
    check_size(source, spatial, channels=samples, itemsize=output_itemsize)


def _rescale(slices: list[_Slice]) -> tuple[list[float], list[float]]:
    """Per-slice RescaleSlope and RescaleIntercept (1 and 0 when absent); :class:`RescaleError` for a slope
    of 0 (every pixel would become the intercept: a blank image that looks like data) or any value that
    is not finite."""
    slopes, intercepts = [], []
    for s in slices:
        slope = (_floats(s.header, "RescaleSlope") or [1.0])[0]
        intercept = (_floats(s.header, "RescaleIntercept") or [0.0])[0]
        if not np.isfinite(slope) or slope == 0:
            raise RescaleError(s.path, f"RescaleSlope {slope:g}: stored values cannot be mapped to "
                                       "intensities (value = stored × slope + intercept needs a finite, "
                                       "non-zero slope); the file is corrupt")
        if not np.isfinite(intercept):
            raise RescaleError(s.path, f"RescaleIntercept {intercept:g} is not finite; the file is corrupt")
        slopes.append(slope)
        intercepts.append(intercept)
    return slopes, intercepts


def _build(source: Path, slices: list[_Slice], strict_spacing: bool, non_finite: str) -> MedImage:
    slices, along = _sort(source, slices)
    first = slices[0].header
    slopes, intercepts = _rescale(slices)
    modality = str(_element(first, "Modality") or "OT")
    rescale = modality == "CT" or any(v != 1.0 for v in slopes) or any(v != 0.0 for v in intercepts)
    bits = _int(first, "BitsAllocated", 16)
    float_pixels = "FloatPixelData" in first or "DoubleFloatPixelData" in first
    _check_layout(source, slices, along is not None, 4 if rescale else max(1, (bits + 7) // 8))
    padding = None if float_pixels else _padding_range(first)
    fill = PADDING_HU if modality == "CT" else 0

    stored = _pixels(slices[0])
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
    n_bad = count_non_finite(array, source, non_finite)
    spacing, origin, direction = _geometry(source, first, along, array.ndim - 1, strict_spacing)
    meta = _meta(source, slices, first, modality, slopes, intercepts, padding, n_pad)
    meta["non_finite_voxels"] = n_bad
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
    row_spacing, col_spacing = ((_finite_floats(first, "PixelSpacing") or _finite_floats(first, "ImagerPixelSpacing")
                                 or [1.0, 1.0]) + [None, None])[:2]
    if row_spacing is None or col_spacing is None or row_spacing <= 0 or col_spacing <= 0:
        raise GeometryError(f"{_where(first) or source}: pixel spacing {row_spacing}, {col_spacing} mm: "
                            "PixelSpacing needs two positive numbers")
    if nspatial == 2:
        return (row_spacing, col_spacing), (), None
    spacing = (_z_spacing(source, along, first, strict_spacing), row_spacing, col_spacing)
    ipp = _finite_floats(first, "ImagePositionPatient")
    origin = (ipp[2], ipp[1], ipp[0]) if ipp and len(ipp) == 3 else ()
    orientation = _orientation(first)
    direction = (np.column_stack([np.cross(*orientation), orientation[1], orientation[0]])
                 if orientation is not None else None)
    return spacing, origin, direction


def _first(header: Dataset, keyword: str) -> float | None:
    """The first number of an informative attribute (window, kVp...); None when absent or not a number."""
    try:
        values = _floats(header, keyword)
    except UnreadableFileError:
        return None
    return values[0] if values and np.isfinite(values[0]) else None


def _text(header: Dataset, keyword: str) -> str:
    try:
        value = header.get(keyword)
    except Exception:  # an informative attribute pydicom cannot convert is shown as absent
        return ""
    return "" if value is None else str(value)


def _uniform(values: list[float]) -> float | list[float]:
    """One value when every slice has it, else the per-slice list (what ``inspect`` shows)."""
    return float(values[0]) if all(v == values[0] for v in values) else [float(v) for v in values]


def _meta(source: Path, slices: list[_Slice], first: Dataset, modality: str, slopes: list[float],
          intercepts: list[float], padding: tuple[int, int] | None, n_pad: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "modality": modality,
        "patient_id": _text(first, "PatientID"),
        "patient_name": _text(first, "PatientName"),
        "patient_birth_date": _text(first, "PatientBirthDate"),
        "study_uid": _text(first, "StudyInstanceUID"),
        "series_uid": _text(first, "SeriesInstanceUID"),
        "source": str(source),
        "format": "dicom",
        "n_files": len(slices),
        "sop_uids": [_text(s.header, "SOPInstanceUID") for s in slices],
        "slice_positions": [_floats(s.header, "ImagePositionPatient") for s in slices],
        "rescale_slope": _uniform(slopes),
        "rescale_intercept": _uniform(intercepts),
        "padding_value": None if padding is None else padding[0],
        "padding_voxels": n_pad,
        "photometric": _text(first, "PhotometricInterpretation"),
        "transfer_syntax": str(_file_meta(first, "TransferSyntaxUID") or ""),
    }
    optional = {
        "window_center": _first(first, "WindowCenter"),
        "window_width": _first(first, "WindowWidth"),
        "slice_thickness": _first(first, "SliceThickness"),
        "kvp": _first(first, "KVP"),
        "manufacturer": _text(first, "Manufacturer") or None,
        "model": _text(first, "ManufacturerModelName") or None,
        "series_description": _text(first, "SeriesDescription") or None,
        "kernel": _text(first, "ConvolutionKernel") or None,
    }
    meta.update({k: v for k, v in optional.items() if v is not None})
    return meta
