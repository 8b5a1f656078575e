"""Convolutional denoising autoencoders, 2D and 3D, trained on (noisy, clean) pairs made on the fly.

The network is MONAI's :class:`~monai.networks.nets.AutoEncoder` (strided-convolution encoder, transposed-
convolution decoder, residual units) on intensities scaled to [0, 1] by a fixed window ``(low, high)``
stored with the model. With ``residual=True`` (default) it predicts the noise and the output is
``X̂ = Y − s · f(Y)`` (residual learning, Zhang et al. [1]_); otherwise ``X̂ = f(Y)``. The residual scale
``s`` is by default the RMS noise amplitude ``sqrt(mean((Y − X)²))`` of the training pairs in window units,
so ``f`` predicts noise of unit size: on CT, where photon noise is ~1 % of a 4095-HU window, an unscaled
``f`` is badly conditioned and learns little (measured on LIDC, benchmarks/results/enhance.md). Training
minimises

    L = ‖X − X̂‖² / n                      (``loss="mse"``)
    L = ‖X − X̂‖² / n + w · (1 − SSIM(X, X̂))  (``loss="mse+ssim"``, MONAI's ``SSIMLoss``, weight ``w``)

with X the clean image and Y = noise(X) drawn afresh for every sample of every epoch from a seeded
generator (:mod:`medlens.enhance.noise`), optionally on random patches. The trained model is saved as a
``denoiser`` bundle (:mod:`medlens.deploy.bundle`): ``weights.safetensors`` plus a manifest (architecture,
modality, channels, intensity window, noise model, training history) under an integrity record, never as a
pickle; :meth:`Denoiser.load` reads it through the bundle checks.

References
----------
.. [1] Zhang K., Zuo W., Chen Y., Meng D., Zhang L., "Beyond a Gaussian denoiser: residual learning of deep
       CNN for image denoising", IEEE Trans. Image Process. 26(7):3142–3155 (2017).
.. [2] Vincent P. et al., "Stacked denoising autoencoders", JMLR 11:3371–3408 (2010).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import SSIMLoss
from monai.networks.nets import AutoEncoder
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from medlens.deploy.bundle import BundleReader, load_bundle, register_kind, write_arrays, write_bundle
from medlens.engine.trainer import History, TrainConfig, Trainer
from medlens.enhance.noise import NoiseModel, make_noise
from medlens.errors import ConfigError, GeometryError, ModelError, UnreadableFileError

WEIGHTS = "weights.safetensors"
LOSSES = ("mse", "mse+ssim")


class DenoisingNet(nn.Module):
    """MONAI AutoEncoder with an optional global residual: ``X̂ = Y − s · f(Y)``."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: tuple[int, ...], strides: tuple[int, ...],
                 num_res_units: int, residual: bool, residual_scale: float = 1.0):
        super().__init__()
        self.residual_scale = float(residual_scale)
        self.net = AutoEncoder(spatial_dims, in_channels, in_channels, channels=channels, strides=strides,
                               num_res_units=num_res_units, norm="BATCH")
        self.residual = residual
        if residual:  # start as the identity X̂ = Y: training can then only move away from the noisy input
            last = [m for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d,
                                                                    nn.ConvTranspose3d))][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return x - self.residual_scale * out if self.residual else out

    def latent(self, x: Tensor) -> Tensor:
        """The bottleneck feature maps ``intermediate(encode(x))``."""
        return self.net.intermediate(self.net.encode(x))


class NoisyPairs(Dataset):
    """``(noisy, clean)`` pairs scaled to the model window, with fresh seeded noise on every access.

    Item ``i`` uses image ``i % N``; with ``patch`` a random patch of that size is cut first, so
    ``length`` can exceed ``N`` (many patches per image and epoch).
    """

    def __init__(self, clean: np.ndarray, noise: NoiseModel, window: tuple[float, float], patch: int | None,
                 length: int | None, seed: int):
        self.clean = clean
        self.noise = noise
        self.window = window
        self.patch = patch
        self.length = length or len(clean)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.clean[index % len(self.clean)]
        if self.patch is not None:
            sides = [min(self.patch, s) for s in image.shape[1:]]
            corner = [int(self.rng.integers(0, s - p + 1)) for s, p in zip(image.shape[1:], sides)]
            image = image[(slice(None),) + tuple(slice(c, c + p) for c, p in zip(corner, sides))]
        noisy = self.noise(image, self.rng)
        return torch.from_numpy(scale(noisy, self.window)), torch.from_numpy(scale(image, self.window))


def scale(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``(x − low) / (high − low)`` as float32 (not clipped)."""
    low, high = window
    return ((np.asarray(x, dtype=np.float32) - low) / (high - low)).astype(np.float32)


def unscale(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`scale`."""
    low, high = window
    return (np.asarray(x, dtype=np.float32) * (high - low) + low).astype(np.float32)


class Denoiser:
    """A convolutional denoising autoencoder with its noise model, intensity window and modality.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images ``(C, H, W)``, 3 for volumes ``(C, D, H, W)``.
    in_channels : int
        Image channels; inputs with another count are refused.
    modality : str
        DICOM modality code of the training images (``CT``, ``DX``, ``US``, ``OT``...); inputs whose
        modality is known and differs are refused.
    window : (low, high)
        Intensities (in the images' own units: HU for CT, 0–255 for 8-bit pictures) mapped to 0 and 1.
    noise : str
        Noise model name (:func:`medlens.enhance.noise.make_noise`); ``noise_params`` its parameters.
    channels, strides, num_res_units : architecture of MONAI's ``AutoEncoder``.
    residual : bool
        Predict the noise and subtract it (``X̂ = Y − s · f(Y)``).
    residual_scale : float or "auto"
        ``s``; ``"auto"`` (default) sets it at :meth:`fit` to the RMS of ``Y − X`` over training pairs.
    loss : {"mse", "mse+ssim"}
        Training loss; ``ssim_weight`` is ``w`` of the module docstring.
    patch : int, optional
        Train on random patches of this side instead of whole images; ``samples_per_epoch`` patches
        per epoch (default: one per image).
    epochs, batch_size, lr, weight_decay, patience, max_steps, amp, progress :
        Passed to :class:`~medlens.engine.trainer.TrainConfig` (Adam, cosine schedule).
    seed : int
        Seeds the weights, the batch order and every noise draw.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, modality: str = "OT",
                 window: tuple[float, float] = (0.0, 255.0), noise: str = "gaussian",
                 noise_params: dict[str, Any] | None = None, channels: tuple[int, ...] = (32, 64, 64),
                 strides: tuple[int, ...] = (1, 2, 2), num_res_units: int = 0, residual: bool = True,
                 residual_scale: float | str = "auto", loss: str = "mse", ssim_weight: float = 0.1,
                 patch: int | None = None, samples_per_epoch: int | None = None, epochs: int = 20,
                 batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 0.0, patience: int | None = 5, max_steps: int | None = None,
                 amp: str = "off", progress: bool = False, seed: int = 0):
        if spatial_dims not in (2, 3):
            raise ConfigError(f"denoise.spatial_dims: must be 2 or 3, got {spatial_dims}")
        if loss not in LOSSES:
            raise ConfigError(f"denoise.loss: unknown {loss!r}; use one of {', '.join(LOSSES)}")
        if len(channels) != len(strides):
            raise ConfigError(f"denoise: {len(channels)} channels but {len(strides)} strides")
        if not window[1] > window[0]:
            raise ConfigError(f"denoise.window: high must exceed low, got {tuple(window)}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.modality = str(modality).upper()
        self.window = (float(window[0]), float(window[1]))
        self.noise_name = noise
        self.noise_params = dict(noise_params or {})
        self.noise = make_noise(noise, **self.noise_params)
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(int(s) for s in strides)
        self.num_res_units = int(num_res_units)
        self.residual = bool(residual)
        if residual_scale != "auto" and not (isinstance(residual_scale, (int, float)) and residual_scale > 0):
            raise ConfigError(f"denoise.residual_scale: a positive number or 'auto', got {residual_scale!r}")
        self.residual_scale = residual_scale
        self.loss_name = loss
        self.ssim_weight = float(ssim_weight)
        self.patch = patch
        self.samples_per_epoch = samples_per_epoch
        self.train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                        optimizer="adam", scheduler="cosine", patience=patience,
                                        max_steps=max_steps, amp=amp, seed=seed, progress=progress)
        self.seed = seed
        self.network = self._build()
        self.history: History | None = None
        self.fitted = False

    # -- construction -------------------------------------------------------------------------------
    def _build(self) -> DenoisingNet:
        torch.manual_seed(self.seed)
        initial = 1.0 if self.residual_scale == "auto" else self.residual_scale
        return DenoisingNet(self.spatial_dims, self.in_channels, self.channels, self.strides, self.num_res_units,
                            self.residual, initial)

    def _estimate_residual_scale(self, clean: np.ndarray, samples: int = 64) -> float:
        """RMS of ``Y − X`` (window units) over ``samples`` training pairs drawn with their own seed."""
        probe = NoisyPairs(clean, self.noise, self.window, self.patch, samples, self.seed + 2)
        squares = [float(((noisy - clean) ** 2).mean()) for noisy, clean in (probe[i] for i in range(samples))]
        rms = float(np.sqrt(np.mean(squares)))
        if not rms > 0:
            raise ConfigError("denoise.residual_scale: the noise model left the training images unchanged; "
                              "set residual_scale explicitly or check noise_params")
        return rms

    @property
    def multiple(self) -> int:
        """Spatial sizes the network takes are multiples of this (the product of the strides)."""
        return int(np.prod(self.strides))

    def _loss(self):
        mse = nn.MSELoss()
        if self.loss_name == "mse":
            return mse
        ssim = SSIMLoss(spatial_dims=self.spatial_dims, data_range=1.0, win_size=7)
        weight = self.ssim_weight
        return lambda out, target: mse(out, target) + weight * ssim(out, target)

    # -- training -----------------------------------------------------------------------------------
    def _check(self, images: np.ndarray, where: str, batch: bool = True) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        expected = self.spatial_dims + (2 if batch else 1)
        if images.ndim != expected:
            shape = "(N, C, " if batch else "("
            axes = "H, W)" if self.spatial_dims == 2 else "D, H, W)"
            raise GeometryError(f"{where}: expected {shape}{axes} for a {self.spatial_dims}D model, "
                                f"got shape {images.shape}")
        channels = images.shape[1 if batch else 0]
        if channels != self.in_channels:
            raise ModelError(f"{where}: the model takes {self.in_channels} channel(s), the image has {channels}")
        return images

    def fit(self, clean: np.ndarray, val: np.ndarray | None = None) -> History:
        """Train on clean images ``(N, C, ...)`` (original units); ``val`` clean images select the epoch.

        Validation pairs are made once with noise seeded by ``seed + 1`` so every epoch is scored on
        the same noisy images.
        """
        clean = self._check(clean, "denoise.fit")
        if self.patch is None and any(s % self.multiple for s in clean.shape[2:]):
            raise GeometryError(f"denoise.fit: image sides {clean.shape[2:]} must be multiples of {self.multiple} "
                                "(or train on patches)")
        if self.patch is not None and self.patch % self.multiple:
            raise ConfigError(f"denoise.patch: {self.patch} must be a multiple of {self.multiple}")
        train = NoisyPairs(clean, self.noise, self.window, self.patch, self.samples_per_epoch, self.seed)
        if self.residual and self.residual_scale == "auto":
            self.residual_scale = self._estimate_residual_scale(clean)
            self.network.residual_scale = self.residual_scale
        val_data = None
        if val is not None:
            val = self._check(val, "denoise.fit(val)")
            rng = np.random.default_rng(self.seed + 1)
            noisy = np.stack([self.noise(v, rng) for v in val])
            val_data = TensorDataset(torch.from_numpy(self._padded(scale(noisy, self.window))),
                                     torch.from_numpy(self._padded(scale(val, self.window))))
        trainer = Trainer(self.network, self._loss(), self.train_config)
        self.history = trainer.fit(train, val_data)
        self.network.cpu()
        self.fitted = True
        return self.history

    # -- inference ----------------------------------------------------------------------------------
    def _padded(self, x: np.ndarray) -> np.ndarray:
        """Reflect-pad the spatial axes of ``(N, C, ...)`` up to multiples of :attr:`multiple`."""
        pad = [(0, 0), (0, 0)] + [(0, (-s) % self.multiple) for s in x.shape[2:]]
        return np.pad(x, pad, mode="reflect" if all(s > 1 for s in x.shape[2:]) else "edge")

    @torch.no_grad()
    def denoise(self, images: np.ndarray, batch_size: int = 16, where: str = "denoise") -> np.ndarray:
        """Denoised ``(N, C, ...)`` images, in the input's units (any spatial size)."""
        if not self.fitted:
            raise ModelError(f"{where}: the denoiser has not been trained or loaded")
        images = self._check(images, where)
        size = images.shape[2:]
        x = self._padded(scale(images, self.window))
        self.network.eval()
        out = np.concatenate([self.network(torch.from_numpy(x[i:i + batch_size])).numpy()
                              for i in range(0, len(x), batch_size)])
        return unscale(out[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)], self.window)

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Latent codes: the bottleneck maps of each image, global-average- and max-pooled, ``(N, 2·c_last)``."""
        images = self._check(images, "denoise.encode")
        x = self._padded(scale(images, self.window))
        self.network.eval()
        codes = []
        for i in range(0, len(x), batch_size):
            z = self.network.latent(torch.from_numpy(x[i:i + batch_size])).flatten(2)
            codes.append(torch.cat([z.mean(2), z.amax(2)], 1).numpy())
        return np.concatenate(codes)

    # -- persistence --------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """Everything but the weights, as plain JSON values (the bundle adds format, kind and version)."""
        cfg = asdict(self.train_config)
        history = None if self.history is None else asdict(self.history)
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "modality": self.modality,
            "window": list(self.window),
            "noise": {"name": self.noise_name, **self.noise.params()},
            "architecture": {"channels": list(self.channels), "strides": list(self.strides),
                             "num_res_units": self.num_res_units, "residual": self.residual,
                             "residual_scale": self.residual_scale},
            "loss": {"name": self.loss_name, "ssim_weight": self.ssim_weight},
            "patch": self.patch,
            "samples_per_epoch": self.samples_per_epoch,
            "train": {k: cfg[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "patience", "max_steps",
                                          "amp", "seed")},
            "history": history,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the model as a ``denoiser`` bundle at ``folder`` (replacing one there as a whole)."""
        if not self.fitted:
            raise ModelError(f"{folder}: cannot save a denoiser that has not been trained")
        arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in self.network.state_dict().items()}
        return write_bundle(folder, "denoiser", self.manifest(), {WEIGHTS: write_arrays(arrays)})

    @classmethod
    def load(cls, folder: str | Path) -> "Denoiser":
        """A trained denoiser from a bundle written by :meth:`save` (checked by :func:`medlens.deploy.bundle.open_bundle`)."""
        return load_bundle(folder, kind="denoiser")

    def check_input(self, modality: str | None, channels: int, where: str) -> None:
        """Refuse an input of another modality (when known) or channel count, naming ``where``."""
        if modality and modality.upper() not in ("", "OT") and self.modality != "OT" and \
                modality.upper() != self.modality:
            raise ModelError(f"{where}: the model was trained on {self.modality} images, this input is "
                             f"{modality.upper()}; train a model for this modality")
        if channels != self.in_channels:
            raise ModelError(f"{where}: the model takes {self.in_channels} channel(s), this input has {channels}")


@register_kind("denoiser")
def read_denoiser(reader: BundleReader) -> Denoiser:
    """Rebuild a trained :class:`Denoiser` from a checked ``denoiser`` bundle."""
    m = reader.manifest
    noise = dict(m["noise"])
    train_keys = {f.name for f in fields(TrainConfig)}
    model = Denoiser(spatial_dims=m["spatial_dims"], in_channels=m["in_channels"], modality=m["modality"],
                     window=tuple(m["window"]), noise=noise.pop("name"), noise_params=noise,
                     loss=m["loss"]["name"], ssim_weight=m["loss"]["ssim_weight"], patch=m["patch"],
                     samples_per_epoch=m["samples_per_epoch"], progress=False,
                     **{k: tuple(v) if isinstance(v, list) else v for k, v in m["architecture"].items()},
                     **{k: v for k, v in m["train"].items() if k in train_keys})
    try:
        model.network.load_state_dict({k: torch.from_numpy(v) for k, v in reader.arrays(WEIGHTS).items()})
    except RuntimeError as exc:
        raise UnreadableFileError(reader.path(WEIGHTS), f"weights do not fit the manifest's network ({exc})") from exc
    if m.get("history"):
        model.history = History(**m["history"])
    model.fitted = True
    return model
