"""Segmentation networks (2D and 3D forward shapes) and losses (formula checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.errors import ConfigError
from medlens.segment.losses import build_loss
from medlens.segment.networks import NETWORKS, build_network, count_parameters

torch.set_num_threads(2)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("dims", [2, 3])
def test_forward_shape_any_size(name, dims):
    torch.manual_seed(0)
    net = build_network(name, dims, in_channels=2, n_classes=3, channels=4, depth=2).eval()
    shape = (36, 28) if dims == 2 else (12, 20, 16)
    if name == "unet":  # U-Net needs sizes divisible by 2**depth (the plan guarantees it)
        shape = tuple(4 * ((s + 3) // 4) for s in shape)
    else:  # the others take any size, odd ones included
        shape = tuple(s + 1 for s in shape)
    with torch.no_grad():
        out = net(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()
    assert count_parameters(net) > 1000


def test_fcn_uses_skip_fusion():
    net = build_network("fcn", 2, 1, 2, channels=4)
    names = {n for n, _ in net.named_modules()}
    assert {"score8", "score16", "score32"} <= names


def test_unknown_network_and_loss():
    with pytest.raises(ConfigError, match="unknown name"):
        build_network("segnet", 2, 1, 2)
    with pytest.raises(ConfigError, match="spatial_dims"):
        build_network("unet", 1, 1, 2)
    with pytest.raises(ConfigError, match="unknown name"):
        build_loss("focal")


def test_cross_entropy_matches_formula():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 3, 5, 4)), dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 3, size=(2, 1, 5, 4)))
    p = torch.softmax(logits, dim=1).numpy()
    y = np.eye(3)[target[:, 0].numpy()].transpose(0, 3, 1, 2)
    expected = -(y * np.log(p)).sum(axis=1).mean()  # L = -1/N sum_i sum_j y_ij log yhat_ij
    assert float(build_loss("ce")(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_dice_loss_small_for_perfect_and_large_for_wrong():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 2:6, 2:6] = 1
    good = torch.cat([(1 - target) * 20.0, target * 20.0], dim=1).float()
    bad = torch.cat([target * 20.0, (1 - target) * 20.0], dim=1).float()
    for name in ("dice", "dicece"):
        loss = build_loss(name)
        assert float(loss(good, target)) < 0.01
        assert float(loss(bad, target)) > 0.9


def test_cli_lists_every_registered_network():
    from medlens.commands.segment import NETWORK_NAMES
    from medlens.segment.networks import NETWORKS

    assert set(NETWORK_NAMES) == set(NETWORKS)
