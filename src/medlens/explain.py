"""Grad-CAM maps for bundled CNNs, and PNG overlays of them.

Grad-CAM (Selvaraju et al., *Grad-CAM: visual explanations from deep networks via gradient-based
localization*, ICCV 2017): with ``A^k`` the feature maps of a convolutional layer and ``y^c`` the
score of class ``c``, the weights are ``α_k^c = mean_{ij} ∂y^c/∂A^k_{ij}`` and the map is
``ReLU(Σ_k α_k^c A^k)``, upsampled to the input size and scaled to [0, 1]. Computed by
:class:`monai.visualize.GradCAM` on the network's last convolutional block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medlens.errors import ModelError


def last_conv_block(network: nn.Module) -> str:
    """Name (as in ``named_modules``) of the network's last convolutional block.

    The last top-level child that contains a convolution (a residual block); when that child is a
    bare convolution (the compact net's conv-BN-ReLU-pool), the block ends at the pooling layer that
    follows it, whose output is the block's feature map.
    """
    children = list(network.named_children())
    convs = [i for i, (_, child) in enumerate(children)
             if any(isinstance(m, nn.modules.conv._ConvNd) for m in child.modules())]
    if not convs:
        raise ModelError("explain: the network has no convolutional layer for Grad-CAM")
    last = convs[-1]
    if isinstance(children[last][1], nn.modules.conv._ConvNd):
        pools = [i for i in range(last + 1, len(children))
                 if isinstance(children[i][1], (nn.MaxPool2d, nn.MaxPool3d))]
        if pools:
            last = pools[0]
    return children[last][0]


def grad_cam(model, images: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM maps of a fitted ``cnn`` model for ``images`` ``(N, C, ...)`` prepared like its training data.

    Parameters
    ----------
    model
        A fitted :class:`medlens.models.cnn.CNNClassifier`.
    images : ndarray
        Model-ready images (before the model's own standardisation).
    class_index : int, optional
        Class whose score is explained; default the predicted class of each image.

    Returns
    -------
    ndarray
        ``(N, *spatial)`` maps in [0, 1], the images' spatial shape.
    """
    from monai.visualize import GradCAM

    network = getattr(model, "network_", None)
    if network is None or getattr(model, "name", None) != "cnn":
        raise ModelError("explain: Grad-CAM needs a fitted cnn model")
    x = torch.from_numpy((np.asarray(images, dtype=np.float32) - model.mean_) / model.std_)
    network = network.float().cpu().to(memory_format=torch.contiguous_format).eval()
    cam = GradCAM(nn_module=network, target_layers=last_conv_block(network))
    maps = cam(x, class_idx=class_index)
    return maps[:, 0].detach().cpu().numpy()


def write_overlay(image: np.ndarray, heat: np.ndarray, path: str | Path, title: str = "") -> Path:
    """PNG of a 2D ``image`` (first channel) with its Grad-CAM ``heat`` map blended on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(image[0], cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
