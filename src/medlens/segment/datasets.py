"""Segmentation cases: an image, its label mask, a case id and a group (patient) id.

A dataset folder holds an image folder and a mask folder whose files pair by name (``a.png`` ↔
``a.png``, ``a.nii.gz`` ↔ ``a.nii.gz``). The layouts of the real sets are recognised:

=====================================  ==============================  ======================================
set (``MEDLENS_DATA`` sub-folder)      images / masks                  masks
=====================================  ==============================  ======================================
``montgomery_cxr_lung_masks``          ``images`` / ``masks``          8-bit, binarised at ≥ 128
``isbi2012_membrane``                  ``train/image`` / ``train/label``  255 = cell interior (foreground)
``lidc_idri_nodule_vois``              ``image`` / ``nodule_mask``     NIfTI {0, 1}, HU images
``nuclei_dsb2018_stage1_subset``       ``images`` / ``labels``         16-bit instance labels
``msd_lung_tumour_patches``            ``*_patches.npz``               ``images``/``labels`` arrays
=====================================  ==============================  ======================================

Mask modes: ``binary`` (foreground = value ≥ 128 for 8-bit masks whose maximum is 255, else > 0),
``labels`` (values are class indices and must lie in ``0 … n_classes-1``), ``instance`` (an instance
label image; the training target is 0 background, 1 nucleus interior, 2 nucleus boundary, and the
instances are kept for scoring). Groups: the patient id ``LIDC-IDRI-XXXX`` where a name holds one,
otherwise the case name.

Subgroups: a dataset folder may hold an ``index.csv`` with a ``file`` column (the image file name) and
per-case descriptions; its row goes into ``SegCase.meta``, and the first of :data:`SUBGROUP_COLUMNS`
it has becomes ``meta["subgroup"]`` (Montgomery: ``tb_label_name``, normal versus tuberculosis), so
evaluations can be reported per subgroup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.segmentation import find_boundaries

from medlens.errors import BadArchiveError, DatasetError, GeometryError, MissingPathError
from medlens.image import MedImage
from medlens.segment.io import case_name, is_image_file, read_image

LAYOUTS = (("images", "masks"), ("image", "nodule_mask"), ("images", "labels"), ("train/image", "train/label"),
           ("image", "label"), ("imagesTr", "labelsTr"))
MASK_MODES = ("binary", "labels", "instance")
INDEX_FILE = "index.csv"
SUBGROUP_COLUMNS = ("subgroup", "tb_label_name")


@dataclass
class SegCase:
    """One image with its label mask (``mask`` is ``(*spatial)`` int64 or ``None`` when unlabelled)."""

    image: MedImage
    mask: np.ndarray | None
    case_id: str
    group: str
    instances: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def find_layout(folder: Path) -> tuple[Path, Path | None]:
    """The (image folder, mask folder) of a dataset folder; a folder of images alone has no masks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(folder, "dataset folder")
    for img, msk in LAYOUTS:
        if (folder / img).is_dir() and (folder / msk).is_dir():
            return folder / img, folder / msk
    return folder, None


def patient_group(name: str) -> str:
    """``LIDC-IDRI-0001`` from ``LIDC-IDRI-0001_R_1``; otherwise the name itself."""
    m = re.match(r"(LIDC-IDRI-\d+)", name)
    return m.group(1) if m else name


def mask_to_target(raw: np.ndarray, mode: str, n_classes: int, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert a stored mask to class indices (and instances for ``instance`` mode).

    Raises :class:`DatasetError` naming ``path`` for values outside the declared classes.
    """
    raw = np.asarray(raw)
    if mode == "binary":
        thr = 128 if raw.dtype == np.uint8 and raw.max() == 255 else 1
        return (raw >= thr).astype(np.int64), None
    if mode == "instance":
        inst = raw.astype(np.int64)
        target = (inst > 0).astype(np.int64)
        target[find_boundaries(inst, mode="inner") & (inst > 0)] = 2
        return target, inst
    if mode == "labels":
        values = np.unique(raw)
        bad = values[(values < 0) | (values >= n_classes)]
        if bad.size:
            raise DatasetError(f"{path}: mask values {bad[:10].tolist()} lie outside the declared classes "
                               f"0..{n_classes - 1}; pass the right number of classes or --mask-mode binary")
        return raw.astype(np.int64), None
    raise DatasetError(f"{path}: unknown mask mode {mode!r}; choose one of {MASK_MODES}")


def _read_mask(path: Path, image: MedImage) -> np.ndarray:
    mask_img = read_image(path)
    arr = mask_img.array
    if arr.shape[0] != 1:
        raise GeometryError(f"{path}: a mask must have one channel, found {arr.shape[0]}")
    dtype = mask_img.meta.get("dtype", "float32")
    arr = arr[0].astype(dtype)
    if arr.shape != image.shape:
        raise GeometryError(f"{path}: mask shape {arr.shape} does not match its image shape {image.shape} "
                            f"({image.meta.get('source')})")
    return arr


def read_index(folder: Path) -> dict[str, dict[str, Any]]:
    """Rows of the folder's ``index.csv`` keyed by case name, with ``subgroup`` set (see the module docstring);
    empty when there is no index."""
    import pandas as pd

    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    if "file" not in table.columns:
        raise DatasetError(f"{path}: an index needs a 'file' column naming each image")
    column = next((c for c in SUBGROUP_COLUMNS if c in table.columns), None)
    rows = {}
    for row in table.to_dict("records"):
        if column is not None:
            row["subgroup"] = str(row[column])
        rows[case_name(Path(str(row["file"])))] = row
    return rows


def load_folder(folder: str | Path, mask_mode: str = "binary", n_classes: int = 2, limit: int | None = None,
                names: list[str] | None = None) -> list[SegCase]:
    """Load every image (and its mask, where the layout has masks) of a dataset folder.

    Parameters
    ----------
    folder : path
        A dataset folder in one of :data:`LAYOUTS`, a folder of images, or a ``.npz`` archive with
        ``images`` ``(N, C, ...)`` and ``labels`` ``(N, 1, ...)`` arrays.
    mask_mode : str
        ``binary``, ``labels`` or ``instance`` (see the module docstring).
    n_classes : int
        Declared classes (background included) for ``labels`` mode.
    limit : int, optional
        Keep the first ``limit`` cases (sorted by name).
    names : list of str, optional
        Keep only these case names.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".npz":
        return load_npz(folder, limit)
    img_dir, mask_dir = find_layout(folder)
    files = sorted(p for p in img_dir.iterdir() if is_image_file(p))
    if names is not None:
        wanted = set(names)
        files = [p for p in files if case_name(p) in wanted]
    if limit is not None:
        files = files[:limit]
    if not files:
        raise DatasetError(f"{img_dir}: no images (png/tif/jpg/NIfTI) found in this dataset folder")
    masks = {case_name(p): p for p in mask_dir.iterdir() if is_image_file(p)} if mask_dir else {}
    index = read_index(folder)
    cases = []
    for path in files:
        name = case_name(path)
        image = read_image(path)
        mask = instances = None
        if mask_dir is not None:
            if name not in masks:
                raise DatasetError(f"{path}: no mask named {name}.* in {mask_dir}")
            raw = _read_mask(masks[name], image)
            mask, instances = mask_to_target(raw, mask_mode, n_classes, masks[name])
        cases.append(SegCase(image, mask, name, patient_group(name), instances,
                             {**index.get(name, {}), "mask_path": str(masks[name]) if name in masks else None}))
    return cases


def load_npz(path: Path, limit: int | None = None) -> list[SegCase]:
    """Cases from an archive with ``images`` ``(N, C, ...)`` float and ``labels`` ``(N, 1, ...)`` {0, 1}."""
    from medlens.data.readers.npz import open_npz

    with open_npz(path) as z:  # sizes checked from the headers, no pickle, named errors
        if "images" not in z or "labels" not in z:
            raise BadArchiveError(path, f"needs arrays 'images' and 'labels', has {sorted(z.files)}")
        images, labels = z.read("images").astype(np.float32), z.read("labels")
    if len(images) == 0:
        raise DatasetError(f"{path}: archive holds no images")
    if images.shape[2:] != labels.shape[2:] or len(images) != len(labels):
        raise GeometryError(f"{path}: images {images.shape} and labels {labels.shape} do not match")
    n = len(images) if limit is None else min(limit, len(images))
    return [SegCase(MedImage(images[i], (1.0,) * (images.ndim - 2),
                             meta={"format": "array", "source": f"{path}#{i}"}),
                    labels[i, 0].astype(np.int64), f"{path.stem}_{i:04d}", f"{path.stem}_{i:04d}")
            for i in range(n)]


def case_groups(cases: list[SegCase]) -> np.ndarray:
    return np.array([c.group for c in cases])
