"""A dataset's fingerprint: the statistics a segmentation plan is derived from.

The idea is nnU-Net's (Isensee et al., Nat Methods 18:203, 2021): image dimensionality and channels,
median/min/max shape, median and 10th-percentile spacing, foreground intensity percentiles (0.5, 50,
99.5), mean and standard deviation, class frequencies, and a ``dataset_id`` hashed from the file names
and sizes. To these medlens adds what the masks say about the target structure
(:func:`structure_statistics`), which :mod:`medlens.segment.rules` turns into the resampling, the
augmentations and the post-processing candidates.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medlens.errors import DatasetError
from medlens.segment.datasets import SegCase, find_layout
from medlens.segment.io import is_image_file
from medlens.segment.prepare import resize

SIGNIFICANT_COMPONENT = 0.05  # a component holding at least this share of a case's foreground counts
MAX_WHOLE_COMPONENTS = 4  # a case whose largest few components hold most of its foreground ...
WHOLE_SHARE = 0.9  # ... (this share) shows one whole structure (lungs, a nodule), otherwise many objects
ORIENTATION_GRID = 8  # side of the mean mask whose change under quarter turns is measured
CENTRE_REACH = 2  # voxels: a foreground that comes this near the array centre is centred


def dataset_id(folder: str | Path) -> str:
    """SHA-1 of the sorted (relative path, size) list of a dataset's image and mask files (or archive)."""
    folder = Path(folder)
    if folder.is_file():
        entries = [(folder.name, folder.stat().st_size)]
    else:
        img_dir, mask_dir = find_layout(folder)
        entries = []
        for d in (img_dir, mask_dir):
            if d is not None:
                entries += [(str(p.relative_to(folder)), p.stat().st_size)
                            for p in sorted(d.iterdir()) if is_image_file(p)]
    if not entries:
        raise DatasetError(f"{folder}: empty dataset folder (no images)")
    return hashlib.sha1(json.dumps(entries).encode()).hexdigest()


def _thickness(region: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Thickness (mm) of a region estimated as 4 × its mean distance to the region's boundary: exact for a
    slab (mean distance t/4), 2/3 of the diameter for a disc (mean distance d/6)."""
    return 4.0 * float(ndimage.distance_transform_edt(region, sampling=spacing)[region].mean())


def structure_statistics(cases: list[SegCase], mask_mode: str = "binary") -> dict[str, Any] | None:
    """What the training masks show about the target structure (fields of
    :class:`medlens.segment.plan.Structure`); ``None`` when no case has foreground.

    Components are connected over faces, edges and corners. A case counts the components that hold at
    least :data:`SIGNIFICANT_COMPONENT` of its foreground. When, in most cases, the
    :data:`MAX_WHOLE_COMPONENTS` largest components hold :data:`WHOLE_SHARE` of the foreground (and the
    masks are not instance labels), the structure is the case's whole foreground (``whole``: its bounding
    box is measured), otherwise one object (``objects``: each component's bounding box; cells, nuclei). The thickness of each class (the foreground classes and the background)
    is :func:`_thickness`; the thinnest class's median over cases is kept.
    """
    labelled = [c for c in cases if c.mask is not None and c.mask.any()]
    if not labelled:
        return None
    counts, whole, extents_whole, extents_objects, sizes, centred, thickness, means = [], [], [], [], [], [], {}, []
    dims = labelled[0].mask.ndim
    for case in labelled:
        spacing = tuple(float(s) for s in case.image.spacing)
        fg = case.mask > 0
        if mask_mode == "instance" and case.instances is not None:
            components = case.instances
            boxes = ndimage.find_objects(components)
        else:
            components, _ = ndimage.label(fg, structure=np.ones((3,) * dims, bool))
            boxes = ndimage.find_objects(components)
        size = np.bincount(components.ravel())[1:]
        sizes += size[size > 0].tolist()
        counts.append(int((size >= SIGNIFICANT_COMPONENT * fg.sum()).sum()))
        whole.append(np.sort(size)[::-1][:MAX_WHOLE_COMPONENTS].sum() >= WHOLE_SHARE * size.sum())
        extents_objects += [[(b.stop - b.start) * s for b, s in zip(box, spacing)] for box in boxes if box]
        where = np.argwhere(fg)
        extents_whole.append(((where.max(axis=0) - where.min(axis=0) + 1) * np.array(spacing)).tolist())
        centre = (np.array(fg.shape) - 1) / 2
        centred.append(bool(fg[tuple(slice(max(int(np.floor(c)) - CENTRE_REACH, 0), int(np.ceil(c)) + CENTRE_REACH + 1)
                                     for c in centre)].any()))
        classes = [fg, ~fg] if mask_mode == "instance" else [case.mask == k for k in np.unique(case.mask)]
        for k, region in enumerate(classes):
            if region.any() and not region.all():
                thickness.setdefault(k, []).append(_thickness(region, spacing))
        means.append(resize(fg[None].astype(np.float32), (ORIENTATION_GRID,) * dims)[0])
    mode, n_mode = Counter(counts).most_common(1)[0]
    kind = "whole" if mask_mode != "instance" and np.mean(whole) > 0.5 else "objects"
    mean_mask = np.mean(means, axis=0)
    asymmetry = np.mean([np.abs(mean_mask - np.rot90(mean_mask, k, axes=(-2, -1))).mean() for k in (1, 2, 3)])
    extents = extents_whole if kind == "whole" else extents_objects
    return {
        "kind": kind,
        "extent_median": np.median(extents, axis=0).tolist(),
        "extent_p90": np.percentile(extents, 90, axis=0).tolist(),
        "thickness": float(min(np.median(v) for v in thickness.values())) if thickness else None,
        "components": int(mode),
        "components_share": n_mode / len(labelled),
        "component_size_p05": float(np.percentile(sizes, 5)),
        "centred_share": float(np.mean(centred)),
        "orientation_asymmetry": float(asymmetry),
    }


def fingerprint(cases: list[SegCase], n_classes: int, seed: int = 0, modality: str | None = None,
                mask_mode: str = "binary") -> dict[str, Any]:
    """Dataset statistics the plan is derived from (see the module docstring).

    The modality is read from the images' metadata (DICOM/NIfTI readers) or recognised as CT from
    Hounsfield-like values (below -500 and above 0); ``modality`` overrides both, for data whose format
    cannot tell, such as CT already rescaled to [0, 1] (nnU-Net's ``channel_names`` play this part).
    """
    if not cases:
        raise DatasetError("fingerprint: no cases")
    rng = np.random.default_rng(seed)
    dims = cases[0].image.array.ndim - 1
    shapes = np.array([c.image.shape for c in cases])
    spacings = np.array([c.image.spacing for c in cases])
    samples, counts = [], np.zeros(n_classes, dtype=np.int64)
    for c in cases:
        img = c.image.array.mean(axis=0)
        if c.mask is not None:
            counts += np.bincount(c.mask.ravel(), minlength=n_classes)[:n_classes]
            fg = img[c.mask > 0]
        else:
            fg = img.ravel()
        if fg.size:
            samples.append(rng.choice(fg, size=min(fg.size, 10000), replace=False))
    values = np.concatenate(samples) if samples else np.zeros(1, np.float32)
    modalities = {c.image.meta.get("modality") for c in cases} - {None}
    is_ct = "CT" in modalities or (float(values.min()) < -500 and float(np.percentile(values, 99)) > 0)
    if modality is None:
        modality = "CT" if is_ct else (sorted(modalities)[0] if modalities else "OT")
    return {
        "dims": int(dims),
        "channels": int(max(c.image.array.shape[0] for c in cases)),
        "n_cases": len(cases),
        "modality": modality.upper(),
        "shape_median": np.median(shapes, axis=0).tolist(),
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "spacing_median": np.median(spacings, axis=0).tolist(),
        "spacing_p10": np.percentile(spacings, 10, axis=0).tolist(),
        "intensity": {
            "p00_5": float(np.percentile(values, 0.5)), "p50": float(np.percentile(values, 50)),
            "p99_5": float(np.percentile(values, 99.5)), "mean": float(values.mean()), "std": float(values.std()),
        },
        "class_frequencies": (counts / max(counts.sum(), 1)).tolist(),
        "cases_with_foreground": int(sum(1 for c in cases if c.mask is not None and c.mask.any())),
        "structure": structure_statistics(cases, mask_mode),
    }
