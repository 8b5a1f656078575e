"""Pictures (PNG, JPEG, BMP through Pillow; TIFF through tifffile) to :class:`~medlens.image.MedImage`.

Shape rule: grayscale ``(1, H, W)``, RGB ``(3, H, W)``; an alpha channel that is fully opaque
everywhere (all 255, or 65535 for 16-bit) carries nothing and is dropped, any other alpha is kept as
a fourth channel. Palette images are expanded to RGB(A). A multi-page TIFF stack ``(D, H, W)`` is a
volume ``(1, D, H, W)``. Values keep their stored dtype (8-bit ``uint8``, 16-bit ``uint16``, ...).
Pictures carry no reliable physical spacing, so ``spacing`` is 1.0 per axis.

Size first: the width, height, pages and sample type in the header (Pillow opens lazily; tifffile reads the
page tags) must fit :mod:`medlens.limits` before any pixel is decoded, so a 70-byte PNG or a 200-byte TIFF
claiming 60000 × 60000 pixels is refused with :class:`~medlens.errors.ImageTooLargeError` instead of
allocating gigabytes. Pillow's own decompression-bomb check (``PIL.Image.MAX_IMAGE_PIXELS``) is switched
off for the header read only, so that ``MEDLENS_MAX_PIXELS`` alone rules (it is left as it was for every
other use of Pillow in the process). Float TIFFs holding NaN
or infinity raise :class:`~medlens.errors.NonFiniteImageError` (or, with ``non_finite="flag"``, are
counted in ``meta["non_finite_voxels"]``).
"""

from __future__ import annotations

from pathlib import Path

import math
import struct
import zlib

import numpy as np
import tifffile
from PIL import Image

from medlens.data.readers._checks import check_non_finite_mode, count_non_finite, existing_file
from medlens.errors import EmptyImageError, UnreadableFileError
from medlens.files import write_atomically
from medlens.image import MedImage
from medlens.limits import check_size

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, tifffile.TiffFileError,
                  ZeroDivisionError, TypeError, NotImplementedError, OverflowError)
"""What Pillow and tifffile raise on a damaged file; tifffile's ZeroDivisionError and TypeError (on tags of
the wrong type or a zero tile size), NotImplementedError (a bit depth only the optional imagecodecs
package decodes) and OverflowError (an infinite float tag used as a size) were found by
benchmarks/quality/fuzz_readers.py."""
# bytes per sample of Pillow modes that are not 8-bit
_MODE_ITEMSIZE = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

TIFF_SUFFIXES = (".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES


def read_picture(path: str | Path, *, non_finite: str = "error") -> MedImage:
    """Read a PNG, JPEG, BMP or TIFF picture, channel first (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The picture file.
    non_finite : {"error", "flag"}
        What NaN or infinite values (float TIFF) do: raise, or count in ``meta["non_finite_voxels"]``.

    Returns
    -------
    MedImage
        ``(C, H, W)`` (or ``(1, D, H, W)`` for a TIFF stack), stored dtype, modality ``OT``.

    Raises
    ------
    MissingPathError, EmptyImageError, UnreadableFileError, ImageTooLargeError, NonFiniteImageError
    """
    path = existing_file(path)
    mode = check_non_finite_mode(non_finite)
    try:
        array = _read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _read_pillow(path)
    except _DECODE_ERRORS as exc:
        raise UnreadableFileError(path, f"cannot decode the picture ({type(exc).__name__}: {exc})") from exc
    if array.size == 0:
        raise EmptyImageError(path, f"picture has shape {array.shape}")
    n_bad = count_non_finite(array, path, mode)
    array = _drop_opaque_alpha(array)
    spacing = (1.0,) * (array.ndim - 1)
    return MedImage(array, spacing, meta={"modality": "OT", "source": str(path), "format": "picture",
                                          "non_finite_voxels": n_bad})


def _open_pillow(path: Path) -> Image.Image:
    """``Image.open`` (header only) with Pillow's own decompression-bomb check off for that call: the
    :func:`check_size` that follows, before any decoding, replaces it and names the claimed size."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_pillow_checked(path: Path) -> Image.Image:
    """A picture opened by Pillow (header read, pixels not yet decoded) after the size its header claims passed
    :func:`medlens.limits.check_size`."""
    im = _open_pillow(path)
    width, height = im.size
    channels = 4 if im.mode in ("P", "PA", "RGBA", "CMYK", "LA") else len(im.getbands())
    try:
        check_size(path, (height, width), channels=channels, itemsize=_MODE_ITEMSIZE.get(im.mode, 1))
    except BaseException:
        im.close()
        raise
    return im


def tiff_series_checked(tif: "tifffile.TiffFile", path: Path):
    """The first image series of an open TIFF after the size its tags claim passed
    :func:`medlens.limits.check_size`."""
    if not tif.series:
        raise UnreadableFileError(path, "TIFF holds no image series")
    series = tif.series[0]
    shape, axes = tuple(series.shape), series.axes
    channels = math.prod(n for n, a in zip(shape, axes) if a in "SC")
    spatial = [n for n, a in zip(shape, axes) if a not in "SC"]
    check_size(path, spatial, channels=channels, itemsize=np.dtype(series.dtype).itemsize)
    return series


def _read_pillow(path: Path) -> np.ndarray:
    with open_pillow_checked(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("L" if im.mode == "1" else "RGB")
        array = np.asarray(im)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = tiff_series_checked(tif, path)
        axes = series.axes
        array = series.asarray()
    channel_axis = next((axes.index(a) for a in "SC" if a in axes), None)  # S: samples per pixel
    array = array[None] if channel_axis is None else np.moveaxis(array, channel_axis, 0)
    if array.ndim > 4:
        raise UnreadableFileError(path, f"TIFF with axes {axes}; expected at most 3 spatial axes")
    return array


def _drop_opaque_alpha(array: np.ndarray) -> np.ndarray:
    if array.shape[0] not in (2, 4):
        return array
    opaque = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1.0
    return array[:-1] if np.all(array[-1] == opaque) else array


def write_png(array2d: np.ndarray, path: str | Path) -> Path:
    """Write a 2D array as a lossless grayscale PNG.

    Parameters
    ----------
    array2d : np.ndarray
        ``(H, W)`` (or ``(1, H, W)``) of dtype ``bool`` (written 0/255), ``uint8`` or ``uint16``
        (16-bit PNG). Other dtypes must be scaled by the caller, which knows their range.
    path : str or Path
        Target file; its folder is created.

    Returns
    -------
    Path
        The written file.
    """
    array = np.asarray(array2d)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"write_png needs a 2D array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png needs bool, uint8 or uint16 data, got {array.dtype}; scale it first")
    picture = Image.fromarray(np.ascontiguousarray(array))
    return write_atomically(path, lambda tmp: picture.save(tmp, format="PNG"))
