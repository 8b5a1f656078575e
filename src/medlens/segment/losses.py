"""Segmentation losses on logits ``(B, K, *spatial)`` and integer targets ``(B, 1, *spatial)``.

============  ===========================================================================================
``ce``        Pixel-wise cross-entropy, ``L = -1/N Σ_i Σ_j y_ij log ŷ_ij`` with ``ŷ = softmax(logits)``,
              ``i`` over the N pixels and ``j`` over the classes (Long et al., CVPR 2015).
``dice``      Soft Dice, ``L = 1 - 2 Σ y ŷ / (Σ y + Σ ŷ)`` per class and image, averaged (Milletari et al.,
              V-Net, 3DV 2016); MONAI ``DiceLoss``.
``dicece``    Dice + cross-entropy, the nnU-Net default; MONAI ``DiceCELoss``.
============  ===========================================================================================
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from medlens.errors import ConfigError


class PixelCrossEntropy(nn.Module):
    """``-1/N Σ_i Σ_j y_ij log softmax(z)_ij`` for integer targets ``(B, 1, ...)``."""

    def __init__(self):
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target[:, 0].long())


LOSSES = {
    "ce": PixelCrossEntropy,
    "dice": lambda: DiceLoss(to_onehot_y=True, softmax=True),
    "dicece": lambda: DiceCELoss(to_onehot_y=True, softmax=True),
}


def build_loss(name: str) -> nn.Module:
    """The loss ``name`` (``ce``, ``dice`` or ``dicece``)."""
    if name not in LOSSES:
        raise ConfigError(f"loss: unknown name {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]()
