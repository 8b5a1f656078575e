"""The plan's rules on real data: what a person tuned by hand, derived from the masks (issue 28)."""

from __future__ import annotations

import numpy as np
import pytest

from realdata import need
from medlens.segment.datasets import load_folder
from medlens.segment.postprocess import NO_POSTPROCESSING
from medlens.segment.rules import receptive_field, training_steps, make_plan


def test_two_lung_dataset_plans_two_components_and_keeps_its_orientation(data_root):
    root = need(data_root, "montgomery_cxr_lung_masks")
    plan = make_plan(load_folder(root, "binary", limit=20), root)
    structure = plan.fingerprint.structure
    assert structure.kind == "whole" and structure.components == 2 and structure.components_share == 1.0
    assert {"keep_component": "largest", "keep_count": 2} in plan.postprocessing.candidates
    assert plan.postprocessing.steps() == NO_POSTPROCESSING  # nothing applied before `segment cv` decides
    # chest X-rays have a canonical orientation: no quarter turns, but elastic deformation
    assert not plan.augmentations.rot90 and not plan.inference.tta_rotations
    assert structure.orientation_asymmetry > 0.15 and plan.augmentations.elastic is not None
    # the lung pair (about 400 px) is brought within the receptive field of the network: 4 px, 128 px images
    assert plan.target_spacing == [4.0, 4.0] and plan.patch_size == [128, 128] and plan.network.depth == 4
    extent_voxels = np.array(structure.extent_median) / np.array(plan.target_spacing)
    assert extent_voxels.max() <= receptive_field(plan.network.depth) + 2 ** plan.network.depth
    assert "receptive field" in plan.reasons["target_spacing"] and "2 component" in plan.reasons["postprocessing"]


def test_small_structure_set_plans_a_patch_that_contains_the_structure(data_root):
    root = need(data_root, "lidc_idri_nodule_vois")
    cases = load_folder(root, "binary", limit=150)
    plan = make_plan(cases, root)
    spacing = np.array(plan.target_spacing)
    assert (spacing <= np.median([c.image.spacing for c in cases], axis=0) + 1e-6).all()  # nodules: no coarsening
    assert "no coarsening" in plan.reasons["target_spacing"]
    patch_mm = np.array(plan.patch_size) * spacing
    boxes = []
    for c in cases:
        where = np.argwhere(c.mask > 0)
        boxes.append((where.max(axis=0) - where.min(axis=0) + 1) * np.array(c.image.spacing))
    inside = (np.array(boxes) <= patch_mm + 1e-6).mean(axis=0)
    assert (inside >= 0.9).all(), inside  # along each axis the patch holds the whole nodule in 90 % of the cases
    assert (np.median(boxes, axis=0) / spacing <= receptive_field(plan.network.depth)).all()
    # lesion-centred crops of a structure without a canonical orientation: quarter turns, central component
    assert plan.augmentations.rot90 and plan.augmentations.elastic is None  # no elastic deformation in 3D
    assert {"keep_component": "central"} in plan.postprocessing.candidates


def test_cells_are_objects_and_turn_freely(data_root):
    root = need(data_root, "isbi2012_membrane")
    plan = make_plan(load_folder(root, "binary"), root)
    structure = plan.fingerprint.structure
    assert structure.kind == "objects"  # many cells per image: a cell is the structure, not the image
    assert plan.target_spacing == [1.0, 1.0]  # membranes a few pixels thick are never coarsened away
    assert plan.augmentations.rot90 and plan.inference.tta_rotations and structure.orientation_asymmetry < 0.1
    assert not any(c.get("keep_component") for c in plan.postprocessing.candidates)


@pytest.mark.parametrize("n_cases", [20, 100, 400])
def test_training_length_grows_with_the_data_while_passes_per_case_fall(n_cases):
    steps, why = training_steps(n_cases, 128 * 128, [128, 128], 8)
    more, _ = training_steps(4 * n_cases, 128 * 128, [128, 128], 8)
    covered, _ = training_steps(n_cases, 4 * 128 * 128, [128, 128], 8)
    assert steps < more < 4 * steps and more == pytest.approx(2 * steps, rel=0.01)
    assert covered == pytest.approx(more, rel=0.01)  # four patches to cover an image count as four cases
    assert f"sqrt({n_cases} cases" in why
    capped, why = training_steps(100_000, 512 * 512, [256, 256], 2)
    assert capped * 2 * 256 * 256 <= 2.4e9 and "capped" in why
