"""Apply a trained :class:`~medlens.enhance.autoencoder.Denoiser` to files: DICOM, NIfTI and pictures.

* DICOM (a file, or a folder of single-frame slices): each file is read with its rescale tags
  (:func:`~medlens.enhance.dicom_out.read_slice`), denoised in physical units (HU for CT) and written as a
  new derived series (:mod:`medlens.enhance.dicom_out`), one new series UID per input folder.
* NIfTI (``.nii``, ``.nii.gz``): read with :func:`medlens.data.readers.nifti.read_nifti`; a 2D model runs
  slice by slice along the first spatial axis; written with ``write_nifti`` (geometry kept).
* Pictures (``.png``, ``.tif``, ``.jpg``): read with Pillow in their stored units (0–255 for 8-bit);
  written as PNG of the same bit depth, values rounded and clipped to it.

The model's modality and channel count are checked against each input; outputs go to ``out_dir`` under
the input's file name, through a temporary file and a rename, and an input file is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from medlens.data.readers.nifti import read_nifti, write_nifti
from medlens.data.readers.pictures import read_picture
from medlens.enhance.autoencoder import Denoiser
from medlens.enhance.dicom_out import derived_dataset, read_slice, write_derived_slice
from medlens.errors import MedlensError, MissingPathError, UnreadableFileError
from medlens.files import write_atomically
from medlens.image import MedImage

PICTURES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def _target(out_dir: Path, source: Path) -> Path:
    """``out_dir / source.name`` (the folder created), refusing the source itself."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.name
    if target.exists() and os.path.samefile(target, source):
        raise MedlensError(f"{source}: the output would overwrite this input file; choose another output folder")
    return target


def _run_2d(model: Denoiser, image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` → denoised ``(C, H, W)``; ``(C, D, H, W)`` slice by slice for a 2D model."""
    if image.ndim == 3:
        return model.denoise(image[None])[0]
    return np.moveaxis(model.denoise(np.moveaxis(image, 1, 0)), 0, 1)


def denoise_dicom(model: Denoiser, files: list[Path], out_dir: Path) -> list[Path]:
    """Denoise single-frame DICOM files of one series into a new derived series in ``out_dir``."""
    slices = [read_slice(f) for f in files]
    for s in slices:
        model.check_input(s.modality, 1, str(s.path))
    if model.spatial_dims == 2:
        denoised = model.denoise(np.stack([s.values for s in slices])[:, None], where=str(files[0].parent))[:, 0]
    else:
        order = np.argsort([float(s.dataset.get("InstanceNumber", i)) for i, s in enumerate(slices)])
        volume = np.stack([slices[i].values for i in order])[None, None]
        denoised = np.empty((len(slices),) + slices[0].values.shape, np.float32)
        denoised[order] = model.denoise(volume, where=str(files[0].parent))[0, 0]
    series_uid = generate_uid()
    description = f"medlens denoise ({model.noise_name} autoencoder)"
    written = []
    for s, values in zip(slices, denoised):
        ds = derived_dataset(s, values, series_uid, description)
        written.append(write_derived_slice(ds, _target(out_dir, s.path), files))
    return written


def denoise_nifti(model: Denoiser, path: Path, out_dir: Path, modality: str | None) -> Path:
    image = read_nifti(path)
    model.check_input(modality, image.array.shape[0], str(path))
    array = image.array.astype(np.float32)
    out = _run_2d(model, array) if model.spatial_dims == 2 else model.denoise(array[None], where=str(path))[0]
    denoised = MedImage(out, image.spacing, image.origin, image.direction, dict(image.meta))
    return write_atomically(_target(out_dir, path), lambda tmp: write_nifti(denoised, tmp))


def denoise_picture(model: Denoiser, path: Path, out_dir: Path, modality: str | None) -> Path:
    image = read_picture(path).array  # (C, H, W), size checked before decoding
    model.check_input(modality, image.shape[0], str(path))
    if model.spatial_dims != 2:
        raise MedlensError(f"{path}: a 3D model cannot denoise a 2D picture")
    out = model.denoise(image[None].astype(np.float32), where=str(path))[0]
    info = np.iinfo(image.dtype) if np.issubdtype(image.dtype, np.integer) else np.iinfo(np.uint8)
    out = np.clip(np.rint(out), info.min, info.max).astype(image.dtype if image.dtype.kind in "ui" else np.uint8)
    picture = Image.fromarray(out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1))
    return write_atomically(_target(out_dir, path).with_suffix(".png"), lambda tmp: picture.save(tmp, format="PNG"))


def denoise_paths(model: Denoiser, inputs: list[Path], out_dir: Path, modality: str | None = None) -> list[Path]:
    """Denoise every input (files or DICOM folders) into ``out_dir``; returns the files written.

    ``modality`` declares the modality of NIfTI files and pictures, which do not record it; DICOM
    files carry their own.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    for path in map(Path, inputs):
        if not path.exists():
            raise MissingPathError(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _is_dicom(p))
            if not files:
                raise UnreadableFileError(path, "no DICOM files in this folder")
            if out_dir.resolve() == path.resolve():
                raise MedlensError(f"{path}: the output folder is the input folder; choose another")
            written += denoise_dicom(model, files, out_dir)
        elif _is_nifti(path):
            written.append(denoise_nifti(model, path, out_dir, modality))
        elif path.suffix.lower() in PICTURES:
            written.append(denoise_picture(model, path, out_dir, modality))
        elif _is_dicom(path):
            written += denoise_dicom(model, [path], out_dir)
        else:
            raise UnreadableFileError(path, "unknown format: give DICOM, NIfTI (.nii, .nii.gz) or a picture "
                                            f"({', '.join(PICTURES)})")
    return written
