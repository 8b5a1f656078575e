"""The rules that turn a dataset's fingerprint into a segmentation plan, each written down with its reason.

nnU-Net's idea (Isensee et al., Nat Methods 18:203, 2021), sized for a CPU: what a person would tune by
hand is derived from the data, and ``plan.json`` says why (``reasons``).

* **Spacing.** The median spacing; for anisotropic volumes (ratio > 3) the low-resolution axis takes
  the 10th percentile. Then, where the target structure (:class:`~medlens.segment.plan.Structure`:
  the whole foreground of a case, or one object) is wider than the receptive field of a U-Net of
  :data:`MAX_DEPTH` steps (:func:`receptive_field`: 95 voxels at depth 4), the images are coarsened
  until the median structure fits in it, but never so far that the thinnest class keeps fewer than
  :data:`DETAIL_VOXELS` voxels across; the coarsened median shape is rounded to a multiple of
  ``2 ** MAX_DEPTH``. Montgomery's lung pairs (392 px high) give 4 px, an image of 128 px.
* **Patch and batch.** The median resampled shape shrunk to :data:`VOXEL_BUDGET`, then grown where
  needed so that it holds the structure of 90 % of the cases along each axis (at least
  :data:`MIN_PATCH` a side, divisible by ``2 ** depth``; square in-plane where quarter turns are on);
  depth ``log2(min patch / 4)``, at most :data:`MAX_DEPTH`; batch ``2 · budget / patch`` in 2..16.
* **Normalisation.** CT: clip to the foreground's 0.5/99.5 percentiles and z-score with the dataset's
  foreground mean and std (nnU-Net's CT scheme). Lesion-centred crops (a whole structure reaching the
  array centre in 90 % of the cases, such as CT patches stored without Hounsfield units) get the same
  dataset-wide scheme: a z-score per crop would change with how much of the crop the lesion fills.
  Anything else: z-score each image.
* **Training length.** ``K · sqrt(N · c)`` patches, with N the cases, c the patches it takes to cover a
  median image (at least 1) and K = :data:`SAMPLES_PER_SQRT_CASE`: a small set is seen many times per
  case, a large one fewer times per case but more in all. At most :data:`VOXEL_SAMPLE_BUDGET` voxels
  are drawn (about 15 minutes on 2 CPU cores). K was set so that the five sets of
  ``benchmarks/results/segment.md`` get at least the budgets their hand-tuned runs used.
* **Augmentations.** Mirroring on every axis and intensity scale/shift always (nnU-Net). Quarter turns
  in the last two axes when the mean training mask is (almost) unchanged by them (orientation
  asymmetry below :data:`ROTATION_SYMMETRY`: cells, membranes, lesion-centred patches), never where the
  anatomy has a canonical orientation (a chest X-ray's lungs); prediction then averages over the eight
  symmetries of the square. Elastic deformation (σ = 4 % of the patch side, at least 3 px, half the
  patches; Ronneberger et al., MICCAI 2015) for 2D images, where it was measured; off for volumes.
* **Post-processing candidates** from the training masks: keep the N largest components where at
  least 90 % of the cases have the same small number N (two lungs are two), keep the central
  component where 90 % of the foregrounds (a whole structure, not one of many objects) reach the array
  centre (lesion-centred crops), drop
  components under half the 5th percentile of the true components' sizes, fill holes. None is
  applied until ``medlens segment cv`` keeps those that raise the mean Dice on its folds.
* **Seeds.** One model; ensembles of seeds only when asked (``segment cv --seeds N``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medlens.segment.datasets import SegCase
from medlens.segment.fingerprint import dataset_id, fingerprint
from medlens.segment.instances import INSTANCE_DEFAULTS, diameter_range
from medlens.segment.plan import PLAN_VERSION, SegmentationPlan, parse_plan

MAX_DEPTH = 4
VOXEL_BUDGET = {2: 256 * 256, 3: 64 * 64 * 24}
MIN_PATCH = {2: 32, 3: 16}
DETAIL_VOXELS = 4
SAMPLES_PER_SQRT_CASE = 3000
VOXEL_SAMPLE_BUDGET = 2.4e9
MIN_STEPS = 250
STEPS_PER_EPOCH = 25
ROTATION_SYMMETRY = 0.1
ELASTIC_FRACTION, ELASTIC_MIN_SIGMA = 0.04, 3.0
AGREEMENT = 0.9


def receptive_field(depth: int) -> int:
    """Receptive field (voxels a side) of the plan's U-Net (MONAI ``UNet``, one residual unit a level) with
    ``depth`` stride-2 steps: ``6 · 2^depth − 1`` (measured from the input gradient of a centre output)."""
    return 6 * 2 ** depth - 1


def _spacing(fp: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Target spacing and the reasons for it (see the module docstring)."""
    spacing = np.array(fp["spacing_median"], dtype=float)
    why = [f"median spacing {_fmt(spacing)} mm"]
    if fp["dims"] == 3 and spacing.max() / spacing.min() > 3:
        low = int(spacing.argmax())
        spacing[low] = fp["spacing_p10"][low]
        why.append(f"anisotropic: axis {low} takes its 10th percentile {spacing[low]:.3g} mm")
    structure = fp.get("structure")
    if not structure:
        return spacing, why + ["no foreground to measure a structure on"]
    rf = receptive_field(MAX_DEPTH)
    extent = np.array(structure["extent_median"], dtype=float)
    what = "the whole foreground of a case" if structure["kind"] == "whole" else "one object"
    factor = float(np.max(extent / (rf * spacing)))
    if factor <= 1:
        return spacing, why + [f"the median structure ({what}, {_fmt(extent)} mm) fits the {rf}-voxel receptive "
                               f"field of a depth-{MAX_DEPTH} U-Net at this spacing: no coarsening"]
    limit = math.inf if not structure.get("thickness") else structure["thickness"] / (DETAIL_VOXELS * spacing.max())
    chosen = max(1.0, min(factor, limit))
    if chosen == 1.0:
        return spacing, why + [f"the structure ({what}, {_fmt(extent)} mm) is wider than the {rf}-voxel receptive "
                               f"field, but the thinnest class ({structure['thickness']:.3g} mm) would keep fewer "
                               f"than {DETAIL_VOXELS} voxels across if coarsened"]
    step = 2 ** MAX_DEPTH
    extent_mm = np.array(fp["shape_median"]) * np.array(fp["spacing_median"])
    shape = np.maximum(step, np.round(extent_mm / (spacing * chosen) / step) * step)
    coarse = extent_mm / shape
    return coarse, why + [
        f"the median structure ({what}, {_fmt(extent)} mm) is {factor:.2f}× the {rf}-voxel receptive field of a "
        f"depth-{MAX_DEPTH} U-Net: coarsened {chosen:.2f}× (thinnest class {structure['thickness']:.3g} mm keeps "
        f"≥ {DETAIL_VOXELS} voxels across) and rounded so the median image is {_fmt(shape, '.0f')} voxels"]


def _patch(fp: dict[str, Any], spacing: np.ndarray, square: bool) -> tuple[list[int], int, int, str]:
    dims = fp["dims"]
    shape = np.array(fp["shape_median"]) * np.array(fp["spacing_median"]) / spacing
    patch = np.maximum(shape, MIN_PATCH[dims])
    while np.prod(patch) > VOXEL_BUDGET[dims]:
        patch[int(np.argmax(patch))] *= 0.9
    patch = np.maximum(patch, MIN_PATCH[dims])
    structure = fp.get("structure")
    holds = ""
    if structure:
        need = np.array(structure["extent_p90"]) / spacing
        if (need > patch).any():
            holds = f", grown to hold the 90th-percentile structure ({_fmt(need, '.0f')} voxels)"
        patch = np.maximum(patch, need)
    if square:
        patch[-2:] = patch[-2:].min()
    depth = int(min(MAX_DEPTH, max(1, math.floor(math.log2(patch.min() / 4)))))
    step = 2 ** depth
    patch = [int(math.ceil(p / step) * step) for p in patch]
    batch = int(min(16, max(2, VOXEL_BUDGET[dims] * 2 // int(np.prod(patch)))))
    why = (f"median image at the target spacing {_fmt(shape, '.0f')} voxels, within a budget of "
           f"{VOXEL_BUDGET[dims]} voxels a patch{holds}{' (square in-plane for quarter turns)' if square else ''}; "
           f"depth {depth} (bottleneck ≥ 4 voxels, receptive field {receptive_field(depth)}); batch {batch}")
    return patch, depth, batch, why


def _normalization(fp: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The intensity normalisation and its reason (see the module docstring)."""
    it, structure = fp["intensity"], fp.get("structure")
    dataset_wide = {"clip": [it["p00_5"], it["p99_5"]], "mean": it["mean"], "std": max(it["std"], 1e-6)}
    how = "clip to the foreground's 0.5/99.5 percentiles over the dataset, z-score with its mean and std"
    if fp["modality"] == "CT":
        return {"scheme": "ct_clip_zscore", **dataset_wide}, f"CT: {how}"
    if structure and structure["kind"] == "whole" and structure["centred_share"] >= AGREEMENT:
        return {"scheme": "dataset_clip_zscore", **dataset_wide}, (
            f"{structure['centred_share']:.0%} of the foregrounds reach the array centre (lesion-centred crops): "
            f"{how}, since a per-crop z-score would change with how much of the crop the lesion fills")
    return {"scheme": "zscore_per_image"}, f"{fp['modality']}: z-score each image"


def training_steps(n_cases: int, image_voxels: float, patch: list[int], batch: int) -> tuple[int, str]:
    """Optimiser steps from the number of cases and the patch coverage (see the module docstring)."""
    patch_voxels = float(np.prod(patch))
    coverage = max(1.0, image_voxels / patch_voxels)
    samples = SAMPLES_PER_SQRT_CASE * math.sqrt(n_cases * coverage)
    steps = int(math.ceil(samples / batch))
    cap = int(VOXEL_SAMPLE_BUDGET // (batch * patch_voxels))
    chosen = max(MIN_STEPS, min(steps, cap))
    why = (f"{SAMPLES_PER_SQRT_CASE} · sqrt({n_cases} cases × {coverage:.2f} patches per image) = {samples:.0f} "
           f"patches = {steps} steps of {batch}")
    if steps > cap:
        why += f", capped at {cap} steps ({VOXEL_SAMPLE_BUDGET:.2g} voxels drawn, about 15 min on 2 CPU cores)"
    return chosen, why


def _augmentations(fp: dict[str, Any]) -> tuple[bool, bool, list[str]]:
    """Whether quarter turns and elastic deformation are on, with the reasons."""
    structure = fp.get("structure")
    why = ["mirroring on every axis and intensity scale/shift ±0.1 (nnU-Net's default)"]
    rot90 = bool(structure) and structure["orientation_asymmetry"] < ROTATION_SYMMETRY
    if structure:
        verdict = ("no canonical orientation: quarter turns (and the eight symmetries of the square at "
                   "prediction time)" if rot90 else "the anatomy has a canonical orientation: no quarter turns")
        why.append(f"the mean training mask changes by {structure['orientation_asymmetry']:.3f} under quarter turns "
                   f"(threshold {ROTATION_SYMMETRY}): {verdict}")
    elastic = fp["dims"] == 2
    why.append("elastic deformation of half the 2D patches (the U-Net paper's augmentation)" if elastic
               else "no elastic deformation for volumes (not measured in 3D here)")
    return rot90, elastic, why


def postprocessing_candidates(fp: dict[str, Any], mask_mode: str) -> tuple[list[dict[str, Any]], str]:
    """The post-processing steps ``segment cv`` tries (see the module docstring), with the reason."""
    structure = fp.get("structure")
    if mask_mode == "instance" or not structure:
        return [], ("none: instances are cut from the interiors by the watershed" if structure
                    else "none: no foreground in the training masks")
    candidates, why = [], []
    if structure["kind"] == "whole" and structure["components_share"] >= AGREEMENT:
        n = structure["components"]
        candidates.append({"keep_component": "largest", "keep_count": n})
        why.append(f"{structure['components_share']:.0%} of the training masks have {n} component(s): keep the "
                   f"{n} largest")
    if structure["kind"] == "whole" and structure["centred_share"] >= AGREEMENT:
        candidates.append({"keep_component": "central"})
        why.append(f"{structure['centred_share']:.0%} of the foregrounds reach the array centre: keep the central "
                   "component")
    min_size = max(2, int(structure["component_size_p05"] / 2))
    candidates += [{"min_component_size": min_size}, {"fill_holes": True}]
    why += [f"drop components under {min_size} voxels (half the 5th percentile of the true components)",
            "fill holes"]
    return candidates, ("; ".join(why) + ". Applied only where `medlens segment cv` finds that they raise the "
                        "mean Dice of its validation predictions")


def make_plan(cases: list[SegCase], data: str | Path, mask_mode: str = "binary", n_classes: int = 2,
              network: str = "unet", seed: int = 0, modality: str | None = None) -> SegmentationPlan:
    """Derive a plan from ``cases`` loaded from ``data`` (see the module docstring for the rules);
    ``modality`` overrides the detected one (:func:`medlens.segment.fingerprint.fingerprint`)."""
    fp = fingerprint(cases, n_classes, seed, modality, mask_mode)
    dims = fp["dims"]
    spacing, spacing_why = _spacing(fp)
    rot90, elastic, augment_why = _augmentations(fp)
    patch, depth, batch, patch_why = _patch(fp, spacing, square=rot90)
    image_voxels = float(np.prod(np.array(fp["shape_median"]) * np.array(fp["spacing_median"]) / spacing))
    steps, steps_why = training_steps(fp["n_cases"], image_voxels, patch, batch)
    norm, norm_why = _normalization(fp)
    augmentations: dict[str, Any] = {"flip_axes": list(range(dims)), "flip_prob": 0.5, "intensity_scale": 0.1,
                                     "intensity_shift": 0.1, "rot90": rot90}
    if elastic:
        sigma = max(ELASTIC_MIN_SIGMA, round(ELASTIC_FRACTION * min(patch[-2:]), 1))
        augmentations["elastic"] = {"sigma": sigma, "grid": 3, "prob": 0.5}
    inference: dict[str, Any] = {"overlap": 0.5, "tta_flips": True, "tta_rotations": rot90, "sw_batch_size": 4}
    if mask_mode == "instance":
        inference["instances"] = {**INSTANCE_DEFAULTS, "diameter_range": diameter_range(cases)}
    candidates, post_why = postprocessing_candidates(fp, mask_mode)
    plan = {
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
        "augmentations": augmentations,
        "training": {"epochs": int(math.ceil(steps / STEPS_PER_EPOCH)), "steps_per_epoch": STEPS_PER_EPOCH,
                     "lr": 2e-3, "weight_decay": 1e-5, "foreground_oversample": 0.33, "seed": seed,
                     "patience": None, "max_steps": None, "amp": "auto"},
        "inference": inference,
        "postprocessing": {"candidates": candidates},
        "reasons": {"target_spacing": "; ".join(spacing_why), "patch_size": patch_why, "normalization": norm_why,
                    "training": steps_why, "augmentations": "; ".join(augment_why), "postprocessing": post_why,
                    "ensemble": "one model; ensembles of training seeds only when asked (`segment cv --seeds N`)"},
    }
    return parse_plan(plan, "derived plan")


def add_augmentations(plan: SegmentationPlan, rot90: bool | None = None, elastic_sigma: float | None = None,
                      elastic_prob: float = 0.5, elastic_grid: int = 3) -> SegmentationPlan:
    """``plan`` with the optional augmentations set by hand (``None`` leaves the derived choice).

    ``rot90``: random quarter turns in the last two axes and test-time augmentation over the eight
    symmetries of the square (``inference.tta_rotations``). ``elastic_sigma``: elastic deformation with
    displacements of σ pixels on an ``elastic_grid`` grid, applied to a share ``elastic_prob`` of the
    patches (0 switches it off).
    """
    changes: dict[str, Any] = {}
    if rot90 is not None:
        changes.update({"augmentations.rot90": rot90, "inference.tta_rotations": rot90})
    if elastic_sigma is not None:
        changes["augmentations.elastic"] = None if elastic_sigma == 0 else {
            "sigma": float(elastic_sigma), "grid": int(elastic_grid), "prob": float(elastic_prob)}
    return plan.copy_with(**changes) if changes else plan


def _fmt(values, spec: str = ".3g") -> str:
    return " × ".join(format(float(v), spec) for v in np.atleast_1d(values))
