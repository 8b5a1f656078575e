"""Feature extractors behind one interface: Gabor statistics, CNN feature maps, autoencoder latent codes.

Every extractor follows :class:`Extractor`: ``fit(images, labels=None) -> self`` learns what it needs
(nothing for Gabor; network weights for the others), ``transform(images) -> (N, F)`` float32, and
``feature_names`` names the F columns. Images are ``(N, 1, H, W)`` float32 in [0, 1].

``gabor``     mean, standard deviation and energy of Gabor magnitude responses per filter
              (:class:`medlens.preprocess.gabor.GaborBank`).
``cnn``       a compact CNN (:func:`medlens.models.cnn.compact_cnn`, via the model registry) trained on the
              labels given to ``fit``; features are the global average of each block's ReLU maps.
``transfer``  the same CNN trained on a *source* dataset (e.g. PneumoniaMNIST) and frozen: ``fit`` on the
              target uses no target labels.
``ae``        a denoising autoencoder (:class:`medlens.enhance.autoencoder.Denoiser`) trained without
              labels on ``fit``'s images (or on ``pretrain`` images: self-supervised transfer); features
              are the global average and max of its bottleneck maps.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from medlens.data.dataset import ArrayDataset
from medlens.enhance.autoencoder import Denoiser
from medlens.errors import ConfigError, GeometryError, ModelError
from medlens.models.registry import build
from medlens.preprocess.gabor import GaborBank


@runtime_checkable
class Extractor(Protocol):
    """What every feature extractor offers."""

    name: str

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None) -> "Extractor": ...

    def transform(self, images: np.ndarray) -> np.ndarray: ...

    @property
    def feature_names(self) -> list[str]: ...


def _images(images: np.ndarray, where: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise GeometryError(f"{where}: expected grayscale images (N, 1, H, W) or (N, H, W), got {images.shape}")
    return images


class GaborExtractor:
    """Gabor texture statistics; ``fit`` learns nothing."""

    name = "gabor"

    def __init__(self, wavelengths: tuple[float, ...] = (2.0, 4.0, 8.0), orientations: int = 4):
        self.bank = GaborBank(wavelengths=wavelengths, orientations=orientations)

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None) -> "GaborExtractor":
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return self.bank.features(_images(images, "features.gabor")[:, 0]).astype(np.float32)

    @property
    def feature_names(self) -> list[str]:
        return list(self.bank.feature_names)


class CNNExtractor:
    """Pooled intermediate maps of a compact CNN trained with labels (``cnn``), or on a source set (``transfer``).

    Parameters
    ----------
    pretrain : ArrayDataset, optional
        Source images and labels. When given, the network is trained on them once and ``fit`` on the
        target ignores its labels (frozen transfer); otherwise ``fit`` needs labels.
    width, depth, epochs, batch_size, lr, seed :
        Of the registry's ``cnn`` model (``arch="compact"``).
    """

    def __init__(self, pretrain: ArrayDataset | None = None, width: int = 16, depth: int = 3, epochs: int = 15,
                 batch_size: int = 64, lr: float = 3e-3, seed: int = 0):
        self.pretrain = pretrain
        self.name = "transfer" if pretrain is not None else "cnn"
        self.params = dict(arch="compact", width=width, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr,
                           seed=seed)
        self.model_ = None

    def _train(self, images: np.ndarray, labels: np.ndarray) -> None:
        model = build("cnn", **self.params)
        model.fit(ArrayDataset(images=images, labels=labels))
        self.model_ = model

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None) -> "CNNExtractor":
        if self.pretrain is not None:
            if self.model_ is None:
                self._train(_images(self.pretrain.images, "features.transfer(pretrain)"), self.pretrain.labels)
            return self
        if labels is None:
            raise ConfigError("features.cnn: fit needs labels (or give pretrain= for transfer features)")
        self._train(_images(images, "features.cnn"), np.asarray(labels))
        return self

    @torch.no_grad()
    def transform(self, images: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise ModelError(f"features.{self.name}: transform called before fit")
        x = torch.from_numpy((_images(images, f"features.{self.name}") - self.model_.mean_) / self.model_.std_)
        network = self.model_.network_.cpu().eval()
        out = []
        for i in range(0, len(x), 512):
            h, pooled = x[i:i + 512], []
            for layer in network:
                if isinstance(layer, nn.AdaptiveAvgPool2d):
                    break
                h = layer(h)
                if isinstance(layer, nn.ReLU):
                    pooled.append(h.mean((2, 3)))
            out.append(torch.cat(pooled, 1).numpy())
        return np.concatenate(out).astype(np.float32)

    @property
    def feature_names(self) -> list[str]:
        width, depth = self.params["width"], self.params["depth"]
        return [f"{self.name}_b{b}_c{c}" for b in range(depth) for c in range(width * 2**b)]


class AutoencoderExtractor:
    """Latent codes of a denoising autoencoder trained without labels.

    Parameters
    ----------
    pretrain : np.ndarray, optional
        Images ``(N, 1, H, W)`` to train on instead of ``fit``'s (self-supervised transfer).
    sigma : float
        Gaussian noise σ (in [0, 1] units) of the denoising task.
    channels, strides, epochs, batch_size, seed : of :class:`~medlens.enhance.autoencoder.Denoiser`.
    """

    def __init__(self, pretrain: np.ndarray | None = None, sigma: float = 0.1,
                 channels: tuple[int, ...] = (16, 32, 64), strides: tuple[int, ...] = (1, 2, 2), epochs: int = 10,
                 batch_size: int = 64, seed: int = 0):
        self.pretrain = pretrain
        self.name = "ae_transfer" if pretrain is not None else "ae"
        self.model = Denoiser(window=(0.0, 1.0), noise="gaussian", noise_params={"sigma": sigma}, channels=channels,
                              strides=strides, residual=False, epochs=epochs, batch_size=batch_size, seed=seed,
                              patience=None)

    def fit(self, images: np.ndarray, labels: np.ndarray | None = None) -> "AutoencoderExtractor":
        if not self.model.fitted:
            source = self.pretrain if self.pretrain is not None else images
            self.model.fit(_images(source, f"features.{self.name}"))
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        return self.model.encode(_images(images, f"features.{self.name}")).astype(np.float32)

    @property
    def feature_names(self) -> list[str]:
        c = self.model.channels[-1]
        return [f"{self.name}_{stat}_c{i}" for stat in ("mean", "max") for i in range(c)]


class TransferExtractor(CNNExtractor):
    """:class:`CNNExtractor` pretrained on another labelled dataset (``pretrain``, required)."""

    def __init__(self, pretrain: ArrayDataset | None = None, **params):
        if pretrain is None:
            raise ConfigError("features.transfer: needs a source dataset (pretrain=...)")
        super().__init__(pretrain=pretrain, **params)


#: Extraction method → (extractor class, whether it trains (takes ``epochs`` and ``seed``), what ``pretrain``
#: it takes: ``"dataset"`` (labelled), ``"images"`` or None).
EXTRACTORS: dict[str, tuple[type, bool, str | None]] = {
    "gabor": (GaborExtractor, False, None),
    "cnn": (CNNExtractor, True, None),
    "transfer": (TransferExtractor, True, "dataset"),
    "ae": (AutoencoderExtractor, True, "images"),
}


def make_extractor(method: str, **params) -> Extractor:
    """The extractor of ``method`` (a key of :data:`EXTRACTORS`) with ``params``."""
    if method not in EXTRACTORS:
        raise ConfigError(f"features: unknown method {method!r}; use {', '.join(EXTRACTORS)}")
    return EXTRACTORS[method][0](**params)
