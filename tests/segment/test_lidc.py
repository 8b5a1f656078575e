"""LIDC nodule VOIs: most are thinner than the plan's patch, so inference must pad them the way training
does; the mask survives the resampling round trip; one-component post-processing keeps the nodule.

Regression: MONAI's sliding window padded a small volume with 0 (after the CT z-score, soft tissue
near -220 HU) while training padded it with air; 3D U-Net Dice on LIDC fell from 0.70 to 0.46.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realdata import need
from medlens.segment.datasets import load_folder
from medlens.segment.evaluate import mean_dice
from medlens.segment.bundle import build_model
from medlens.segment.infer import predict_probabilities, segment_image
from medlens.segment.postprocess import keep_component
from medlens.segment.prepare import pad_to, pad_value, prepare_case, prepare_image, resize
from medlens.segment.rules import make_plan
from medlens.segment.train import PatchDataset

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def lidc(data_root):
    root = need(data_root, "lidc_idri_nodule_vois")
    cases = load_folder(root, "binary", limit=60)
    plan = make_plan(cases, root).copy_with(**{"network.channels": 4, "inference.tta_flips": False})
    return cases, plan


class Spy(torch.nn.Module):
    """Records every window it is given; returns logits from the input so the output depends on it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.cat([-x * self.w, x * self.w], dim=1)


def test_thin_voi_windows_are_padded_like_training_patches(lidc):
    cases, plan = lidc
    patch = plan.patch
    x, y = prepare_case(plan, next(c for c in cases if prepare_image(plan, c.image).shape[1] <= patch[0] - 4))
    lo = (patch[0] - x.shape[1]) // 2  # slices of padding before the volume
    # what training sees: the pad slabs of every patch hold the case's pad value (air)
    train = PatchDataset([(x, y)], plan, 4, seed=0)
    for i in range(4):
        xp = train[i][0].numpy()
        slab = xp[:, :lo]  # (a z flip moves the larger slab here; it still starts with lo padded slices)
        assert np.ptp(slab) == 0 and slab.flat[0] == xp.min()
    # what inference shows the network: the same value, not MONAI's 0 (soft tissue after the CT z-score)
    spy = Spy()
    prob = predict_probabilities(spy, plan, x, tta=False)
    assert prob.shape[1:] == x.shape[1:]
    for window in spy.seen:
        assert window.shape[2] == patch[0]
        assert torch.all(window[0, :, :lo] == pad_value(x)), window[0, :, :lo].unique()[:5]
        assert torch.all(window[0, :, lo + x.shape[1]:] == pad_value(x))


def test_prediction_of_thin_voi_equals_prediction_of_voi_padded_with_air(lidc):
    """An untrained U-Net in eval mode (BatchNorm with running statistics) must give the same answer for a
    thin VOI and for the same VOI already padded to the patch with air, cropped back."""
    cases, plan = lidc
    torch.manual_seed(0)
    model = build_model(plan).eval()
    patch = plan.patch
    thin = [c for c in cases if prepare_image(plan, c.image).shape[1] < patch[0]][:3]
    assert thin
    for c in thin:
        x = prepare_image(plan, c.image)
        got = predict_probabilities(model, plan, x, tta=False)
        padded = pad_to(x, patch, pad_value(x))
        ref = predict_probabilities(model, plan, padded, tta=False)
        lo = [(p - n) // 2 for n, p in zip(x.shape[1:], padded.shape[1:])]
        ref = ref[(slice(None),) + tuple(slice(a, a + n) for a, n in zip(lo, x.shape[1:]))]
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_true_mask_survives_the_resampling_round_trip(lidc):
    """True mask -> plan spacing (nearest) -> back to the VOI grid (linear on probabilities, as
    :func:`segment_image` does) keeps Dice near 1: no half-voxel shift or axis swap."""
    cases, plan = lidc
    dices = []
    for c in cases[:40]:
        _, y = prepare_case(plan, c)
        onehot = np.concatenate([1 - y, y]).astype(np.float32)
        back = resize(onehot, c.image.shape).argmax(axis=0)
        dices.append(mean_dice(back, c.mask))
    assert np.mean(dices) > 0.97 and np.median(dices) > 0.98, (np.mean(dices), np.min(dices))


def test_keep_component_keeps_the_nodule(lidc):
    cases, plan = lidc
    c = next(c for c in cases if c.mask.sum() > 50)
    noisy = c.mask.copy()
    noisy[:, :3, :3] = 1  # a false-positive blob in a corner, away from the centred nodule
    kept = keep_component(noisy, "central")
    assert np.array_equal(kept, c.mask) or mean_dice(kept, c.mask) > mean_dice(noisy, c.mask)
    assert not kept[:, :3, :3].any()
    assert keep_component(noisy, None) is noisy
    big = np.zeros_like(noisy)
    big[:, :20, :20] = 1
    big[0, -1, -1] = 1
    assert keep_component(big, "largest").sum() == big.sum() - 1
    # the plan option reaches segment_image (untrained net: only the output contract is checked)
    plan = plan.copy_with(**{"postprocessing.keep_component": "central"})
    from scipy import ndimage

    mask = segment_image(build_model(plan).eval(), plan, c.image, tta=False)
    assert mask.shape == c.image.shape
    assert ndimage.label(mask, np.ones((3, 3, 3)))[1] <= 1
