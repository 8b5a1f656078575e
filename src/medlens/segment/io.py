"""Reading images and writing masks for segmentation, keeping each input's geometry.

Images come back as :class:`~medlens.image.MedImage` (channel first, spatial axes (z, y, x)). NIfTI
arrays are stored (x, y, z) on disk; they are transposed on read and back on write, and the file's
affine and header are kept in ``meta`` so a written mask has exactly the input's affine. A DICOM
series folder is read to Hounsfield units; its mask is written as NIfTI with the series' affine
(LPS → RAS). Every write goes to a temporary name in the target folder and is then renamed, so a
failed write never leaves a half-written file or replaces a good one.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image

from medlens.data.readers import read_dicom
from medlens.data.readers.nifti import open_nifti_checked
from medlens.data.readers.pictures import open_pillow_checked, tiff_series_checked
from medlens.errors import EmptyImageError, MedlensError, MissingPathError, UnreadableFileError
from medlens.files import write_atomically, write_csv_atomically
from medlens.image import MedImage

PICTURE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def case_name(path: Path) -> str:
    """File name without its image suffix (``a.nii.gz`` → ``a``)."""
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1] + PICTURE_SUFFIXES + (".npy",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(PICTURE_SUFFIXES + NIFTI_SUFFIXES)


def read_picture_array(path: Path) -> np.ndarray:
    """A 2D picture as ``(H, W)`` or ``(H, W, C)``; alpha channels are dropped. The size its header claims is
    checked against :mod:`medlens.limits` before any pixel is decoded."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                arr = tiff_series_checked(tif, path).asarray()
        else:
            with open_pillow_checked(path) as im:
                arr = np.asarray(im)
    except MedlensError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for a broken file
        raise UnreadableFileError(path, f"cannot read picture ({exc})") from exc
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., 0]
    if arr.size == 0:
        raise EmptyImageError(path, "picture has no pixels")
    return arr


def read_nifti_array(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The NIfTI data in (z, y, x) order and the nibabel image (for its affine and header); the size its header
    claims is checked against :mod:`medlens.limits` before the data is decompressed."""
    img, _ = open_nifti_checked(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise UnreadableFileError(path, f"cannot read NIfTI ({exc})") from exc
    if data.size == 0:
        raise EmptyImageError(path, "NIfTI volume has no voxels")
    return np.transpose(data, tuple(range(data.ndim))[::-1]), img


def read_image(path: str | Path) -> MedImage:
    """Read a picture, NIfTI file or DICOM series folder as a channel-first :class:`MedImage`.

    ``meta['format']`` is ``picture``, ``nifti`` or ``dicom``; NIfTI keeps ``meta['nifti']`` (the
    nibabel image) so that :func:`write_mask` reproduces its affine.
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path)
    if path.is_dir():
        image = read_dicom(path)
        image.meta["format"] = "dicom"
        return image
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        data, img = read_nifti_array(path)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])[::-1]
        return MedImage(data[None].astype(np.float32), zooms,
                        meta={"format": "nifti", "source": str(path), "nifti": img,
                              "dtype": str(data.dtype)})
    if path.name.lower().endswith(PICTURE_SUFFIXES):
        arr = read_picture_array(path)
        chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
        return MedImage(chw.astype(np.float32), (1.0, 1.0),
                        meta={"format": "picture", "source": str(path), "dtype": str(arr.dtype)})
    raise UnreadableFileError(path, "not a picture (png/tif/jpg), NIfTI (.nii/.nii.gz) or DICOM folder")


def write_table(columns: dict[str, np.ndarray], target: str | Path) -> Path:
    """Write equal-length columns as a CSV file (temporary name, then rename)."""
    import pandas as pd

    return write_csv_atomically(Path(target), pd.DataFrame(columns))


def mask_suffix(reference: MedImage | Path) -> str:
    """The file suffix a mask for ``reference`` (an image, or the path it is read from) is written with:
    ``.png`` for pictures, ``.nii.gz`` for NIfTI files and DICOM series."""
    if isinstance(reference, MedImage):
        picture = reference.meta.get("format") == "picture"
    else:
        picture = Path(reference).name.lower().endswith(PICTURE_SUFFIXES)
    return ".png" if picture else ".nii.gz"


def write_mask(mask: np.ndarray, reference: MedImage, target: str | Path, n_classes: int = 2,
               instances: bool = False) -> Path:
    """Write an integer label map with the geometry of ``reference``.

    Pictures → 8-bit PNG of the same size (a binary mask, ``n_classes == 2``, as 0/255 so that it is
    visible; otherwise the raw class indices). NIfTI → same affine and header, int16. DICOM → NIfTI
    whose affine is the series' (LPS → RAS). ``target`` must not be the reference file itself.
    With ``instances`` the map is an instance label image (0 background, 1..N): 16-bit PNG, int32 NIfTI.
    """
    target = Path(target)
    src = reference.meta.get("source")
    if src and Path(src).resolve() == target.resolve():
        raise UnreadableFileError(target, "refusing to overwrite the input image with its mask")
    if mask.shape != reference.shape:
        raise UnreadableFileError(target, f"mask shape {mask.shape} differs from image shape {reference.shape}")
    fmt = reference.meta.get("format")
    if instances and fmt == "picture" and int(mask.max(initial=0)) > np.iinfo(np.uint16).max:
        raise UnreadableFileError(target, f"{int(mask.max())} instances do not fit a 16-bit PNG")
    if fmt == "picture":
        out = mask.astype(np.uint16) if instances else mask.astype(np.uint8) * (255 if n_classes == 2 else 1)
        return write_atomically(target, lambda p: Image.fromarray(out).save(p, format="PNG"))
    dtype = np.int32 if instances else np.int16
    data = np.transpose(mask.astype(dtype), tuple(range(mask.ndim))[::-1])
    if fmt == "nifti":
        ref = reference.meta["nifti"]
        header = ref.header.copy()
        header.set_data_dtype(dtype)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        img = nib.Nifti1Image(data, ref.affine, header)
        img.set_qform(ref.affine, int(ref.header["qform_code"]))
        img.set_sform(ref.affine, int(ref.header["sform_code"]))
    else:
        dz, dy, dx = reference.spacing
        d = np.asarray(reference.direction, dtype=float)  # columns: LPS directions of the z, y, x axes
        lps_to_ras = np.diag([-1.0, -1.0, 1.0])
        affine = np.eye(4)
        affine[:3, :3] = lps_to_ras @ np.column_stack([d[:, 2] * dx, d[:, 1] * dy, d[:, 0] * dz])
        affine[:3, 3] = lps_to_ras @ np.asarray(reference.origin[::-1], dtype=float)
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, 1)
    return write_atomically(target, lambda p: nib.save(img, str(p)))
