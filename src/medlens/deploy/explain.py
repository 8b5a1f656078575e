"""Explanation maps for classifiers of 2D images and 3D volumes, and PNG overlays of them.

Three methods behind :func:`explain`, each giving one map per image with the image's spatial shape,
scaled per image to [0, 1] (1 = most important for the explained class):

``"gradcam"``
    Grad-CAM (Selvaraju et al., *Grad-CAM: visual explanations from deep networks via gradient-based
    localization*, ICCV 2017). With ``A^k`` the feature maps of the network's last convolutional block
    and ``y^c`` the (pre-softmax) score of class ``c``:

    .. math:: α_k^c = \\frac{1}{Z} \\sum_{ij} \\frac{∂y^c}{∂A^k_{ij}}, \\qquad
              L^c = \\mathrm{ReLU}\\Big(\\sum_k α_k^c A^k\\Big).

``"gradcam++"``
    Grad-CAM++ (Chattopadhay et al., *Grad-CAM++: generalized gradient-based visual explanations for
    deep convolutional networks*, WACV 2018, eq. 19 with an exponential score ``Y^c = exp(S^c)``).
    With ``g = ∂S^c/∂A^k_{ij}``:

    .. math:: a^{kc}_{ij} = \\frac{g^2}{2 g^2 + \\sum_{ab} A^k_{ab}\\, g^3}, \\qquad
              w_k^c = \\sum_{ij} a^{kc}_{ij}\\, \\mathrm{ReLU}(g), \\qquad
              L^c = \\mathrm{ReLU}\\Big(\\sum_k w_k^c A^k\\Big)

    (the common factor ``exp(S^c)`` of the paper's weights is dropped: it is one positive number per
    image and vanishes in the [0, 1] scaling).

``"occlusion"``
    Occlusion sensitivity (Zeiler & Fergus, *Visualizing and understanding convolutional networks*,
    ECCV 2014), computed by :class:`monai.visualize.OcclusionSensitivity`: a box of ``mask_size``
    voxels slides over the image (stride ``mask_size·(1 − overlap)``); inside it the standardised
    intensities are multiplied by ``1 − G`` (``G`` a Gaussian bump, 1 at the box centre), which pulls
    them to the training mean; each box's class probability ``p_c(x̃)`` is spread over the box with
    Gaussian weights. The map is the probability drop

    .. math:: S^c(v) = \\mathrm{ReLU}\\big(p_c(x) − p_c(x̃_{v})\\big),

    high where hiding a region lowers the class probability. It needs only forward passes: any
    classifier with ``predict_proba`` can be explained (see :func:`explain`).

The CAM maps are upsampled to the input size (bilinear / trilinear). Every map is then scaled per image
as ``(L − min L) / (max L − min L)`` (all zeros when the map is constant).

Three behaviours of MONAI 1.6's ``GradCAM`` / ``GradCAMpp`` are avoided on purpose: its
``default_normalizer`` maps (min, max) to (1, 0), inverting the maps (Project-MONAI/tutorials#1796);
with ``class_idx=None`` its score is ``logits[:, argmax]``, an N×N block that mixes the classes
predicted for the other images of the batch; and every instance leaves its hooks on the network. The
CAMs are therefore computed here with one forward hook (removed afterwards), per-image classes and our
own scaling; the tests check them against MONAI's classes on single images. MONAI's occlusion is used
as it is, with the softmax passed explicitly (its default applies a sigmoid when the *input* has one
channel).
"""

from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from medlens.errors import ModelError
from medlens.models.base import GRADCAM_METHODS
from medlens.files import write_atomically

METHODS = ("gradcam", "gradcam++", "occlusion")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def unit_scale(maps: Tensor | np.ndarray) -> np.ndarray:
    """Each map of ``(N, *spatial)`` scaled to [0, 1] by its own min and max; a constant map gives zeros."""
    maps = torch.as_tensor(maps, dtype=torch.float32).detach()
    flat = maps.reshape(len(maps), -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.reshape(maps.shape).cpu().numpy()


def _views(model) -> list:
    """The model's networks as Grad-CAM sees them (:meth:`medlens.models.base.Model.explain_networks`)."""
    if not set(GRADCAM_METHODS) & set(model.capabilities.explain):
        raise ModelError(f"explain: Grad-CAM needs a model with convolutional feature maps; model "
                         f"{model.name!r} supports {', '.join(model.capabilities.explain) or 'no explanation'}")
    return model.explain_networks()


@contextmanager
def _evaluating(network: nn.Module):
    """The network in eval mode (BatchNorm running statistics, no dropout), its mode restored after."""
    was_training = network.training
    network.eval()
    try:
        yield network
    finally:
        network.train(was_training)


def _on_network(x: Tensor, network: nn.Module) -> Tensor:
    """``x`` on the network's device and dtype (the network itself, its memory format included, is left as is)."""
    parameter = next(network.parameters(), None)
    return x if parameter is None else x.to(device=parameter.device, dtype=parameter.dtype)


def _classes(class_index, logits: Tensor) -> Tensor:
    """Per-image class indices: the predicted class when ``class_index`` is None."""
    n = len(logits)
    if class_index is None:
        return logits.argmax(dim=1)
    index = torch.as_tensor(np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy())
    if (index < 0).any() or (index >= logits.shape[1]).any():
        raise ModelError(f"explain: class_index {class_index} outside 0..{logits.shape[1] - 1}")
    return index


# --------------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++
# --------------------------------------------------------------------------------------------------
def _activations_and_gradients(network: nn.Module, layer: str, x: Tensor, class_index) -> tuple[Tensor, Tensor]:
    """``A`` (output of ``layer``) and ``∂y^c/∂A`` for each image's own class ``c``."""
    captured: list[Tensor] = []
    module = dict(network.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            logits = network(x)
            classes = _classes(class_index, logits.detach())
            score = logits.gather(1, classes[:, None]).sum()
            (grad,) = torch.autograd.grad(score, captured[-1])
    finally:
        handle.remove()
    return captured[-1].detach(), grad.detach()


def _gradcam_weights(acti: Tensor, grad: Tensor) -> Tensor:
    """Selvaraju et al. (2017), eq. 1: spatial mean of the gradients."""
    return grad.flatten(2).mean(dim=2)


def _gradcampp_weights(acti: Tensor, grad: Tensor) -> Tensor:
    """Chattopadhay et al. (2018), eq. 19 (exponential score; the factor ``exp(S)`` dropped)."""
    g2 = grad.pow(2)
    denominator = 2 * g2 + (acti * grad.pow(3)).flatten(2).sum(dim=2).view(*grad.shape[:2], *[1] * (grad.dim() - 2))
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return (alpha * torch.relu(grad)).flatten(2).sum(dim=2)


def _cam(weights_of: Callable[[Tensor, Tensor], Tensor]):
    """A CAM method: the map of each of the model's networks (one, or an ensemble's members), averaged."""

    def method(model, images: np.ndarray, class_index=None) -> np.ndarray:
        total = None
        views = _views(model)
        for view in views:
            x = _on_network(view.prepare(images), view.module)
            with _evaluating(view.module):
                acti, grad = _activations_and_gradients(view.module, view.layer, x, class_index)
            weights = weights_of(acti, grad)
            cam = torch.relu((weights.view(*weights.shape, *[1] * (acti.dim() - 2)) * acti).sum(dim=1, keepdim=True))
            mode = {2: "bilinear", 3: "trilinear"}[x.dim() - 2]
            cam = nn.functional.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)[:, 0].float()
            total = cam if total is None else total + cam
        return unit_scale(total / len(views))

    return method


# --------------------------------------------------------------------------------------------------
# Occlusion sensitivity
# --------------------------------------------------------------------------------------------------
class _ProbaModule(nn.Module):
    """A black-box classifier (``predict_proba`` on an ArrayDataset) as a module of standardised images.

    ``context`` holds the explained samples' other inputs (their tabular features and ``meta``), kept fixed
    while their images are occluded; ``row`` says whose: None for a batch of all samples in order, ``i`` for
    a batch of occluded copies of sample ``i``.
    """

    def __init__(self, model, mean: float, std: float, context=None):
        super().__init__()
        self.model, self.mean, self.std, self.context = model, mean, std, context
        self.row: int | None = None

    def forward(self, z: Tensor) -> Tensor:
        from medlens.data.dataset import ArrayDataset

        images = (z.detach().cpu().numpy() * self.std + self.mean).astype(np.float32)
        features, meta = None, {}
        if self.context is not None:
            meta = self.context.meta
            if self.context.features is not None:
                rows = np.arange(len(images)) if self.row is None else np.full(len(images), self.row)
                features = self.context.features[rows]
        data = ArrayDataset(images=images, labels=np.zeros(len(images), dtype=np.int64), features=features, meta=meta)
        return torch.as_tensor(np.asarray(self.model.predict_proba(data)), dtype=torch.float32)


def _forward_of(model, images: np.ndarray, context=None) -> tuple[nn.Module, Tensor, Callable[[Tensor], Tensor]]:
    """(module, standardised input, activation to probabilities) for occlusion: the network itself for a model
    of one image network (occluded regions pulled to its training mean), else the model's ``predict_proba``
    as a black box (occluded regions pulled to the mean of the explained images)."""
    if set(GRADCAM_METHODS) & set(model.capabilities.explain):
        views = model.explain_networks()
        if len(views) == 1:
            network = views[0].module
            return network, _on_network(views[0].prepare(images), network), lambda out: out.float().softmax(1)
    images = np.asarray(images, dtype=np.float32)
    mean, std = float(images.mean()), float(images.std()) or 1.0
    module = _ProbaModule(model, mean, std, context).eval()
    return module, torch.from_numpy((images - mean) / std), lambda out: out


def _occlusion(model, images: np.ndarray, class_index=None, mask_size: int | Sequence[int] | None = None,
               overlap: float = 0.5, n_batch: int = 64, context=None) -> np.ndarray:
    from monai.visualize import OcclusionSensitivity

    module, x, activate = _forward_of(model, images, context)
    if mask_size is None:  # a quarter of the smallest side, at least 3 voxels
        mask_size = max(3, round(min(x.shape[2:]) / 4))
    # MONAI's own activate=True applies a sigmoid when the *input* has one channel: pass softmax explicitly.
    occlusion = OcclusionSensitivity(module, mask_size=mask_size, n_batch=n_batch, verbose=False, mode="gaussian",
                                     overlap=overlap, activate=activate)
    maps = []
    with torch.no_grad(), warnings.catch_warnings(), _evaluating(module):
        warnings.simplefilter("ignore", UserWarning)  # MONAI's list indexing, deprecated in torch 2.9
        proba = activate(module(x))
        classes = _classes(class_index, proba)
        for i in range(len(x)):
            if isinstance(module, _ProbaModule):
                module.row = i
            occluded, _ = occlusion(x[i:i + 1])
            c = int(classes[i])
            maps.append(torch.relu(proba[i, c] - torch.as_tensor(occluded)[0, c].float()).cpu())
    return unit_scale(torch.stack(maps))


_METHODS: dict[str, Callable[..., np.ndarray]] = {
    "gradcam": _cam(_gradcam_weights),
    "gradcam++": _cam(_gradcampp_weights),
    "occlusion": _occlusion,
}
_OPTIONS: dict[str, tuple[str, ...]] = {"occlusion": ("mask_size", "overlap", "n_batch", "context")}


def explain(model, images: np.ndarray, method: str = "gradcam", class_index: int | Sequence[int] | None = None,
            **options) -> np.ndarray:
    """Explanation maps of ``images`` ``(N, C, ...)`` (prepared like the model's training data).

    Parameters
    ----------
    model
        A fitted model (or pipeline) whose capabilities list ``method``
        (:class:`medlens.models.base.Capabilities`): Grad-CAM and Grad-CAM++ for models of image networks
        (an ensemble's map is the mean of its members'), occlusion for any model of images (a black box
        through ``predict_proba`` unless the model is one network).
    images : ndarray
        Model-ready images, before the model's own standardisation.
    method : {"gradcam", "gradcam++", "occlusion"}
    class_index : int or sequence of int, optional
        Class whose score is explained, one for all images or one per image; default the predicted
        class of each image.
    **options
        ``"occlusion"``: ``mask_size`` (default a quarter of the smallest side), ``overlap`` (0.5),
        ``n_batch`` (64 occluded copies per forward pass), ``context`` (an ArrayDataset of the same samples
        whose tabular features and ``meta`` are kept fixed while the images are occluded, for models that
        also read features measured with the sample).

    Returns
    -------
    ndarray
        ``(N, *spatial)`` float32 maps in [0, 1], high = important for the explained class.
    """
    if method not in _METHODS:
        raise ModelError(f"explain: unknown method {method!r}; use one of {', '.join(METHODS)}")
    supported = model.capabilities.explain
    if method not in supported:
        raise ModelError(f"explain: model {model.name!r} cannot be explained by {method}; "
                         + (f"it supports {', '.join(supported)}" if supported else
                            "its inputs are not images (or not only), so no map over the image explains it"))
    unknown = set(options) - set(_OPTIONS.get(method, ()))
    if unknown:
        raise ModelError(f"explain: method {method!r} takes no option {', '.join(sorted(unknown))} "
                         f"(options: {', '.join(_OPTIONS.get(method, ())) or 'none'})")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (4, 5):
        raise ModelError(f"explain: images must be (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
    return _METHODS[method](model, images, class_index=class_index, **options).astype(np.float32)


def grad_cam(model, images: np.ndarray, class_index: int | Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM maps of a fitted ``cnn`` model: ``explain(model, images, "gradcam", class_index)``."""
    return explain(model, images, "gradcam", class_index)


def with_random_weights(model, seed: int = 0):
    """A copy of a fitted model of image networks whose networks have freshly initialised weights (every
    module's ``reset_parameters``, BatchNorm statistics included): the reference of the model-parameter
    randomisation test (Adebayo et al., *Sanity checks for saliency maps*, NeurIPS 2018)."""
    _views(model)
    clone = copy.deepcopy(model)  # one copy: the networks and whatever predicts with them stay one object
    torch.manual_seed(seed)
    for view in clone.explain_networks():
        for module in view.module.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


# --------------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _colour_table(cmap: str) -> np.ndarray:
    """(256, 3) float32 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def blend(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """``(H, W, 3)`` uint8: ``(1 − alpha)·gray + alpha·cmap(heat)``, what matplotlib draws for a gray image
    (scaled to its own [min, max]) under a ``cmap`` image of ``heat`` in [0, 1] with that alpha."""
    gray = np.asarray(gray, dtype=np.float32)
    low, high = float(gray.min()), float(gray.max())
    gray = (gray - low) / (high - low) if high > low else np.zeros_like(gray)
    index = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb = (1.0 - alpha) * gray[..., None] + alpha * _colour_table(cmap)[index]
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def volume_slices(image: np.ndarray, heat: np.ndarray
                  ) -> tuple[tuple[int, int, int], list[tuple[np.ndarray, np.ndarray]]]:
    """The voxel ``(z, y, x)`` of the map's maximum (the centre when the map is constant) and the three
    orthogonal (image, heat) slices through it: axial ``[z]``, coronal ``[:, y]``, sagittal ``[:, :, x]``."""
    if heat.max() > heat.min():
        centre = tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))
    else:
        centre = tuple(s // 2 for s in heat.shape)
    z, y, x = centre
    return centre, [(image[z], heat[z]), (image[:, y], heat[:, y]), (image[:, :, x], heat[:, :, x])]


def write_overlay(image: np.ndarray, heat: np.ndarray, path: str | Path, title: str = "", alpha: float = 0.4,
                  size: int = 224) -> Path:
    """PNG of an image (first channel) with its explanation ``heat`` map (in [0, 1]) blended on top.

    A 2D image ``(C, H, W)`` with ``heat`` ``(H, W)`` gives one panel; a volume ``(C, D, H, W)`` with
    ``heat`` ``(D, H, W)`` gives its axial, coronal and sagittal slices through the map's maximum side by
    side (:func:`volume_slices`). Colours: :func:`blend` (jet, alpha 0.4, gray scaled to the whole image's
    range); panels are enlarged by an integer factor (nearest neighbour) to about ``size`` pixels, and
    ``title`` is written above them. Built with numpy and Pillow, no figure: a few milliseconds.
    """
    from PIL import Image, ImageDraw

    image = np.asarray(image, dtype=np.float32)[0]
    heat = np.asarray(heat, dtype=np.float32)
    if image.shape != heat.shape or image.ndim not in (2, 3):
        raise ModelError(f"write_overlay: image {image.shape} (first channel) and map {heat.shape} must be the "
                         "same 2D or 3D shape")
    low, high = float(image.min()), float(image.max())
    if image.ndim == 2:
        panels, caption = [(image, heat)], title
    else:
        (z, y, x), panels = volume_slices(image, heat)
        caption = f"{title}  axial z={z} | coronal y={y} | sagittal x={x}".strip()
    zoom = max(1, math.ceil(size / max(max(p.shape) for p, _ in panels)))
    gap = 4
    rgb = []
    for gray, h in panels:
        # Scale all panels by the whole image's range so that intensities compare across them.
        gray = np.concatenate([gray.ravel(), [low, high]])
        tile = blend(gray, np.concatenate([h.ravel(), [0.0, 0.0]]), alpha)[:-2].reshape(*h.shape, 3)
        rgb.append(np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1))
    strip = 14 if caption else 0
    height = strip + max(t.shape[0] for t in rgb)
    width = sum(t.shape[1] for t in rgb) + gap * (len(rgb) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left = 0
    for tile in rgb:
        canvas[strip:strip + tile.shape[0], left:left + tile.shape[1]] = tile
        left += tile.shape[1] + gap
    picture = Image.fromarray(canvas)
    if caption:
        ImageDraw.Draw(picture).text((2, 1), caption, fill=(0, 0, 0), font=_font())
    return write_atomically(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))
