"""Errors raised by medlens.

Every error is a :class:`MedlensError`; each subclass names one kind of problem so that callers can
catch exactly what they can handle. Messages always name the file or field at fault and say what to do.
"""

from __future__ import annotations

from pathlib import Path


class MedlensError(Exception):
    """Base class of every error medlens raises on purpose."""


def _where(path: str | Path | None) -> str:
    return f"{path}: " if path is not None else ""


class MissingPathError(MedlensError, FileNotFoundError):
    """A file or folder that was asked for does not exist."""

    def __init__(self, path: str | Path, what: str = "file or folder"):
        super().__init__(f"{path}: no such {what}")
        self.path = Path(path)


class UnreadableFileError(MedlensError):
    """A file exists but cannot be decoded (truncated, wrong format, missing pixel data...)."""

    def __init__(self, path: str | Path | None, problem: str):
        super().__init__(f"{_where(path)}{problem}")
        self.path = None if path is None else Path(path)


class NoDicomError(UnreadableFileError):
    """A folder was expected to hold a DICOM series and holds none."""


class MissingPixelDataError(UnreadableFileError):
    """A DICOM file has no PixelData element."""


class CompressedDicomError(UnreadableFileError):
    """A DICOM file uses a transfer syntax no installed plugin can decode."""


class MixedSeriesError(MedlensError):
    """A folder holds more than one DICOM series and none was chosen."""


class GeometryError(MedlensError):
    """Slices, spacings or shapes that do not fit together (uneven gaps, mismatched mask)."""


class EmptyImageError(UnreadableFileError):
    """An image with zero size along some axis."""


class BadArchiveError(UnreadableFileError):
    """An archive (npz) without the keys that its format requires."""


class ImageTooLargeError(UnreadableFileError):
    """A file whose header claims more pixels, voxels or decoded bytes than :mod:`medlens.limits` allows.

    Raised before anything is decoded; the message gives the claim, the limit and the environment
    variable that raises it.
    """


class NonFiniteImageError(UnreadableFileError):
    """An image holding NaN or infinite values, which no model or metric can use."""


class RescaleError(UnreadableFileError):
    """A DICOM slice whose RescaleSlope / RescaleIntercept cannot be applied (slope 0, NaN, infinite)."""


class MissingSliceError(GeometryError):
    """A DICOM series with a gap where slices are missing (see :mod:`medlens.data.readers.dicom`)."""


class DatasetError(MedlensError):
    """A named dataset is unknown, absent, or fails its checksum."""


class ChecksumError(DatasetError):
    """A file's md5 differs from the catalogue's."""


class DownloadError(DatasetError):
    """A dataset could not be downloaded."""


class LabelError(DatasetError):
    """Class labels that are not integers, negative, or not below the number of class names."""


class ConfigError(MedlensError):
    """A study configuration has an unknown name or a bad value; the message names the field."""


class ModelError(MedlensError):
    """A model was used wrongly (predict before fit, wrong input shape, unknown name)."""


class OutputError(MedlensError):
    """An output path that medlens refuses to write: an input, a device, a file where a folder is meant
    (or the reverse), or a place that cannot be written (:func:`medlens.files.check_output`)."""


class OutputLockedError(OutputError):
    """Another medlens run is writing into the same output (its lock file is held)."""


class PacsError(MedlensError):
    """A PACS could not be reached, refused the association or a request, or answered with something unusable
    (an unknown UID, a study that changed while it was pulled, objects missing after a push). The message names
    the server and the UID."""


class DicomObjectError(MedlensError):
    """A DICOM object medlens wrote (SEG, SR) fails validation: dciodvfy reports errors, highdicom cannot read
    it back, or its content differs from what was meant to be written. Nothing is pushed."""
