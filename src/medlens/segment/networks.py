"""Segmentation networks, 2D and 3D, looked up by name.

Every network maps ``(B, C_in, *spatial)`` to per-class logits ``(B, n_classes, *spatial)`` of the same
spatial size, for any input size (pooling uses ``ceil_mode`` and every upsampling step resizes to the
size of the map it is fused with), except ``unet``, whose input must be divisible by ``2 ** depth``
(sliding-window inference and the plan's patch sizes guarantee this).

============  ===========================================================================================
``fcn``       Fully convolutional network with FCN-8s skip fusion (Long, Shelhamer & Darrell, CVPR 2015):
              class scores from strides 8, 16 and 32, summed after upsampling, upsampled to the input.
``unet``      U-Net encoder-decoder with skip connections (Ronneberger et al., MICCAI 2015);
              MONAI's residual ``UNet``.
``atrous``    DeepLab v3 (Chen et al., arXiv:1706.05587): a backbone of output stride 8 whose last
              stage uses dilated convolutions, then atrous spatial pyramid pooling (ASPP).
``pyramid``   PSPNet (Zhao et al., CVPR 2017): pyramid pooling module (bins 1, 2, 3, 6) over a small
              backbone of output stride 8.
============  ===========================================================================================
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from monai.networks.nets import UNet
from torch import nn

from medlens.errors import ConfigError

NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str):
    """Decorator: make a builder ``f(spatial_dims, in_channels, n_classes, channels, depth)`` findable."""

    def wrap(builder):
        NETWORKS[name] = builder
        return builder

    return wrap


def build_network(
    name: str, spatial_dims: int, in_channels: int, n_classes: int, channels: int = 16, depth: int = 4
) -> nn.Module:
    """Build the network ``name``.

    Parameters
    ----------
    name : str
        One of :data:`NETWORKS` (``fcn``, ``unet``, ``atrous``, ``pyramid``).
    spatial_dims : int
        2 for images, 3 for volumes.
    in_channels, n_classes : int
        Input channels and output classes (background included).
    channels : int
        Width of the first stage; each stage doubles it.
    depth : int
        Number of downsampling steps (``unet``; the others use output stride 8, or 32 for ``fcn``).
    """
    if name not in NETWORKS:
        raise ConfigError(f"network: unknown name {name!r}; choose one of {sorted(NETWORKS)}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"network: spatial_dims must be 2 or 3, got {spatial_dims}")
    return NETWORKS[name](spatial_dims, in_channels, n_classes, channels, depth)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class ConvBlock(nn.Sequential):
    """``n`` × (3^d convolution, batch norm, ReLU); ``dilation`` widens the field without pooling."""

    def __init__(self, dims: int, cin: int, cout: int, n: int = 2, dilation: int = 1):
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                Conv[Conv.CONV, dims](cin if i == 0 else cout, cout, 3, padding=dilation, dilation=dilation,
                                      bias=False),
                Norm[Norm.BATCH, dims](cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


def _pool(dims: int) -> nn.Module:
    return Pool[Pool.MAX, dims](kernel_size=2, stride=2, ceil_mode=True)


class FCN8s(nn.Module):
    """FCN-8s: VGG-style encoder (5 pooled stages), score layers at strides 8/16/32 fused by summation.

    ``score = up(up(up2(s32) + s16) + s8)``, each ``up`` resizing (bilinear or trilinear, the fixed
    initialisation of FCN's deconvolutions) to the next finer map, then to the input.
    """

    def __init__(self, dims: int, in_channels: int, n_classes: int, channels: int = 16):
        super().__init__()
        widths = [channels, channels * 2, channels * 4, channels * 8, channels * 8]
        self.stages = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.stages.append(nn.Sequential(ConvBlock(dims, cin, w), _pool(dims)))
            cin = w
        conv = Conv[Conv.CONV, dims]
        self.fc = ConvBlock(dims, widths[-1], widths[-1] * 2, n=1)  # fc6/fc7 as a convolution
        self.score32 = conv(widths[-1] * 2, n_classes, 1)
        self.score16 = conv(widths[3], n_classes, 1)
        self.score8 = conv(widths[2], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        s32 = self.score32(self.fc(feats[4]))
        s16 = self.score16(feats[3]) + _resize(s32, feats[3].shape[2:])
        s8 = self.score8(feats[2]) + _resize(s16, feats[2].shape[2:])
        return _resize(s8, size)


class Backbone(nn.Module):
    """Output-stride-8 encoder: three pooled stages, then a dilated stage (dilation 2) at stride 8."""

    def __init__(self, dims: int, in_channels: int, channels: int):
        super().__init__()
        self.out_channels = channels * 8
        self.body = nn.Sequential(
            ConvBlock(dims, in_channels, channels), _pool(dims),
            ConvBlock(dims, channels, channels * 2), _pool(dims),
            ConvBlock(dims, channels * 2, channels * 4), _pool(dims),
            ConvBlock(dims, channels * 4, channels * 8, dilation=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1^d convolution, three 3^d convolutions at ``rates`` and an
    image-level (global average) branch, concatenated and projected by a 1^d convolution (DeepLab v3)."""

    def __init__(self, dims: int, cin: int, cout: int, rates: Sequence[int] = (2, 4, 6)):
        super().__init__()
        conv, norm = Conv[Conv.CONV, dims], Norm[Norm.BATCH, dims]
        self.branches = nn.ModuleList(
            [nn.Sequential(conv(cin, cout, 1, bias=False), norm(cout), nn.ReLU(inplace=True))]
            + [ConvBlock(dims, cin, cout, n=1, dilation=r) for r in rates]
        )
        self.image_pool = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, dims](1), conv(cin, cout, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            conv(cout * (len(rates) + 2), cout, 1, bias=False), norm(cout), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        outs = [b(x) for b in self.branches]
        outs.append(self.image_pool(x).expand(-1, -1, *size))
        return self.project(torch.cat(outs, dim=1))


class PyramidPooling(nn.Module):
    """PSP module: average-pool into ``bins`` × ... grids, 1^d convolution each, upsample, concatenate
    with the input features."""

    def __init__(self, dims: int, cin: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        conv, norm = Conv[Conv.CONV, dims], Norm[Norm.BATCH, dims]
        reduced = max(cin // len(bins), 1)
        self.out_channels = cin + reduced * len(bins)
        self.levels = nn.ModuleList(
            nn.Sequential(
                Pool[Pool.ADAPTIVEAVG, dims](b), conv(cin, reduced, 1, bias=False), norm(reduced),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        return torch.cat([x] + [_resize(level(x), size) for level in self.levels], dim=1)


class HeadNet(nn.Module):
    """Backbone → context head → 3^d conv → 1^d classifier → upsample to the input size."""

    def __init__(self, dims: int, in_channels: int, n_classes: int, channels: int, head: str):
        super().__init__()
        self.backbone = Backbone(dims, in_channels, channels)
        c = self.backbone.out_channels
        if head == "aspp":
            self.head = ASPP(dims, c, channels * 4)
            hc = channels * 4
        else:
            self.head = PyramidPooling(dims, c)
            hc = self.head.out_channels
        self.classifier = nn.Sequential(
            ConvBlock(dims, hc, channels * 4, n=1), Conv[Conv.CONV, dims](channels * 4, n_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.classifier(self.head(self.backbone(x))), x.shape[2:])


@register_network("fcn")
def fcn(dims: int, in_channels: int, n_classes: int, channels: int = 16, depth: int = 5) -> nn.Module:
    """FCN-8s (``depth`` is fixed at 5 pooled stages by the architecture)."""
    return FCN8s(dims, in_channels, n_classes, channels)


@register_network("unet")
def unet(dims: int, in_channels: int, n_classes: int, channels: int = 16, depth: int = 4) -> nn.Module:
    """MONAI residual U-Net with ``depth`` stride-2 steps and widths ``channels · 2^k``."""
    return UNet(
        spatial_dims=dims, in_channels=in_channels, out_channels=n_classes,
        channels=tuple(channels * 2**k for k in range(depth + 1)), strides=(2,) * depth,
        num_res_units=1, norm="batch",
    )


@register_network("atrous")
def atrous(dims: int, in_channels: int, n_classes: int, channels: int = 16, depth: int = 3) -> nn.Module:
    """DeepLab v3-style: dilated backbone (output stride 8) + ASPP (rates 2, 4, 6 at stride 8)."""
    return HeadNet(dims, in_channels, n_classes, channels, head="aspp")


@register_network("pyramid")
def pyramid(dims: int, in_channels: int, n_classes: int, channels: int = 16, depth: int = 3) -> nn.Module:
    """PSPNet-style: dilated backbone (output stride 8) + pyramid pooling (bins 1, 2, 3, 6)."""
    return HeadNet(dims, in_channels, n_classes, channels, head="psp")
