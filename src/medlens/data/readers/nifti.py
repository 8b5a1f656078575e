"""NIfTI files (``.nii``, ``.nii.gz``) to and from :class:`~medlens.image.MedImage`.

Orientation convention
----------------------
nibabel gives the voxel array in stored index order ``(i, j, k)`` (conventionally x, y, z) and an
affine ``A`` that maps ``(i, j, k, 1)`` to RAS+ world millimetres. medlens keeps the voxels as
stored and only reverses the axis order, so ``array[c, k, j, i] = data[i, j, k(, c)]``:

* ``spacing`` is the zooms reversed, ``(dk, dj, di)``;
* world coordinates are converted RAS → LPS (DICOM) with ``F = diag(−1, −1, 1)``;
* ``origin`` is ``F · A[:3, 3]`` (the world position of voxel 0), written in (z, y, x) order;
* ``direction`` has as columns the unit LPS directions ``F · A[:3, a] / |A[:3, a]|`` of the array
  axes ``a = k, j, i``.

No resampling or reorientation to a canonical frame is done; the voxels are those in the file. A 4D
file ``(i, j, k, t)`` becomes ``(t, k, j, i)``: the fourth axis is the channel axis. Intensities come
back in the stored dtype, with the header's ``scl_slope``/``scl_inter`` applied when present (float).
:func:`write_nifti` inverts all of this, so a round trip keeps array, spacing, origin and direction.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medlens.data.readers._checks import check_non_finite_mode, count_non_finite, existing_file
from medlens.errors import EmptyImageError, UnreadableFileError
from medlens.image import MedImage
from medlens.limits import check_size

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def read_nifti(path: str | Path, *, non_finite: str = "error") -> MedImage:
    """Read a NIfTI file; see the module docstring for the axis and world conventions.

    The header is read first: the array shape and type it claims must fit :mod:`medlens.limits` before
    a byte of the image is decompressed (a 1.7 MB ``.nii.gz`` can claim 1200³ voxels).

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file holding a 2D, 3D or 4D image.
    non_finite : {"error", "flag"}
        NaN or infinite voxels (float images) raise :class:`~medlens.errors.NonFiniteImageError`, or with
        ``"flag"`` are counted in ``meta["non_finite_voxels"]``.

    Returns
    -------
    MedImage
        ``(C, D, H, W)`` for 3D and 4D files (C = 1, or the fourth axis), ``(C, H, W)`` for 2D.

    Raises
    ------
    MissingPathError, EmptyImageError, UnreadableFileError, ImageTooLargeError, NonFiniteImageError
    """
    path = existing_file(path)
    mode = check_non_finite_mode(non_finite)
    img, shape = open_nifti_checked(path)
    try:
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as exc:  # truncated or corrupt data: EOFError, zlib.error, OSError, ValueError...
        raise UnreadableFileError(path, f"cannot read as NIfTI ({exc})") from exc
    if data.shape != shape:
        raise UnreadableFileError(path, f"NIfTI data has shape {data.shape}, its header says {shape}")
    n_bad = count_non_finite(data, path, mode)
    if not np.all(np.isfinite(affine)):
        raise UnreadableFileError(path, f"affine is not finite (pixdim, qform or sform corrupt):\n{affine}")
    nspatial = min(data.ndim, 3)
    spatial = np.transpose(data, tuple(range(nspatial))[::-1] + tuple(range(nspatial, data.ndim)))
    array = np.ascontiguousarray(np.moveaxis(spatial, -1, 0) if data.ndim == 4 else spatial[None])

    columns = RAS_TO_LPS @ affine[:3, :nspatial]
    zooms = np.linalg.norm(columns, axis=0)
    if np.any(zooms == 0):
        raise UnreadableFileError(path, f"affine has a zero column:\n{affine}")
    world_origin = RAS_TO_LPS @ affine[:3, 3]
    direction = (columns / zooms)[:nspatial, ::-1] if nspatial == 2 else (columns / zooms)[:, ::-1]
    meta = {
        "modality": "OT",
        "source": str(path),
        "format": "nifti",
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
        "non_finite_voxels": n_bad,
    }
    return MedImage(array, tuple(zooms[::-1]), tuple(world_origin[:nspatial][::-1]), direction, meta)


def open_nifti_checked(path: Path) -> tuple[nib.Nifti1Image, tuple[int, ...]]:
    """The NIfTI image (header read, data not yet) and its shape, after the shape and type the header claims
    passed :func:`medlens.limits.check_size`; a 2D to 4D, non-empty image, else a named error."""
    try:
        img = nib.load(str(path))
        shape = tuple(int(d) for d in img.header.get_data_shape())
        itemsize = _decoded_itemsize(img)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, OSError...
        raise UnreadableFileError(path, f"cannot read as NIfTI ({exc})") from exc
    if len(shape) not in (2, 3, 4):
        raise UnreadableFileError(path, f"NIfTI with {len(shape)} dimensions; expected 2, 3 or 4")
    if 0 in shape:
        raise EmptyImageError(path, f"NIfTI array has shape {shape}")
    check_size(path, shape[:3][::-1], channels=shape[3] if len(shape) == 4 else 1, itemsize=itemsize)
    return img, shape


def _decoded_itemsize(img: nib.Nifti1Image) -> int:
    """Bytes per voxel of the array nibabel will return: the stored type's, or 8 when ``scl_slope`` /
    ``scl_inter`` scale it (nibabel then returns floats)."""
    stored = np.dtype(img.get_data_dtype()).itemsize
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    return 8 if (slope != 1.0 or inter != 0.0) else stored


def write_nifti(image: MedImage, path: str | Path) -> Path:
    """Write ``image`` as NIfTI-1 (gzip when ``path`` ends in ``.gz``), inverting :func:`read_nifti`.

    Parameters
    ----------
    image : MedImage
        ``(C, D, H, W)`` or ``(C, H, W)``; C > 1 is written as a fourth axis.
    path : str or Path
        Target file; its folder is created.

    Returns
    -------
    Path
        The written file. The affine is ``A[:3, a] = F · direction[:, a] · spacing[a]`` for the axes
        reversed to (x, y, z) order and ``A[:3, 3] = F · origin`` with ``F = diag(−1, −1, 1)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nspatial = image.array.ndim - 1
    data = np.transpose(image.array, tuple(range(image.array.ndim))[::-1])
    if image.array.shape[0] == 1:
        data = data[..., 0]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    direction = np.eye(3)
    direction[:nspatial, :nspatial] = np.asarray(image.direction)[:nspatial, :nspatial]
    spacing = np.ones(3)
    spacing[:nspatial] = image.spacing
    origin = np.zeros(3)
    origin[:nspatial] = image.origin
    # array axes (z, y, x) → NIfTI axes (x, y, z): reverse the axis columns, the spacing and the origin.
    order = list(range(nspatial))[::-1] + list(range(nspatial, 3))
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ (direction[:, order] * spacing[order])
    affine[:3, 3] = RAS_TO_LPS @ origin[order]
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path
