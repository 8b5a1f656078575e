"""Classification losses: class-weighted cross-entropy and focal loss for imbalanced data, and a class loss
with auxiliary regression targets (:class:`AuxiliaryTargetLoss`).

Focal loss (Lin TY, Goyal P, Girshick R, He K, Dollár P (2017), *Focal loss for dense object
detection*, ICCV, eq. 5):

    FL(p_t) = −α_t (1 − p_t)^γ log p_t

with p_t the predicted probability of the true class. The factor (1 − p_t)^γ shrinks the loss of
samples the model already gets right with confidence (p_t → 1), so the many easy samples of the
majority class stop dominating the gradient; γ = 0 gives cross-entropy back. α_t balances the
classes: a float α is the weight of the positive class (α for y = 1, 1 − α for y = 0; the paper uses
0.25 with γ = 2), a sequence gives one weight per class, None means 1.

Per-class weights ``weight`` (e.g. ``"balanced"``, w_c = N / (K n_c)) multiply the per-sample loss, and the
mean is the weighted mean Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}, the rule of :class:`torch.nn.CrossEntropyLoss`,
so ``focal_loss(..., gamma=0, alpha=None, weight=w)`` equals ``CrossEntropyLoss(weight=w)``.

MONAI's :class:`monai.losses.FocalLoss` computes the same per-sample term for one-hot targets but
averages over samples *and* classes and has no class-weighted mean; this module keeps the
cross-entropy conventions the models already use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medlens.errors import ConfigError

LOSSES = ("ce", "focal")


def _alpha_t(alpha: float | Sequence[float] | Tensor | None, target: Tensor, n_classes: int) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        if n_classes != 2:
            raise ConfigError(f"focal loss: a single alpha ({alpha}) weights the positive class of a binary task; "
                              f"give one alpha per class for {n_classes} classes")
        if not 0 < alpha < 1:
            raise ConfigError(f"focal loss: alpha must lie in (0, 1), got {alpha}")
        return torch.where(target == 1, torch.as_tensor(float(alpha)), torch.as_tensor(1.0 - float(alpha))).to(
            device=target.device)
    values = torch.as_tensor(alpha, dtype=torch.float32, device=target.device).reshape(-1)
    if values.numel() != n_classes:
        raise ConfigError(f"focal loss: alpha has {values.numel()} values for {n_classes} classes")
    return values[target]


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
               weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Focal loss FL = −α_t (1 − p_t)^γ log p_t (Lin et al. 2017).

    Parameters
    ----------
    logits : Tensor
        ``(N, K)`` class scores (softmax), or ``(N,)`` / ``(N, 1)`` one binary logit (sigmoid).
    target : Tensor
        ``(N,)`` class indices (0/1 for a single logit).
    gamma : float
        Focusing parameter γ ≥ 0; 0 gives (α-weighted) cross-entropy.
    alpha : float, sequence of float or None
        α_t as in the module docstring.
    weight : Tensor, optional
        ``(K,)`` per-class weights (K = 2 for a single logit); the mean becomes Σ w_{y_i} ℓ_i / Σ w_{y_i}.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor
        The reduced loss (a scalar) or the per-sample losses ``(N,)``.
    """
    if gamma < 0:
        raise ConfigError(f"focal loss: gamma must be >= 0, got {gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"focal loss: unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")
    target = target.long().reshape(-1)
    logits = logits.float()
    if logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        z = logits.reshape(-1)
        n_classes = 2
        # log p_t = log σ(z) for y = 1, log σ(−z) = log(1 − σ(z)) for y = 0
        log_pt = F.logsigmoid(torch.where(target == 1, z, -z))
    elif logits.dim() == 2:
        n_classes = logits.shape[1]
        log_pt = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    else:
        raise ConfigError(f"focal loss: logits must be (N,), (N, 1) or (N, K), got {tuple(logits.shape)}")
    pt = log_pt.exp()
    per_sample = -((1.0 - pt).clamp(min=0.0) ** gamma) * log_pt
    a = _alpha_t(alpha, target, n_classes)
    if a is not None:
        per_sample = a * per_sample
    w = None
    if weight is not None:
        w = torch.as_tensor(weight, dtype=per_sample.dtype, device=per_sample.device)[target]
        per_sample = w * per_sample
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / (w.sum() if w is not None else per_sample.new_tensor(float(len(per_sample))))


class FocalLoss(nn.Module):
    """:func:`focal_loss` as a module (class weights travel with ``.to(device)``)."""

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 weight: Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"focal loss: gamma must be >= 0, got {gamma}")
        self.gamma, self.alpha, self.reduction = float(gamma), alpha, reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.weight, self.reduction)


def classification_loss(kind: str, weight: Tensor | None = None, gamma: float = 2.0,
                        alpha: float | Sequence[float] | None = None) -> nn.Module:
    """``"ce"``: :class:`torch.nn.CrossEntropyLoss` with ``weight``; ``"focal"``: :class:`FocalLoss`."""
    if kind == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if kind == "focal":
        return FocalLoss(gamma=gamma, alpha=alpha, weight=weight)
    raise ConfigError(f"loss: unknown {kind!r}; use one of {', '.join(LOSSES)}")


class AuxiliaryTargetLoss(nn.Module):
    """A class loss plus λ times the squared error of auxiliary regression outputs (multi-task learning).

        L = L_cls(z_{:K}, y) + λ · mean over observed (i, a) of (z_{i, K+a} − t_{ia})²

    The network's outputs ``z`` hold K class logits followed by A auxiliary predictions; the targets hold
    the class index in column 0 and the A standardised auxiliary targets after it, NaN where a target is
    missing (left out of the mean). Learning the radiologists' semantic ratings beside the malignancy
    label follows Shen S, Han SX, Aberle DR, Bui AA, Hsu W (2019), *An interpretable deep hierarchical
    semantic convolutional neural network for lung nodule malignancy classification*, Expert Systems
    with Applications 128: 84–95.

    Parameters
    ----------
    class_loss : nn.Module
        ``class_loss(logits, class_index)``, e.g. :func:`classification_loss`.
    n_classes : int
        K, the number of class logits before the auxiliary outputs.
    weight : float
        λ ≥ 0.
    """

    def __init__(self, class_loss: nn.Module, n_classes: int, weight: float):
        super().__init__()
        if weight < 0:
            raise ConfigError(f"auxiliary loss: weight must be >= 0, got {weight}")
        self.class_loss, self.n_classes, self.weight = class_loss, int(n_classes), float(weight)

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        k = self.n_classes
        loss = self.class_loss(outputs[:, :k], target[:, 0].long())
        aux, observed = target[:, 1:], ~torch.isnan(target[:, 1:])
        if observed.any():
            loss = loss + self.weight * ((outputs[:, k:] - aux)[observed] ** 2).mean()
        return loss
