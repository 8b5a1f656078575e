"""Size limits that every reader checks from a file's header **before** decoding anything.

A PNG header can claim 60000 × 60000 pixels in 70 bytes, a 200-byte TIFF the same, a 1.7 MB gzip NIfTI
1200³ voxels: decoding such a claim allocates gigabytes before any error can be raised. Each reader
therefore reads the header first (PNG/JPEG/BMP through Pillow's lazy open, TIFF through tifffile's page
tags, NIfTI through nibabel's header, ``.npy`` members of an ``.npz`` through their array header, DICOM
through Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated of every slice) and calls
:func:`check_size`, which raises :class:`~medlens.errors.ImageTooLargeError` naming the file, the claim
and the limit.

The limits live here and nowhere else. Each can be changed with an environment variable, read at every
check (so a test or a script can set it for one call):

============================  ==============================================  ===================
variable                      limit                                           default
============================  ==============================================  ===================
``MEDLENS_MAX_PIXELS``        pixels of one 2D image (H × W)                  2**28 (16384²)
``MEDLENS_MAX_VOXELS``        voxels of one volume (D × H × W, all slices)    2**30 (1024³)
``MEDLENS_MAX_BYTES``         bytes of one decoded array (all channels)       2**32 (4 GiB)
============================  ==============================================  ===================

Values are integers (``1e9`` and ``2**30`` style strings are not accepted; write the digits). The byte
limit counts the array as the reader returns it (a CT series is float32 after rescaling: 4 bytes a voxel).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medlens.errors import ConfigError, ImageTooLargeError, UnreadableFileError

DEFAULTS = {"MEDLENS_MAX_PIXELS": 2**28, "MEDLENS_MAX_VOXELS": 2**30, "MEDLENS_MAX_BYTES": 2**32}


@dataclass(frozen=True)
class Limits:
    """The size limits in force (see the module docstring)."""

    max_pixels: int
    max_voxels: int
    max_bytes: int


def _read(variable: str) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return DEFAULTS[variable]
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(f"environment variable {variable}={raw!r}: not an integer") from None
    if value <= 0:
        raise ConfigError(f"environment variable {variable}={raw!r}: must be a positive integer")
    return value


def current_limits() -> Limits:
    """The limits now in force: the environment variables of the module docstring, else the defaults."""
    return Limits(_read("MEDLENS_MAX_PIXELS"), _read("MEDLENS_MAX_VOXELS"), _read("MEDLENS_MAX_BYTES"))


def check_size(path: str | Path | None, spatial: Sequence[int], *, channels: int = 1, itemsize: int = 1,
               what: str = "image") -> None:
    """Refuse a claimed array size before it is decoded.

    Parameters
    ----------
    path : str or Path
        The file (or series folder) whose header makes the claim; named in the error.
    spatial : sequence of int
        The claimed spatial shape: ``(H, W)`` for a picture or a 2D image, ``(D, H, W)`` for a volume
        (D counts every slice or frame), any length for an array of an archive (only bytes are checked).
    channels : int
        Samples per pixel (3 for RGB, the fourth NIfTI axis, ...).
    itemsize : int
        Bytes per sample of the array the reader will return.
    what : str
        ``"image"`` (pixel limit for 2D, voxel limit for 3D and more) or ``"array"`` (byte limit only).

    Raises
    ------
    UnreadableFileError
        A negative dimension (a corrupt header).
    ImageTooLargeError
        The claim exceeds ``MEDLENS_MAX_PIXELS``, ``MEDLENS_MAX_VOXELS`` or ``MEDLENS_MAX_BYTES``.
    """
    dims = [int(d) for d in spatial]
    if any(d < 0 for d in dims) or channels < 0 or itemsize < 0:
        raise UnreadableFileError(path, f"header claims a negative size {tuple(dims)}: the header is corrupt")
    limits = current_limits()
    n = math.prod(dims)
    claim = " × ".join(str(d) for d in dims) or "a scalar"
    if what == "image" and len(dims) <= 2 and n > limits.max_pixels:
        raise ImageTooLargeError(path, f"header claims {claim} = {n:,} pixels, more than the limit "
                                       f"{limits.max_pixels:,} (set MEDLENS_MAX_PIXELS to raise it); nothing was decoded")
    if what == "image" and len(dims) > 2 and n > limits.max_voxels:
        raise ImageTooLargeError(path, f"header claims {claim} = {n:,} voxels, more than the limit "
                                       f"{limits.max_voxels:,} (set MEDLENS_MAX_VOXELS to raise it); nothing was decoded")
    size = n * channels * itemsize
    if size > limits.max_bytes:
        raise ImageTooLargeError(path, f"header claims {claim} × {channels} channel(s) × {itemsize} byte(s) = "
                                       f"{size:,} bytes decoded, more than the limit {limits.max_bytes:,} "
                                       "(set MEDLENS_MAX_BYTES to raise it); nothing was decoded")
