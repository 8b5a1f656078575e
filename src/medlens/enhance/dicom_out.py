"""Write a processed DICOM image as a new derived series next to (never over) its source.

For each source file the output keeps the patient, study, frame of reference and geometry, and gets:

* one new ``SeriesInstanceUID`` for the whole output series and a new ``SOPInstanceUID`` per file
  (:func:`pydicom.uid.generate_uid`), also in the file meta (``MediaStorageSOPInstanceUID``);
* ``ImageType`` ``DERIVED\\SECONDARY`` (PS3.3 C.7.6.1.1.2) and a ``DerivationDescription``;
* stored values ``s = round((v − intercept) / slope)`` with the source's ``RescaleSlope`` and
  ``RescaleIntercept``, so that ``s × slope + intercept = v`` (the processed HU) up to half a quantisation
  step, clipped to the range that ``BitsStored`` and ``PixelRepresentation`` allow; pixels that were
  padding (``PixelPaddingValue``) in the source get the padding value back;
* an uncompressed Explicit VR Little Endian transfer syntax, so the pixel data can be written as is.

Files are written to a temporary name in the output folder and renamed into place; an output path that
is the source file itself is refused.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medlens.errors import GeometryError, MedlensError, UnreadableFileError
from medlens.files import write_atomically

DERIVED = ["DERIVED", "SECONDARY"]


@dataclass
class DicomSlice:
    """One single-frame grayscale DICOM file decoded to rescaled values (HU for CT)."""

    path: Path
    dataset: FileDataset
    values: np.ndarray  # (H, W) float32, stored × slope + intercept
    padding: np.ndarray | None  # (H, W) bool, pixels equal to PixelPaddingValue

    @property
    def modality(self) -> str:
        return str(self.dataset.get("Modality", "OT"))


def _signed_padding(ds: FileDataset) -> int | None:
    if ds.get("PixelPaddingValue") is None:
        return None
    value = int(ds.PixelPaddingValue)
    bits = int(ds.get("BitsAllocated", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1 and value >= 2 ** (bits - 1):
        value -= 2**bits
    return value


def read_slice(path: str | Path) -> DicomSlice:
    """Read one grayscale single-frame DICOM file; its rescale tags are required.

    Raises
    ------
    UnreadableFileError
        Not DICOM, no pixel data, colour or multi-frame, or no ``RescaleSlope``/``RescaleIntercept``
        (without them stored values cannot be turned into HU and back).
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ...
        raise UnreadableFileError(path, f"not a readable DICOM file ({exc})") from exc
    missing = [k for k in ("RescaleSlope", "RescaleIntercept") if ds.get(k) is None]
    if missing:
        raise UnreadableFileError(path, f"no {' or '.join(missing)} tag: cannot map stored values to "
                                        "physical units and back; add the rescale tags or convert the file")
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise UnreadableFileError(path, "only single-frame grayscale DICOM images can be processed")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # missing PixelData, undecodable compression
        raise UnreadableFileError(path, f"cannot decode the pixel data ({exc})") from exc
    pad_value = _signed_padding(ds)
    padding = None if pad_value is None else stored == pad_value
    values = stored.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return DicomSlice(path, ds, values, padding if padding is not None and padding.any() else None)


def stored_range(ds: FileDataset) -> tuple[int, int]:
    """The smallest and largest stored value ``BitsStored`` and ``PixelRepresentation`` allow."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def to_stored(ds: FileDataset, values: np.ndarray) -> np.ndarray:
    """``round((v − intercept)/slope)`` clipped to :func:`stored_range`, in the pixel data's dtype."""
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    low, high = stored_range(ds)
    dtype = np.int16 if int(ds.get("PixelRepresentation", 0)) == 1 else np.uint16
    if int(ds.get("BitsAllocated", 16)) == 8:
        dtype = np.int8 if dtype is np.int16 else np.uint8
    return np.clip(np.rint((values - intercept) / slope), low, high).astype(dtype)


def derived_dataset(source: DicomSlice, values: np.ndarray, series_uid: str, description: str,
                    series_number: int | None = None) -> FileDataset:
    """A copy of ``source``'s dataset holding ``values`` as a derived image of series ``series_uid``."""
    if values.shape != source.values.shape:
        raise GeometryError(f"{source.path}: processed image has shape {values.shape}, the file holds "
                            f"{source.values.shape}")
    ds = copy.deepcopy(source.dataset)
    stored = to_stored(ds, values)
    if source.padding is not None:
        stored[source.padding] = _signed_padding(ds)
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = DERIVED
    ds.DerivationDescription = description[:1024]
    ds.SeriesDescription = f"{ds.get('SeriesDescription', '')} {description}".strip()[:64]
    if series_number is not None:
        ds.SeriesNumber = series_number
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):  # no longer true
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW" if stored.itemsize == 2 else "OB"
    return ds


def write_derived_slice(ds: FileDataset, path: str | Path, sources: list[Path]) -> Path:
    """Write ``ds`` to ``path`` through a temporary file; refuse to overwrite any of ``sources``."""
    path = Path(path)
    for src in sources:
        if path.exists() and src.exists() and os.path.samefile(path, src):
            raise MedlensError(f"{path}: refusing to overwrite an input file; choose another output folder")
    return write_atomically(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
