"""``cnn_lstm``: a shared 2D CNN reads each slice of a volume, an LSTM or GRU reads the slice sequence.

A volume ``(C, D, H, W)`` is read as a sequence of ``T`` slices along a chosen spatial ``axis``. One
2D encoder (the same weights for every slice) maps slice ``t`` to a feature vector ``x_t``; a
recurrent layer (``torch.nn.LSTM`` or ``torch.nn.GRU``) reads ``x_1 … x_T``; its last state, or an
attention-weighted mean of all its states, feeds a linear classifier (Donahue et al., *Long-term
recurrent convolutional networks*, CVPR 2015).

The LSTM cell (Hochreiter & Schmidhuber, *Neural Comput.* 9:1735, 1997; with forget gate, Gers et
al. 2000), with ``[h, x]`` the concatenation and ``σ`` the logistic sigmoid::

    f_t = σ(W_f·[h_{t−1}, x_t] + b_f)          forget gate
    i_t = σ(W_i·[h_{t−1}, x_t] + b_i)          input gate
    o_t = σ(W_o·[h_{t−1}, x_t] + b_o)          output gate
    c̃_t = tanh(W_c·[h_{t−1}, x_t] + b_c)       candidate cell state
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ c̃_t
    h_t = o_t ⊙ tanh(c_t)

The GRU (Cho et al., EMNLP 2014)::

    z_t = σ(W_z·[h_{t−1}, x_t] + b_z)          update gate
    r_t = σ(W_r·[h_{t−1}, x_t] + b_r)          reset gate
    h̃_t = tanh(W_h·[r_t ⊙ h_{t−1}, x_t] + b_h)
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

Attention pooling (Bahdanau et al. 2015; Yang et al., NAACL 2016): ``e_t = vᵀ tanh(W h_t + b)``,
``a_t = softmax_t(e_t)``, pooled state ``Σ_t a_t h_t``.

This module also holds ``cnn_view``, the input adapter that turns a volume into the 2D views a
2D model reads: the central slice along an axis, or the three orthogonal central slices as channels
("2.5D").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medlens.data.dataset import ArrayDataset
from medlens.engine.trainer import TrainConfig, Trainer
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.splits import inner_validation_split
from medlens.models.base import IMAGE, OCCLUSION, Capabilities, ModelState, state_dict_of, tensor_arrays
from medlens.models.cnn import compact_cnn, validation_score
from medlens.models.mlp import class_weights
from medlens.models.registry import build, register

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
_POOLING = ("last", "attention")
_VIEWS = ("central", "2.5d")


def slice_encoder(in_channels: int, width: int = 16, depth: int = 3) -> nn.Sequential:
    """The 2D compact CNN of :func:`medlens.models.cnn.compact_cnn` without its dropout and classifier:
    ``depth`` blocks of conv3×3-BatchNorm-ReLU-maxpool2 (widths ``width·2^i``), global average pooling,
    giving ``width·2^(depth−1)`` features per slice."""
    return compact_cnn(2, in_channels, 1, width=width, depth=depth)[:-2]


class AttentionPool(nn.Module):
    """``Σ_t a_t h_t`` with ``a_t = softmax_t(vᵀ tanh(W h_t + b))``."""

    def __init__(self, features: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(features, features), nn.Tanh(), nn.Linear(features, 1, bias=False))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, F)
        weights = torch.softmax(self.score(h), dim=1)
        return (weights * h).sum(dim=1)


class CNNRNN(nn.Module):
    """Shared slice encoder + LSTM/GRU + linear head; input ``(B, C, T, H, W)``, output ``(B, n_outputs)``."""

    def __init__(self, in_channels: int, n_outputs: int, cell: str = "lstm", hidden: int = 64, layers: int = 1,
                 bidirectional: bool = False, pooling: str = "last", width: int = 16, depth: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.encoder = slice_encoder(in_channels, width, depth)
        self.rnn = _CELLS[cell](width * 2 ** (depth - 1), hidden, num_layers=layers, batch_first=True,
                                bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        state = hidden * (2 if bidirectional else 1)
        self.pool = AttentionPool(state) if pooling == "attention" else None
        self.bidirectional = bidirectional
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(state, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        feats = self.encoder(slices).reshape(b, t, -1)
        # The recurrent part runs in float32: CPU autocast has no bfloat16 LSTM/GRU kernels.
        with torch.autocast(device_type=x.device.type, enabled=False):
            states, last = self.rnn(feats.float())
            if self.pool is not None:
                pooled = self.pool(states)
            else:
                h_n = last[0] if isinstance(last, tuple) else last  # LSTM returns (h_n, c_n)
                pooled = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.bidirectional else h_n[-1]
            return self.head(self.drop(pooled))


def as_sequence(images: np.ndarray, axis: int) -> np.ndarray:
    """``(N, C, D, H, W)`` volumes as ``(N, C, T, S1, S2)`` slice sequences along spatial ``axis`` (0, 1, 2)."""
    if images.ndim != 5:
        raise ModelError(f"cnn_lstm: needs volumes (N, C, D, H, W), got images of shape {images.shape}")
    return np.ascontiguousarray(np.moveaxis(images, 2 + axis, 2), dtype=np.float32)


def _check_params(kind: str, cell: str, pooling: str, axis: int, epochs: int, lr: float, val_fraction: float) -> None:
    if cell not in _CELLS:
        raise ConfigError(f"models.{kind}.cell: unknown {cell!r}; use one of {', '.join(_CELLS)}")
    if pooling not in _POOLING:
        raise ConfigError(f"models.{kind}.pooling: unknown {pooling!r}; use one of {', '.join(_POOLING)}")
    if axis not in (0, 1, 2):
        raise ConfigError(f"models.{kind}.axis: must be 0, 1 or 2 (z, y, x), got {axis!r}")
    if epochs < 1 or lr <= 0:
        raise ConfigError(f"models.{kind}: epochs must be >= 1 and lr > 0")
    if not 0 < val_fraction <= 0.5:
        raise ConfigError(f"models.{kind}.val_fraction: must lie in (0, 0.5], got {val_fraction}")


@register("cnn_lstm")
class CNNLSTM:
    """CNN-LSTM (or CNN-GRU) classifier of volumes read slice by slice.

    Training follows the ``cnn`` model so that the two compare fairly: inputs standardised with the
    training set's mean and standard deviation, class-weighted cross-entropy, AdamW with a cosine
    schedule, random in-slice flips, early stopping on the validation AUC (accuracy for multi-class
    tasks) with the best epoch's weights kept.

    Parameters
    ----------
    axis : {0, 1, 2}
        Spatial axis of ``(C, D, H, W)`` read as the sequence (0: axial slices along z).
    cell : {"lstm", "gru"}
    hidden : int
        Units of the recurrent state.
    layers : int
        Stacked recurrent layers.
    bidirectional : bool
        Read the sequence both ways and concatenate the two states.
    pooling : {"last", "attention"}
        Classify the last state, or the attention-pooled states.
    width, depth : int
        Slice encoder: ``depth`` conv blocks, the first ``width`` channels wide, doubling.
    dropout : float
        Before the head (and between stacked recurrent layers).
    epochs, batch_size, lr, weight_decay, patience, max_steps :
        Passed to :class:`medlens.engine.trainer.TrainConfig`.
    class_weight : {"balanced", None}
    augment : bool
        Random flips of the two in-slice axes.
    val_fraction : float
        Inner validation share taken from ``train`` when ``fit`` gets no ``val``.
    amp : {"auto", "bf16", "off"}
        Autocast of the slice encoder (the recurrent layer always runs in float32).
    progress : bool
    seed : int
    """

    name = "cnn_lstm"

    def __init__(self, axis: int = 0, cell: str = "lstm", hidden: int = 64, layers: int = 1,
                 bidirectional: bool = False, pooling: str = "last", width: int = 16, depth: int = 3,
                 dropout: float = 0.2, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3,
                 weight_decay: float = 1e-4, patience: int | None = 8, max_steps: int | None = None,
                 class_weight: str | None = "balanced", augment: bool = True, val_fraction: float = 0.15,
                 amp: str = "off", progress: bool = False, seed: int = 0):
        _check_params(self.name, cell, pooling, axis, epochs, lr, val_fraction)
        self.axis, self.cell, self.hidden, self.layers = axis, cell, int(hidden), int(layers)
        self.bidirectional, self.pooling, self.width, self.depth = bidirectional, pooling, int(width), int(depth)
        self.dropout, self.epochs, self.batch_size, self.lr = dropout, int(epochs), int(batch_size), lr
        self.weight_decay, self.patience, self.max_steps = weight_decay, patience, max_steps
        self.class_weight, self.augment, self.val_fraction = class_weight, augment, val_fraction
        self.amp, self.progress, self.seed = amp, progress, seed
        self.trainer_ = None

    @property
    def description(self) -> str:
        way = "bidirectional " if self.bidirectional else ""
        return (f"2D CNN (width {self.width}, depth {self.depth}) per slice along axis {self.axis} + "
                f"{way}{self.cell.upper()}({self.hidden}), {self.pooling} state")

    def _tensors(self, data: ArrayDataset) -> torch.Tensor:
        return torch.from_numpy((as_sequence(data.images, self.axis) - self.mean_) / self.std_)

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "CNNLSTM":
        """Train on ``train`` with early stopping on ``val`` (or on an inner split of ``train``)."""
        if val is None:
            inner, held = inner_validation_split(train.labels, train.groups, self.val_fraction, self.seed)
            train, val = train.subset(inner), train.subset(held)
        images = as_sequence(train.images, self.axis)
        self.n_classes_ = train.n_classes
        self.mean_, self.std_ = float(images.mean()), float(images.std()) or 1.0
        torch.manual_seed(self.seed)
        module = CNNRNN(images.shape[1], self.n_classes_, self.cell, self.hidden, self.layers,
                        self.bidirectional, self.pooling, self.width, self.depth, self.dropout)
        weights = torch.as_tensor(class_weights(train.labels, self.n_classes_, self.class_weight), dtype=torch.float32)
        loss = nn.CrossEntropyLoss(weight=weights)
        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, optimizer="adamw", scheduler="cosine",
                             patience=self.patience, max_steps=self.max_steps, amp=self.amp,
                             channels_last=False, seed=self.seed, progress=self.progress)
        self.trainer_ = Trainer(module, lambda out, y: loss.to(out.device)(out, y), config, score=validation_score,
                                augment=_flip_slices if self.augment else None)
        data = [TensorDataset(self._tensors(d), torch.as_tensor(d.labels)) for d in (train, val)]
        self.history_ = self.trainer_.fit(*data)
        self.network_ = module
        self.n_parameters = sum(p.numel() for p in module.parameters())
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` softmax probabilities; rows sum to 1."""
        if self.trainer_ is None:
            raise ModelError("models.cnn_lstm: predict_proba called before fit")
        logits = self.trainer_.predict(self._tensors(data), batch_size=128)
        return torch.softmax(logits.double(), dim=1).numpy()

    # ------------------------------------------------------------------ the model contract
    capabilities = Capabilities(inputs=frozenset({IMAGE}), explain=(OCCLUSION,))
    """Volumes in; occlusion explains them (the slice encoder's maps are per slice, not per volume)."""

    def state(self) -> ModelState:
        """The network's weights, its input channels, class count and input scaling."""
        if self.trainer_ is None:
            raise ModelError("models.cnn_lstm: the model is not fitted")
        in_channels = next(m for m in self.network_.modules() if isinstance(m, nn.Conv2d)).in_channels
        return ModelState(arrays=tensor_arrays(self.network_.state_dict()),
                          meta={"in_channels": int(in_channels), "n_classes": int(self.n_classes_),
                                "mean": float(self.mean_), "std": float(self.std_)})

    def load_state(self, state: ModelState) -> "CNNLSTM":
        meta = state.meta
        module = CNNRNN(meta["in_channels"], meta["n_classes"], self.cell, self.hidden, self.layers,
                        self.bidirectional, self.pooling, self.width, self.depth, self.dropout)
        module.load_state_dict(state_dict_of(state.arrays))
        self.n_classes_, self.mean_, self.std_ = meta["n_classes"], meta["mean"], meta["std"]
        self.network_ = module.eval()
        self.n_parameters = sum(p.numel() for p in module.parameters())
        self.trainer_ = Trainer(module, nn.functional.cross_entropy,
                                TrainConfig(amp=self.amp, channels_last=False, seed=self.seed, progress=False))
        return self


def _flip_slices(x: torch.Tensor) -> torch.Tensor:
    """Flip each sample's in-slice axes (H, W of ``(B, C, T, H, W)``) with probability 1/2 each."""
    for dim in (3, 4):
        flip = torch.rand(len(x), device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(dim), x)
    return x


# --------------------------------------------------------------------------------------------------
# 2D views of volumes: the input adapters of the 2D and 2.5D baselines
# --------------------------------------------------------------------------------------------------
def central_slice(images: np.ndarray, axis: int = 0) -> np.ndarray:
    """The central slice of each ``(N, C, D, H, W)`` volume along spatial ``axis``: ``(N, C, ·, ·)``."""
    if images.ndim != 5:
        raise ModelError(f"cnn_view: needs volumes (N, C, D, H, W), got images of shape {images.shape}")
    return np.ascontiguousarray(np.take(images, images.shape[2 + axis] // 2, axis=2 + axis), dtype=np.float32)


def orthogonal_slices(images: np.ndarray) -> np.ndarray:
    """2.5D view: the axial, coronal and sagittal central slices stacked as channels, ``(N, 3C, S, S)``.

    Needs cubic volumes (D = H = W = S), so that the three slices share one shape.
    """
    if images.ndim != 5 or len(set(images.shape[2:])) != 1:
        raise ModelError(f"cnn_view: the 2.5d view needs cubic volumes (N, C, S, S, S), got {images.shape}")
    return np.concatenate([central_slice(images, axis) for axis in (0, 1, 2)], axis=1)


def volume_view(images: np.ndarray, view: str, axis: int = 0) -> np.ndarray:
    """``central_slice`` (``view="central"``) or ``orthogonal_slices`` (``view="2.5d"``)."""
    return central_slice(images, axis) if view == "central" else orthogonal_slices(images)


def _viewed(data: ArrayDataset, view: str, axis: int) -> ArrayDataset:
    return ArrayDataset(images=volume_view(data.images, view, axis), labels=data.labels, groups=data.groups,
                        features=data.features, meta=data.meta, ids=data.ids, split=data.split)


@register("cnn_view")
class VolumeViewModel:
    """A 2D model (by default ``cnn``) fitted on a 2D view of each volume.

    Parameters
    ----------
    view : {"central", "2.5d"}
        The central slice along ``axis``, or the three orthogonal central slices as channels.
    axis : {0, 1, 2}
        Axis of the central slice (ignored by ``"2.5d"``).
    model : str
        The registered 2D model that reads the view.
    seed : int
    **params
        Passed to the 2D model.
    """

    name = "cnn_view"

    def __init__(self, view: str = "central", axis: int = 0, model: str = "cnn", seed: int = 0, **params):
        if view not in _VIEWS:
            raise ConfigError(f"models.cnn_view.view: unknown {view!r}; use one of {', '.join(_VIEWS)}")
        if axis not in (0, 1, 2):
            raise ConfigError(f"models.cnn_view.axis: must be 0, 1 or 2 (z, y, x), got {axis!r}")
        self.view, self.axis, self.model, self.seed, self.params = view, axis, model, seed, params
        self.inner = build(model, seed=seed, **params)

    @property
    def description(self) -> str:
        if self.view == "2.5d":
            return f"{self.model} on the three orthogonal central slices as channels"
        return f"{self.model} on the central slice, axis {self.axis}"

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "VolumeViewModel":
        viewed_val = None if val is None else _viewed(val, self.view, self.axis)
        self.inner.fit(_viewed(train, self.view, self.axis), viewed_val)
        self.n_parameters = getattr(self.inner, "n_parameters", None)
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        return self.inner.predict_proba(_viewed(data, self.view, self.axis))

    # ------------------------------------------------------------------ the model contract
    capabilities = Capabilities(inputs=frozenset({IMAGE}), explain=(OCCLUSION,))
    """Volumes in; occlusion explains the volume (the 2D model's maps would cover only its view)."""

    def state(self) -> ModelState:
        return ModelState().nest("inner", self.inner.state())

    def load_state(self, state: ModelState) -> "VolumeViewModel":
        self.inner.load_state(state.part("inner"))
        self.n_parameters = getattr(self.inner, "n_parameters", None)
        return self
