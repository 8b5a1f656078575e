"""``cnn``: 2D and 3D convolutional networks for image and volume classification.

The spatial dimensionality comes from the data: images ``(N, C, H, W)`` get 2D convolutions,
volumes ``(N, C, D, H, W)`` 3D ones. Two architectures:

- ``"compact"``: ``depth`` blocks of conv3×3-BatchNorm-ReLU-maxpool2 with widths ``width·2^i``,
  global average pooling, dropout and a linear classifier;
- ``"resnet"``: the CIFAR ResNet layout of He et al. (*Deep residual learning*, CVPR 2016, §4.2):
  a 3×3 stem, three stages of basic residual blocks (MONAI's ``ResNetBlock``) with widths ``width``,
  ``2·width``, ``4·width`` and strides 1, 2, 2, global average pooling, dropout, linear classifier.

Training uses :class:`~medlens.engine.trainer.Trainer`: class-weighted cross-entropy (or focal loss,
:mod:`medlens.models.losses`; optionally class-balanced sampling), AdamW, augmentation (``"flips"``: random
flips along every axis and, for volumes, 90° in-plane rotations; ``"shift"``: left-right mirroring and small
translations, for radiographs and ultrasound whose up-down orientation is fixed), and early stopping on an
inner validation split (stratified and group-aware, :func:`medlens.evaluate.splits.inner_validation_split`,
from the training set when no ``val`` is given) scored by AUC
for binary tasks and accuracy otherwise. With ``auxiliary_weight`` > 0 the network also learns to predict
the dataset's auxiliary targets (``ArrayDataset.aux``, e.g. the readers' semantic ratings of a nodule;
:class:`~medlens.models.losses.AuxiliaryTargetLoss`); their outputs are removed after training, so the
fitted network, its bundle and its ONNX graph take the image alone and give the class logits.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from monai.networks.nets.resnet import ResNetBlock
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from medlens.data.dataset import ArrayDataset
from medlens.engine.trainer import Trainer, TrainConfig
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.splits import inner_validation_split
from medlens.models.base import GRADCAM_METHODS, IMAGE, OCCLUSION, Capabilities, ModelState, NetworkView, \
    state_dict_of, tensor_arrays
from medlens.models.losses import LOSSES, AuxiliaryTargetLoss, classification_loss
from medlens.models.mlp import class_weights
from medlens.models.registry import register

_ARCHS = ("compact", "resnet")
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GAP = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def compact_cnn(spatial_dims: int, in_channels: int, n_classes: int, width: int = 16, depth: int = 3,
                dropout: float = 0.2) -> nn.Sequential:
    """conv-BN-ReLU-pool × ``depth`` → global average pool → dropout → linear."""
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(depth):
        out = width * 2**i
        layers += [_CONV[spatial_dims](channels, out, 3, padding=1, bias=False), _BN[spatial_dims](out),
                   nn.ReLU(inplace=True), _POOL[spatial_dims](2)]
        channels = out
    layers += [_GAP[spatial_dims](1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def cifar_resnet(spatial_dims: int, in_channels: int, n_classes: int, width: int = 16, blocks: int = 1,
                 dropout: float = 0.2) -> nn.Sequential:
    """3×3 stem → three stages of ``blocks`` basic blocks (widths w, 2w, 4w; strides 1, 2, 2) → GAP → linear.

    ``blocks=3`` is ResNet-20 of He et al. (2016); a stride or width change uses a 1×1 convolution
    + BatchNorm projection shortcut.
    """
    conv, bn = _CONV[spatial_dims], _BN[spatial_dims]
    layers: list[nn.Module] = [conv(in_channels, width, 3, padding=1, bias=False), bn(width), nn.ReLU(inplace=True)]
    channels = width
    for stage, stride in enumerate((1, 2, 2)):
        out = width * 2**stage
        for b in range(blocks):
            s = stride if b == 0 else 1
            shortcut = None
            if s != 1 or channels != out:
                shortcut = nn.Sequential(conv(channels, out, 1, stride=s, bias=False), bn(out))
            layers.append(ResNetBlock(channels, out, spatial_dims=spatial_dims, stride=s, downsample=shortcut))
            channels = out
    layers += [_GAP[spatial_dims](1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes)]
    for module in layers:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(*layers)


def shift_augment(x: Tensor, max_shift: int = 2) -> Tensor:
    """Mirror each sample left-right (last axis) with probability 1/2 and translate it by a random whole
    number of pixels in ``[−max_shift, max_shift]`` along every spatial axis, filling with edge values.

    The augmentation for images with a fixed up-down orientation (chest radiographs, ultrasound), where
    flipping every axis makes images that never occur. Uses torch's global generator, which
    :class:`Trainer` seeds.
    """
    n, spatial = x.shape[0], x.shape[2:]
    flip = (torch.rand(n, device=x.device) < 0.5).view(-1, *[1] * (x.dim() - 1))
    x = torch.where(flip, x.flip(-1), x)
    if max_shift <= 0:
        return x
    out = nn.functional.pad(x, [max_shift] * (2 * len(spatial)), mode="replicate")
    for axis, size in enumerate(spatial, start=2):
        offset = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device).view(-1, *[1] * (x.dim() - 1))
        steps = torch.arange(size, device=x.device).view(*[1] * axis, size, *[1] * (x.dim() - axis - 1))
        shape = list(out.shape)
        shape[axis] = size
        out = torch.gather(out, axis, (offset + steps).expand(shape))
    return out


def flip_augment(x: Tensor) -> Tensor:
    """Flip each sample along each spatial axis with probability 1/2; for volumes ``(N, C, D, H, W)``
    also rotate each sample in the (H, W) plane by a random multiple of 90° (any multiple when H = W,
    else 0° or 180°). Uses torch's global generator, which :class:`Trainer` seeds."""
    n = x.shape[0]
    for axis in range(2, x.dim()):
        flip = (torch.rand(n, device=x.device) < 0.5).view(-1, *[1] * (x.dim() - 1))
        x = torch.where(flip, x.flip(axis), x)
    if x.dim() == 5:
        turns = torch.randint(0, 4 if x.shape[-1] == x.shape[-2] else 1, (n,), device=x.device)
        if x.shape[-1] != x.shape[-2]:
            turns = turns * 2
        x = x.clone()
        for k in (1, 2, 3):
            chosen = turns == k
            if chosen.any():
                x[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return x


_AUGMENTS = ("flips", "shift")


def keep_class_outputs(network: nn.Sequential, n_classes: int) -> None:
    """Cut a trained network's final linear layer to its first ``n_classes`` outputs, in place (dropping
    the auxiliary-target outputs learnt beside the class logits)."""
    head = network[-1]
    if not isinstance(head, nn.Linear):
        raise ModelError(f"models.cnn: the network ends in {type(head).__name__}, not a linear layer")
    cut = nn.Linear(head.in_features, n_classes).to(head.weight.device)
    with torch.no_grad():
        cut.weight.copy_(head.weight[:n_classes])
        cut.bias.copy_(head.bias[:n_classes])
    network[-1] = cut


def last_conv_block(network: nn.Module) -> str:
    """Name (as in ``named_modules``) of the network's last convolutional block: the layer Grad-CAM explains.

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


class StandardisedNetwork(nn.Module):
    """``network((x − mean) / std)``: a fitted CNN from model-ready images to class logits, one module."""

    def __init__(self, network: nn.Module, mean: float, std: float):
        super().__init__()
        self.network, self.mean, self.std = network, float(mean), float(std)

    def forward(self, x: Tensor) -> Tensor:
        return self.network((x - self.mean) / self.std)


def validation_score(outputs: Tensor, targets: Tensor) -> float:
    """AUC for two classes (accuracy when the split holds one class only), else accuracy."""
    y = targets.numpy()
    if outputs.shape[1] == 2 and len(np.unique(y)) == 2:
        return float(roc_auc_score(y, torch.softmax(outputs, 1)[:, 1].numpy()))
    return float((outputs.argmax(1) == targets).float().mean())


@register("cnn")
class CNNClassifier:
    """A 2D/3D CNN trained by :class:`Trainer`.

    Parameters
    ----------
    arch : {"compact", "resnet"}
    width : int
        Channels of the first block; later stages double it.
    depth : int
        Conv blocks of the compact net.
    blocks : int
        Basic blocks per ResNet stage (3 gives ResNet-20).
    dropout : float
        Before the classifier.
    epochs, batch_size, lr, weight_decay, patience, max_steps :
        Passed to :class:`TrainConfig` (optimizer AdamW, cosine schedule).
    class_weight : {"balanced", None}
        Per-class loss weights, ``"balanced"``: w_c = N / (K n_c).
    loss : {"ce", "focal"}
        Cross-entropy, or focal loss −α_t (1 − p_t)^γ log p_t (Lin et al. 2017); both take the class weights.
    focal_gamma : float
        γ of the focal loss (0 gives cross-entropy).
    focal_alpha : float, list of float or None
        α of the focal loss: the positive-class weight of a binary task, or one weight per class.
    auxiliary_weight : float
        λ of the auxiliary-target loss; 0 (default) trains on the labels alone. Above 0 the dataset
        must carry ``aux`` targets; each is standardised with the training set's mean and s.d.
    sampler : {None, "balanced"}
        ``"balanced"``: each epoch draws N training samples with replacement, classes equally likely
        (:class:`~medlens.engine.trainer.TrainConfig`). Combine with ``class_weight: null``, or the
        imbalance is corrected twice.
    augment : {"flips", "shift"} or bool
        ``"flips"`` (or ``True``): random flips along every axis (and 90° rotations for volumes);
        ``"shift"``: left-right mirroring and translations of up to ``max_shift`` pixels
        (:func:`shift_augment`); ``False`` or ``None``: none.
    max_shift : int
        Largest translation of ``"shift"``, in pixels.
    val_fraction : float
        Inner validation share taken from ``train`` when ``fit`` gets no ``val``.
    ema : float or None
        Decay β of an exponential moving average of the weights (warmed up as in
        :func:`~medlens.engine.trainer.ema_decay`), validated and kept instead of the raw weights
        (:class:`TrainConfig`); None trains without one. Give it a run of a few dozen steps or more.
    amp, channels_last : see :class:`TrainConfig`.
    progress : bool
    seed : int
    """

    name = "cnn"

    def __init__(self, arch: str = "compact", width: int = 16, depth: int = 3, blocks: int = 1, dropout: float = 0.2,
                 epochs: int = 30, batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 1e-4,
                 patience: int | None = 8, max_steps: int | None = None, class_weight: str | None = "balanced",
                 loss: str = "ce", focal_gamma: float = 2.0, focal_alpha: float | list[float] | None = None,
                 sampler: str | None = None, ema: float | None = None, auxiliary_weight: float = 0.0,
                 augment: bool | str | None = True, max_shift: int = 2, val_fraction: float = 0.15, amp: str = "auto",
                 channels_last: str | bool = "auto", progress: bool = True, seed: int = 0):
        if arch not in _ARCHS:
            raise ConfigError(f"models.cnn.arch: unknown {arch!r}; use one of {', '.join(_ARCHS)}")
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"models.cnn.class_weight: unknown {class_weight!r}; use 'balanced' or None")
        if loss not in LOSSES:
            raise ConfigError(f"models.cnn.loss: unknown {loss!r}; use one of {', '.join(LOSSES)}")
        if focal_gamma < 0:
            raise ConfigError(f"models.cnn.focal_gamma: must be >= 0, got {focal_gamma}")
        if auxiliary_weight < 0:
            raise ConfigError(f"models.cnn.auxiliary_weight: must be >= 0, got {auxiliary_weight}")
        if augment not in (True, False, None, *_AUGMENTS):
            raise ConfigError(f"models.cnn.augment: unknown {augment!r}; use true, false, 'flips' or 'shift'")
        if int(max_shift) < 0:
            raise ConfigError(f"models.cnn.max_shift: must be >= 0, got {max_shift}")
        if not 0 < val_fraction <= 0.5:
            raise ConfigError(f"models.cnn.val_fraction: must lie in (0, 0.5], got {val_fraction}")
        self.arch = arch
        self.width = width
        self.depth = depth
        self.blocks = blocks
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.max_steps = max_steps
        self.class_weight = class_weight
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.sampler = sampler
        self.ema = ema
        self.auxiliary_weight = float(auxiliary_weight)
        self.augment = augment
        self.max_shift = int(max_shift)
        self.val_fraction = val_fraction
        self.amp = amp
        self.channels_last = channels_last
        self.progress = progress
        self.seed = seed
        self.trainer_: Trainer | None = None
        # Validate the training settings now rather than after the data is loaded.
        self._config()

    def _config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           optimizer="adamw", scheduler="cosine", patience=self.patience, max_steps=self.max_steps,
                           amp=self.amp, channels_last=self.channels_last, seed=self.seed, progress=self.progress,
                           sampler=self.sampler, ema=self.ema)

    def _tensors(self, data: ArrayDataset) -> Tensor:
        images = np.asarray(data.images, dtype=np.float32)
        if images.ndim not in (4, 5):
            raise ModelError(f"models.cnn: images must be (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
        if self.trainer_ is not None and images.ndim != self.spatial_dims_ + 2:
            raise ModelError(f"models.cnn: fitted on {self.spatial_dims_}D images, got shape {images.shape}")
        return self.standardise(torch.from_numpy(images))

    def standardise(self, x: Tensor) -> Tensor:
        """``(x − mean) / std`` with the training images' mean and standard deviation, the network's input
        scaling; plain tensor arithmetic, so it also runs inside an exported (ONNX) graph."""
        return (x - self.mean_) / self.std_

    def _augmentation(self):
        """The batch augmentation the trainer applies, or None."""
        if self.augment in (True, "flips"):
            return flip_augment
        if self.augment == "shift":
            return partial(shift_augment, max_shift=self.max_shift)
        return None

    def _dataset(self, data: ArrayDataset) -> TensorDataset:
        labels = torch.as_tensor(data.labels)
        if not self.auxiliary_weight:
            return TensorDataset(self._tensors(data), labels)
        aux = (np.asarray(data.aux, np.float64) - self.aux_mean_) / self.aux_std_
        return TensorDataset(self._tensors(data), torch.cat([labels[:, None].float(),
                                                             torch.as_tensor(aux, dtype=torch.float32)], 1))

    def _fit_auxiliary(self, train: ArrayDataset, val: ArrayDataset) -> int:
        """The number of auxiliary targets (0 when ``auxiliary_weight`` is 0), after fixing their scaling."""
        if not self.auxiliary_weight:
            return 0
        if train.aux is None or val.aux is None:
            raise ConfigError("models.cnn.auxiliary_weight: the dataset has no auxiliary targets (ArrayDataset.aux); "
                              "set it to 0 or use a dataset whose builder provides them (e.g. lidc_nodules)")
        aux = np.asarray(train.aux, np.float64)
        if np.isnan(aux).all(axis=0).any():
            raise ModelError("models.cnn.auxiliary_weight: an auxiliary target is missing for every training sample")
        self.aux_mean_ = np.nanmean(aux, axis=0)
        std = np.nanstd(aux, axis=0)
        self.aux_std_ = np.where(std > 0, std, 1.0)
        return aux.shape[1]

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "CNNClassifier":
        """Train on ``train`` with early stopping on ``val`` (or on an inner split of ``train``)."""
        if val is None:
            inner, held = inner_validation_split(train.labels, groups=train.groups, fraction=self.val_fraction,
                                                 seed=self.seed)
            train, val = train.subset(inner), train.subset(held)
        images = np.asarray(train.images, dtype=np.float32)
        if images.ndim not in (4, 5):
            raise ModelError(f"models.cnn: images must be (N, C, H, W) or (N, C, D, H, W), got shape {images.shape}")
        self.spatial_dims_ = images.ndim - 2
        self.n_classes_ = train.n_classes
        self.mean_, self.std_ = float(images.mean()), float(images.std()) or 1.0
        build = compact_cnn if self.arch == "compact" else cifar_resnet
        size = {"depth": self.depth} if self.arch == "compact" else {"blocks": self.blocks}
        torch.manual_seed(self.seed)
        n_aux = self._fit_auxiliary(train, val)
        k = self.n_classes_
        network = build(self.spatial_dims_, images.shape[1], k + n_aux, width=self.width, dropout=self.dropout, **size)
        weights = torch.as_tensor(class_weights(train.labels, k, self.class_weight), dtype=torch.float32)
        loss = classification_loss(self.loss, weight=weights, gamma=self.focal_gamma, alpha=self.focal_alpha)
        score = validation_score
        if n_aux:
            loss = AuxiliaryTargetLoss(loss, k, self.auxiliary_weight)
            score = lambda out, y: validation_score(out[:, :k], y[:, 0].long())  # noqa: E731
        trainer = Trainer(network, lambda out, y: loss.to(out.device)(out, y), self._config(), score=score,
                          augment=self._augmentation())
        self.history_ = trainer.fit(self._dataset(train), self._dataset(val), labels=train.labels)
        if n_aux:
            keep_class_outputs(network, k)
        self.trainer_ = trainer
        self.network_ = network
        self.n_parameters = sum(p.numel() for p in network.parameters())
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` class probabilities; rows sum to 1."""
        if self.trainer_ is None:
            raise ModelError("models.cnn: predict_proba called before fit")
        logits = self.trainer_.predict(self._tensors(data), batch_size=256)
        return torch.softmax(logits.double(), dim=1).numpy()

    # ------------------------------------------------------------------ the model contract
    @property
    def capabilities(self) -> Capabilities:
        """Images in; Grad-CAM, Grad-CAM++ and occlusion; exports to ONNX."""
        return Capabilities(inputs=frozenset({IMAGE}), explain=(*GRADCAM_METHODS, OCCLUSION), onnx=True)

    def _fitted_network(self) -> nn.Module:
        if self.trainer_ is None:
            raise ModelError("models.cnn: the model is not fitted")
        return self.network_

    def state(self) -> ModelState:
        """The network's weights, and its input scaling, dimensionality and class count."""
        network = self._fitted_network()
        first_conv = next(m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        return ModelState(arrays=tensor_arrays(network.state_dict()),
                          meta={"spatial_dims": int(self.spatial_dims_), "n_classes": int(self.n_classes_),
                                "in_channels": int(first_conv.in_channels), "mean": float(self.mean_),
                                "std": float(self.std_)})

    def load_state(self, state: ModelState) -> "CNNClassifier":
        """Rebuild the fitted network from :meth:`state` (its auxiliary outputs were cut before saving)."""
        meta = state.meta
        build = compact_cnn if self.arch == "compact" else cifar_resnet
        size = {"depth": self.depth} if self.arch == "compact" else {"blocks": self.blocks}
        network = build(meta["spatial_dims"], meta["in_channels"], meta["n_classes"], width=self.width,
                        dropout=self.dropout, **size)
        network.load_state_dict(state_dict_of(state.arrays))
        self.spatial_dims_, self.n_classes_ = meta["spatial_dims"], meta["n_classes"]
        self.mean_, self.std_ = meta["mean"], meta["std"]
        self.network_ = network.eval()
        self.n_parameters = sum(p.numel() for p in network.parameters())
        self.trainer_ = Trainer(network, torch.nn.functional.cross_entropy, self._config())
        return self

    def explain_networks(self) -> list[NetworkView]:
        """The network, its last convolutional block and the input standardisation, for Grad-CAM."""
        network = self._fitted_network()

        def prepare(images: np.ndarray) -> Tensor:
            images = np.asarray(images, dtype=np.float32)
            if images.ndim != self.spatial_dims_ + 2:
                raise ModelError(f"explain: the model takes {self.spatial_dims_}D images (N, C, ...), "
                                 f"got shape {images.shape}")
            return self.standardise(torch.from_numpy(images))

        return [NetworkView(network, last_conv_block(network), prepare, int(self.spatial_dims_))]

    def export_graph(self) -> nn.Module:
        """One module from model-ready images to class logits (standardisation included)."""
        network = self._fitted_network()
        return StandardisedNetwork(network, self.mean_, self.std_)
