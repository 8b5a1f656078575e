"""Volume inputs for 3D lesion bundles: a CT series (DICOM or NIfTI) and where the lesion is.

A bundle trained on lesion cubes (the ``lidc_nodules`` builder) takes a whole CT series in HU and a
lesion selection, and prepares each lesion as in training with
:func:`medlens.preprocess.voi.lesion_cube`. The lesion is chosen by, in this order:

1. ``mask``: a lesion mask file in the series' geometry (NIfTI or .npy, non-zero = lesion);
2. ``at``: a voxel position (z, y, x) in the series as medlens reads it (``medlens inspect``),
   for models that need no mask;
3. ``xml``: an LIDC reader XML; each nodule rated by at least one reader (the ≥ 3 mm nodules) with
   its 50 % consensus mask (:func:`medlens.data.readers.lidc_xml.consensus_nodules`) gives one row.
   A series folder holding exactly one ``.xml`` file uses it without being told.

The training VOIs (LIDC VOI files) hold the nodule's bounding box with about one slice above and
below and at least 43 voxels in plane (measured on the files: median 44 × 44 × 6 voxels), the rest
of the cube being air padding. A masked lesion is cut from the series the same way
(:func:`voi_box`) before it is resampled, so the model sees the context it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.errors import ConfigError, GeometryError, MedlensError, UnreadableFileError
from medlens.image import MedImage

VOI_SLICE_MARGIN = 1
VOI_INPLANE_MARGIN = 6
VOI_INPLANE_MIN = 43
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class LesionSelection:
    """How the lesion is found in each input volume (see the module docstring)."""

    at: tuple[float, float, float] | None = None
    mask: Path | None = None
    xml: Path | None = None

    def describe(self) -> str:
        if self.mask is not None:
            return f"mask {self.mask}"
        if self.at is not None:
            return "at voxel (z, y, x) = " + ", ".join(f"{c:g}" for c in self.at)
        return f"LIDC XML {self.xml}" if self.xml is not None else "LIDC XML beside the series"


@dataclass
class Lesion:
    """One lesion of a volume: what selected it, and its mask or its centre."""

    roi: str
    mask: np.ndarray | None = None
    centre: tuple[float, float, float] | None = None


def parse_position(text: str) -> tuple[float, float, float]:
    """``"z,y,x"`` voxel coordinates as three floats."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"--at: expected three voxel coordinates 'z,y,x', got {text!r}")
    return values


def read_volume(path: Path) -> MedImage:
    """A CT volume from a DICOM series folder or file, or a NIfTI file."""
    from medlens.data.readers import read_dicom, read_nifti

    name = path.name.lower()
    if path.is_dir() or name.endswith(".dcm"):
        image = read_dicom(path.parent if path.is_file() else path)
    elif name.endswith(NIFTI_SUFFIXES):
        image = read_nifti(path)
    else:
        raise UnreadableFileError(path, "a 3D bundle reads DICOM series (folder or .dcm) and NIfTI volumes")
    if image.array.shape[0] != 1 or image.array.ndim != 4:
        raise UnreadableFileError(path, f"expected a single-channel volume, got array shape {image.array.shape}")
    modality = image.meta.get("modality")
    if modality not in (None, "", "CT"):
        raise UnreadableFileError(path, f"modality is {modality}; this bundle was trained on CT in HU")
    return image


def beside_xml(path: Path) -> Path | None:
    """The one ``.xml`` file in a series folder (LIDC layout), None when there is none."""
    folder = path if path.is_dir() else path.parent
    found = sorted(folder.glob("*.xml"))
    if len(found) > 1:
        raise GeometryError(f"{folder}: several XML files ({', '.join(f.name for f in found)}); choose one with --xml")
    return found[0] if found else None


def _mask_file(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from medlens.data.readers import read_nifti
    from medlens.data.readers.npz import read_npy

    if path.suffix == ".npy":
        array = read_npy(path)
    else:
        array = read_nifti(path).array[0]
    if array.shape != shape:
        raise GeometryError(f"{path}: mask shape {array.shape} differs from the volume's {shape}")
    return array != 0


def find_lesions(path: Path, image: MedImage, selection: LesionSelection) -> list[Lesion]:
    """The lesions of one volume chosen by ``selection``."""
    from medlens.data.readers import consensus_nodules

    shape = image.array.shape[1:]
    if selection.mask is not None:
        return [Lesion(f"mask {selection.mask.name}", mask=_mask_file(selection.mask, shape))]
    if selection.at is not None:
        if not all(0 <= c < n for c, n in zip(selection.at, shape)):
            raise GeometryError(f"{path}: position {selection.at} lies outside the volume of shape {shape}")
        return [Lesion(selection.describe(), centre=selection.at)]
    xml = selection.xml or (beside_xml(path) if image.meta.get("sop_uids") else None)
    if xml is None:
        raise GeometryError(f"{path}: no lesion given; pass --at z,y,x, --mask FILE or --xml FILE "
                            "(an LIDC series folder with its XML needs none)")
    lesions = []
    for number, nodule in enumerate(n for n in consensus_nodules(xml, image) if n.malignancy):
        ratings = "/".join(str(r) for r in nodule.malignancy)
        lesions.append(Lesion(f"{xml.name} nodule {number + 1} ({len(nodule.readers)} readers; "
                              f"malignancy ratings {ratings})", mask=nodule.mask))
    if not lesions:
        raise GeometryError(f"{xml}: no nodule rated by a reader (nodules >= 3 mm) on the slices of {path}")
    return lesions


def voi_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The LIDC VOI files' crop around a lesion mask: its bounding box, one slice above and below, and
    ``VOI_INPLANE_MARGIN`` voxels in plane, widened to at least ``VOI_INPLANE_MIN`` voxels."""
    where = np.argwhere(mask)
    low, high = where.min(axis=0), where.max(axis=0) + 1
    box = [slice(max(0, low[0] - VOI_SLICE_MARGIN), min(mask.shape[0], high[0] + VOI_SLICE_MARGIN))]
    for axis in (1, 2):
        lo, hi = low[axis] - VOI_INPLANE_MARGIN, high[axis] + VOI_INPLANE_MARGIN
        short = VOI_INPLANE_MIN - (hi - lo)
        if short > 0:
            lo, hi = lo - short // 2, hi + short - short // 2
        box.append(slice(max(0, lo), min(mask.shape[axis], hi)))
    return tuple(box)


def lesion_inputs(path: Path, config, selection: LesionSelection
                  ) -> tuple[np.ndarray, list[dict[str, float] | None], list[str], dict[str, str | None]]:
    """Model-ready cubes ``(n, C, D, H, W)`` of the lesions of one volume, their radiomic features
    (None without a mask), their descriptions and the volume's ids (``patient_id``, ``series_uid``, ``modality``),
    prepared with the bundle config's builder parameters."""
    from medlens.preprocess.voi import crop_around, lesion_cube

    if config.data.builder != "lidc_nodules":
        raise MedlensError(f"{path}: volume prediction needs a bundle trained on lesion cubes (builder "
                           f"lidc_nodules); this one was built by {config.data.builder!r}")
    params = {"spacing": 1.0, "size": 32, "window": "lung", "mask_channel": True, **config.data.params}
    image = read_volume(path)
    hu, spacing = image.array[0].astype(np.float32), image.spacing
    cubes, features, rois = [], [], []
    for lesion in find_lesions(path, image, selection):
        if lesion.mask is not None:
            box = voi_box(lesion.mask)
            volume, mask, centre = hu[box], lesion.mask[box], None
        else:
            volume, mask, centre = crop_around(hu, lesion.centre, spacing, params["size"] * params["spacing"])
        cube, values = lesion_cube(volume, spacing, mask=mask, centre=centre, target_spacing=params["spacing"],
                                   size=params["size"], window=params["window"],
                                   mask_channel=params["mask_channel"], source=f"{path} ({lesion.roi})")
        cubes.append(cube)
        features.append(values)
        rois.append(lesion.roi)
    ids = {key: image.meta.get(key) or None for key in ("patient_id", "series_uid", "modality")}
    return np.stack(cubes), features, rois, ids
