"""Readers of medical image formats; each returns a :class:`~medlens.image.MedImage`.

:func:`read_image` picks the reader from the path: a folder is a DICOM series; ``.nii``/``.nii.gz``
is NIfTI; ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.tif``/``.tiff`` is a picture; ``.npz`` archives hold
many images and are read with ``medlens.data.readers.medmnist.load_medmnist`` (any ``.npz`` safely with
:func:`medlens.data.readers.npz.open_npz`); any other file is tried as DICOM (DICOM files often have no
suffix).

Every reader checks the size its file's header claims against :mod:`medlens.limits` before decoding, and
refuses NaN or infinite values (``non_finite="error"``) unless asked to count them (``"flag"``).
"""

from __future__ import annotations

from pathlib import Path

from medlens.data.readers.dicom import SeriesInfo, list_series, read_dicom
from medlens.data.readers.lidc_xml import (
    ConsensusNodule,
    LesionGroup,
    Mark,
    Nodule,
    ReaderNodule,
    ReaderSession,
    Roi,
    consensus_nodules,
    group_marks,
    lidc_reader_masks,
    nodule_centre,
    read_lidc_xml,
    reader_marks,
)
from medlens.data.readers.nifti import read_nifti, write_nifti
from medlens.data.readers.pictures import PICTURE_SUFFIXES, read_picture, write_png
from medlens.errors import MissingPathError, UnreadableFileError
from medlens.image import MedImage

__all__ = [
    "MedImage",
    "Nodule",
    "ReaderNodule",
    "ReaderSession",
    "Roi",
    "SeriesInfo",
    "ConsensusNodule",
    "LesionGroup",
    "Mark",
    "consensus_nodules",
    "group_marks",
    "lidc_reader_masks",
    "list_series",
    "nodule_centre",
    "read_dicom",
    "read_image",
    "read_lidc_xml",
    "reader_marks",
    "read_nifti",
    "read_picture",
    "write_nifti",
    "write_png",
]


def read_image(path: str | Path, *, series_uid: str | None = None, non_finite: str = "error") -> MedImage:
    """Read any supported image file or DICOM series folder.

    Parameters
    ----------
    path : str or Path
        A DICOM file or series folder, a NIfTI file or a picture.
    series_uid : str, optional
        For a DICOM folder holding several series: the SeriesInstanceUID to load.
    non_finite : {"error", "flag"}
        NaN or infinite values raise :class:`~medlens.errors.NonFiniteImageError` (default) or are counted
        in ``meta["non_finite_voxels"]``.

    Returns
    -------
    MedImage
        As the format's reader returns it (:func:`read_dicom`, :func:`read_nifti`,
        :func:`read_picture`).
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(path)
    name = path.name.lower()
    if path.is_dir():
        return read_dicom(path, series_uid=series_uid, non_finite=non_finite)
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path, non_finite=non_finite)
    if name.endswith(PICTURE_SUFFIXES):
        return read_picture(path, non_finite=non_finite)
    if name.endswith(".npz"):
        raise UnreadableFileError(
            path,
            "a .npz archive holds many images, not one; load it with "
            "medlens.data.readers.medmnist.load_medmnist(path, split), or look at it with `medlens inspect`",
        )
    return read_dicom(path, series_uid=series_uid, non_finite=non_finite)
