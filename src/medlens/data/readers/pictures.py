"""Pictures (PNG, JPEG, BMP through Pillow; TIFF through tifffile) to :class:`~medlens.image.MedImage`.

Shape rule: grayscale ``(1, H, W)``, RGB ``(3, H, W)``; an alpha channel that is fully opaque
everywhere (all 255, or 65535 for 16-bit) carries nothing and is dropped, any other alpha is kept as
a fourth channel. Palette images are expanded to RGB(A). A multi-page TIFF stack ``(D, H, W)`` is a
volume ``(1, D, H, W)``. Values keep their stored dtype (8-bit ``uint8``, 16-bit ``uint16``, ...).
Pictures carry no reliable physical spacing, so ``spacing`` is 1.0 per axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medlens.data.readers._checks import existing_file
from medlens.errors import EmptyImageError, UnreadableFileError
from medlens.files import write_atomically
from medlens.image import MedImage

TIFF_SUFFIXES = (".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES


def read_picture(path: str | Path) -> MedImage:
    """Read a PNG, JPEG, BMP or TIFF picture, channel first (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The picture file.

    Returns
    -------
    MedImage
        ``(C, H, W)`` (or ``(1, D, H, W)`` for a TIFF stack), stored dtype, modality ``OT``.
    """
    path = existing_file(path)
    try:
        array = _read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _read_pillow(path)
    except (OSError, ValueError, SyntaxError, tifffile.TiffFileError) as exc:
        raise UnreadableFileError(path, f"cannot decode the picture ({exc})") from exc
    if array.size == 0:
        raise EmptyImageError(path, f"picture has shape {array.shape}")
    array = _drop_opaque_alpha(array)
    spacing = (1.0,) * (array.ndim - 1)
    return MedImage(array, spacing, meta={"modality": "OT", "source": str(path), "format": "picture"})


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("L" if im.mode == "1" else "RGB")
        array = np.asarray(im)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = series.asarray(), series.axes
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
