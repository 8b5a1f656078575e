"""A self-configuring segmentation plan: fingerprint a dataset, derive settings, apply them.

The idea is nnU-Net's (Isensee et al., Nat Methods 18:203, 2021), sized for a CPU:

* **Fingerprint**: image dimensionality and channels, median/min/max shape, median spacing,
  foreground intensity percentiles (0.5, 50, 99.5), mean and standard deviation, class frequencies,
  and a ``dataset_id`` hashed from the file names and sizes.
* **Plan**: normalisation (CT: clip to the foreground 0.5/99.5 percentiles, then z-score with the
  foreground mean and std; otherwise z-score each image), target spacing (median; for anisotropic
  data, ratio > 3, the low-resolution axis takes the 10th percentile), patch size (median resampled
  shape shrunk to a voxel budget, at least 32 px in 2D / 16 in 3D, divisible by ``2 ** depth``),
  network depth (``log2(min patch / 4)``, at most 4), batch size (from the voxel budget),
  augmentations (mirroring on every axis, intensity scale/shift; off by default and added by a user
  where the anatomy allows, in ``plan.json`` or with ``medlens segment plan --rot90 --elastic SIGMA``
  (:func:`add_augmentations`): ``rot90``, random quarter turns in the last two axes, and
  ``elastic: {sigma, grid, prob}``, :func:`medlens.segment.train.elastic_deform`); inference settings
  (window overlap, flip TTA, ``tta_rotations``: TTA over quarter turns too, switched on with ``rot90``)
  with post-processing off (``min_component_size``, ``keep_component``, ``keep_count``, ``fill_holes``:
  see :func:`medlens.segment.infer.postprocess`; for a pair of lungs ``"largest"``, 2, ``true``); in
  ``instance`` mask mode also ``inference.instances``, how instances are cut from the predicted
  interior/boundary map (:data:`medlens.segment.instances.INSTANCE_DEFAULTS`), and ``diameter_range``,
  the training images' range of median object diameters, outside which an image is predicted again at a
  rescaled size (:func:`medlens.segment.infer.segment_image`).

``plan.json`` is plain JSON; a user can edit any field before ``train``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlens.errors import ConfigError, DatasetError, UnreadableFileError
from medlens.files import write_text_atomically
from medlens.segment.datasets import SegCase, find_layout
from medlens.segment.io import is_image_file
from medlens.segment.instances import INSTANCE_DEFAULTS, diameter_range

PLAN_VERSION = 1
VOXEL_BUDGET = {2: 256 * 256, 3: 64 * 64 * 24}
MIN_PATCH = {2: 32, 3: 16}


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


def fingerprint(cases: list[SegCase], n_classes: int, seed: int = 0,
                modality: str | None = None) -> dict[str, Any]:
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
    }


def make_plan(cases: list[SegCase], data: str | Path, mask_mode: str = "binary", n_classes: int = 2,
              network: str = "unet", seed: int = 0, modality: str | None = None) -> dict[str, Any]:
    """Derive a plan from ``cases`` loaded from ``data`` (see the module docstring for the rules);
    ``modality`` overrides the detected one (:func:`fingerprint`)."""
    fp = fingerprint(cases, n_classes, seed, modality)
    dims = fp["dims"]
    spacing = np.array(fp["spacing_median"], dtype=float)
    if dims == 3 and spacing.max() / spacing.min() > 3:
        low = int(spacing.argmax())
        spacing[low] = fp["spacing_p10"][low]
    shape = np.array(fp["shape_median"]) * np.array(fp["spacing_median"]) / spacing
    patch = np.maximum(shape, MIN_PATCH[dims])
    while np.prod(patch) > VOXEL_BUDGET[dims]:
        patch[int(np.argmax(patch))] *= 0.9
    patch = np.maximum(patch, MIN_PATCH[dims])
    depth = int(min(4, max(1, math.floor(math.log2(patch.min() / 4)))))
    step = 2**depth
    patch = [int(math.ceil(p / step) * step) for p in patch]
    batch = int(min(16, max(2, VOXEL_BUDGET[dims] * 2 // int(np.prod(patch)))))
    if fp["modality"] == "CT":
        it = fp["intensity"]
        norm = {"scheme": "ct_clip_zscore", "clip": [it["p00_5"], it["p99_5"]], "mean": it["mean"],
                "std": max(it["std"], 1e-6)}
    else:
        norm = {"scheme": "zscore_per_image"}
    inference = {"overlap": 0.5, "tta_flips": True, "tta_rotations": False, "sw_batch_size": 4,
                 "min_component_size": 0, "keep_component": None, "keep_count": 1, "fill_holes": False}
    if mask_mode == "instance":
        inference["instances"] = {**INSTANCE_DEFAULTS, "diameter_range": diameter_range(cases)}
    return {
        "version": PLAN_VERSION,
        "dataset": {"path": str(Path(data).resolve()), "dataset_id": dataset_id(data), "mask_mode": mask_mode,
                    "n_classes": n_classes},
        "fingerprint": fp,
        "normalization": norm,
        "target_spacing": spacing.tolist(),
        "patch_size": patch,
        "batch_size": batch,
        "network": {"name": network, "channels": 16, "depth": depth},
        "loss": "dicece",
        "augmentations": {"flip_axes": list(range(dims)), "flip_prob": 0.5, "intensity_scale": 0.1,
                          "intensity_shift": 0.1},
        "training": {"epochs": 40, "steps_per_epoch": 25, "lr": 2e-3, "weight_decay": 1e-5,
                     "foreground_oversample": 0.33, "seed": seed, "patience": None, "max_steps": None,
                     "amp": "auto"},
        "inference": inference,
    }


def add_augmentations(plan: dict[str, Any], rot90: bool = False, elastic_sigma: float | None = None,
                      elastic_prob: float = 0.5, elastic_grid: int = 3) -> dict[str, Any]:
    """Switch on the optional augmentations of ``plan`` (in place; returned for chaining).

    ``rot90``: random quarter turns in the last two axes (for data without a canonical orientation,
    e.g. microscopy or patches), and test-time augmentation over the same turns
    (``inference.tta_rotations``, :func:`medlens.segment.infer.predict_probabilities`).
    ``elastic_sigma``: elastic deformation with displacements of σ pixels on an ``elastic_grid`` grid,
    applied to a share ``elastic_prob`` of the patches
    (:func:`medlens.segment.train.elastic_deform`).
    """
    if rot90:
        plan["augmentations"]["rot90"] = True
        plan["inference"]["tta_rotations"] = True
    if elastic_sigma:
        plan["augmentations"]["elastic"] = {"sigma": float(elastic_sigma), "grid": int(elastic_grid),
                                            "prob": float(elastic_prob)}
    check_augmentations(plan["augmentations"])
    return plan


def check_augmentations(aug: dict[str, Any], where: str = "augmentations") -> None:
    """Raise :class:`ConfigError` naming the field when an optional augmentation has a bad value."""
    elastic = aug.get("elastic")
    if not elastic:
        return
    if not isinstance(elastic, dict) or "sigma" not in elastic:
        raise ConfigError(f"{where}.elastic: needs {{sigma, grid, prob}}, got {elastic!r}")
    rules = {"sigma": (float, lambda v: v > 0, "> 0 pixels"), "grid": (int, lambda v: v >= 2, "at least 2"),
             "prob": (float, lambda v: 0 <= v <= 1, "in [0, 1]")}
    for key, (kind, ok, text) in rules.items():
        if key not in elastic:
            continue
        try:
            good = ok(kind(elastic[key]))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"{where}.elastic.{key}: must be {text}, got {elastic[key]!r}")


def check_diameter_range(inference: dict[str, Any], where: str = "inference") -> None:
    """Raise :class:`ConfigError` unless ``inference.instances.diameter_range`` is absent, ``null`` or two
    positive numbers in increasing order."""
    bounds = (inference.get("instances") or {}).get("diameter_range")
    if bounds is None:
        return
    try:
        good = len(bounds) == 2 and 0 < float(bounds[0]) <= float(bounds[1])
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{where}.instances.diameter_range: must be null or [low, high] with "
                          f"0 < low <= high, got {bounds!r}")


def save_plan(plan: dict[str, Any], path: str | Path) -> Path:
    """Write ``plan`` as indented JSON (temporary name, then rename)."""
    return write_text_atomically(path, json.dumps(plan, indent=2))


REQUIRED = ("dataset", "fingerprint", "normalization", "target_spacing", "patch_size", "batch_size", "network",
            "loss", "augmentations", "training", "inference")


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read and check a ``plan.json``; a missing field or bad value raises :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UnreadableFileError(path, "no plan.json here; run `medlens segment plan DATA` first") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED if k not in plan]
    if missing:
        raise ConfigError(f"{path}: plan lacks the fields {missing}")
    dims = plan["fingerprint"]["dims"]
    for key in ("target_spacing", "patch_size"):
        if len(plan[key]) != dims:
            raise ConfigError(f"{path}: {key} must have {dims} values, has {plan[key]}")
    if any(int(p) % 2 ** plan["network"]["depth"] for p in plan["patch_size"]):
        raise ConfigError(f"{path}: patch_size {plan['patch_size']} must be divisible by 2**depth "
                          f"= {2 ** plan['network']['depth']}")
    check_augmentations(plan["augmentations"], f"{path}: augmentations")
    check_diameter_range(plan["inference"], f"{path}: inference")
    plan["_path"] = str(path)
    return plan


def check_dataset(plan: dict[str, Any], data: str | Path) -> None:
    """Raise :class:`ConfigError` when ``data`` is not the dataset the plan was made from."""
    found = dataset_id(data)
    if found != plan["dataset"]["dataset_id"]:
        raise ConfigError(
            f"{plan.get('_path', 'plan')}: this plan was made for the dataset {plan['dataset']['path']} "
            f"(id {plan['dataset']['dataset_id'][:12]}), not {data} (id {found[:12]}); run "
            f"`medlens segment plan {data}` to make a plan for it")


def check_image(plan: dict[str, Any], array: np.ndarray, source: Any) -> None:
    """Raise :class:`ConfigError` when an image's dimensionality does not fit the plan."""
    dims = plan["fingerprint"]["dims"]
    if array.ndim - 1 != dims:
        raise ConfigError(f"{source}: a {array.ndim - 1}D image, but the plan "
                          f"({plan.get('_path', 'plan')}) is for {dims}D data")


def match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Repeat a single channel, or average several into one, to get ``channels``."""
    if array.shape[0] == channels:
        return array
    if array.shape[0] == 1:
        return np.repeat(array, channels, axis=0)
    if channels == 1:
        return array.mean(axis=0, keepdims=True)
    raise ConfigError(f"image has {array.shape[0]} channels, the plan expects {channels}")


def normalize(array: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Apply the plan's normalisation to a ``(C, ...)`` array.

    ``ct_clip_zscore``: ``(clip(x, lo, hi) - mean) / std`` with the dataset's foreground statistics.
    ``zscore_per_image``: ``(x - mean_c) / std_c`` per channel of this image.
    """
    x = array.astype(np.float32)
    if norm["scheme"] == "ct_clip_zscore":
        lo, hi = norm["clip"]
        return (np.clip(x, lo, hi) - norm["mean"]) / norm["std"]
    if norm["scheme"] == "zscore_per_image":
        axes = tuple(range(1, x.ndim))
        return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-6)
    raise ConfigError(f"normalization.scheme: unknown {norm['scheme']!r}")


def resample_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: list[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resize(array: np.ndarray, shape: tuple[int, ...], labels: bool = False) -> np.ndarray:
    """Resize ``(C, ...)`` to spatial ``shape``: (bi/tri)linear for images, nearest for labels."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if labels:
        out = F.interpolate(t, size=shape, mode="nearest-exact")
    else:
        out = F.interpolate(t, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear",
                            align_corners=False, antialias=len(shape) == 2)
    return out[0].numpy()


def pad_value(array: np.ndarray) -> float:
    """The value a prepared ``(C, ...)`` array is padded with to reach the patch size: its minimum.

    For CT this is the normalised lower clip bound (air), so that padding looks like the lung around a
    nodule. Training (:class:`medlens.segment.train.PatchDataset`) and inference
    (:func:`medlens.segment.infer.predict_probabilities`) must pad with the same value: a network that
    was trained with air around small volumes and then sees another value there (MONAI's sliding
    window pads with 0, which after a CT z-score is soft tissue near −220 HU) fails on every volume
    smaller than the patch (most LIDC nodule VOIs are thinner than the patch).
    """
    return float(array.min())


def pad_to(array: np.ndarray, shape: tuple[int, ...], value: float = 0.0) -> np.ndarray:
    """Pad ``(C, ...)`` symmetrically so each spatial axis is at least ``shape``
    (the ``(n - s) // 2`` extra voxels before, the rest after)."""
    pads = [(0, 0)] + [((max(s - n, 0)) // 2, max(s - n, 0) - max(s - n, 0) // 2)
                       for n, s in zip(array.shape[1:], shape)]
    return np.pad(array, pads, constant_values=value) if any(sum(p) for p in pads) else array


def unpad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`pad_to`: the centre ``shape`` window of ``(C, ...)`` that :func:`pad_to` grew."""
    sl = tuple(slice((m - n) // 2, (m - n) // 2 + n) for n, m in zip(shape, array.shape[1:]))
    return array[(slice(None),) + sl]


def prepare_image(plan: dict[str, Any], image) -> np.ndarray:
    """Channels matched, normalised and resampled to the plan's target spacing: ``(C, ...)`` float32."""
    check_image(plan, image.array, image.meta.get("source"))
    x = normalize(match_channels(image.array, plan["fingerprint"]["channels"]), plan["normalization"])
    return resize(x, resample_shape(image.shape, image.spacing, plan["target_spacing"]))


def prepare_case(plan: dict[str, Any], case: SegCase) -> tuple[np.ndarray, np.ndarray]:
    """Image as :func:`prepare_image` and its mask resampled the same way (``(1, ...)`` int64)."""
    x = prepare_image(plan, case.image)
    y = resize(case.mask[None].astype(np.float32), x.shape[1:], labels=True).astype(np.int64)
    return x, y
