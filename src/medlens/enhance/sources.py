"""Clean training images for a denoiser from files: MedMNIST archives, DICOM series, NIfTI, pictures.

Each source becomes 2D slices ``(C, H, W)`` in its own units (HU for CT DICOM, stored values for
pictures and MedMNIST, 0–255) or, for a 3D model, whole volumes ``(C, D, H, W)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from medlens.data.readers.dicom import read_dicom
from medlens.data.readers.medmnist import load_medmnist
from medlens.data.readers.nifti import read_nifti
from medlens.data.readers.pictures import read_picture
from medlens.enhance.apply import PICTURES
from medlens.errors import GeometryError, MissingPathError, UnreadableFileError

CT_WINDOW = (-1024.0, 3071.0)  # the 12-bit CT range in HU


def _slices(array: np.ndarray, spatial_dims: int) -> list[np.ndarray]:
    """``(C, D, H, W)`` → D slices for a 2D model, or the volume itself for a 3D one."""
    if array.ndim == 3:
        if spatial_dims == 3:
            raise GeometryError(f"a 3D model needs volumes, got an image of shape {array.shape}")
        return [array]
    return [array] if spatial_dims == 3 else [array[:, i] for i in range(array.shape[1])]


def load_images(paths: list[Path], spatial_dims: int = 2) -> tuple[list[np.ndarray], str]:
    """Training images from ``paths`` and the modality they share (``OT`` when no file records one)."""
    images: list[np.ndarray] = []
    modalities: set[str] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise MissingPathError(path)
        name = path.name.lower()
        if path.is_dir() or name.endswith(".dcm"):
            image = read_dicom(path)
            modalities.add(image.modality)
            images += _slices(image.array.astype(np.float32), spatial_dims)
        elif name.endswith(".npz"):
            x, _ = load_medmnist(path, "train")
            images += list(x.astype(np.float32))  # (1, H, W) or, for 3D sets, (1, D, H, W)
        elif name.endswith((".nii", ".nii.gz")):
            images += _slices(read_nifti(path).array.astype(np.float32), spatial_dims)
        elif path.suffix.lower() in PICTURES:
            images += _slices(read_picture(path).array.astype(np.float32), spatial_dims)
        else:
            raise UnreadableFileError(path, "unknown format for training: give DICOM, NIfTI, a MedMNIST .npz "
                                            "or pictures")
    if len(modalities) > 1:
        raise GeometryError(f"training inputs mix modalities {sorted(modalities)}; train one model per modality")
    return images, (modalities.pop() if modalities else "OT")


def default_window(images: list[np.ndarray], modality: str) -> tuple[float, float]:
    """``(-1024, 3071)`` HU for CT, ``(0, 255)`` when every value fits 8 bits, else the data's min and max."""
    if modality.upper() == "CT":
        return CT_WINDOW
    low = min(float(im.min()) for im in images)
    high = max(float(im.max()) for im in images)
    return (0.0, 255.0) if low >= 0 and high <= 255 else (low, high)
