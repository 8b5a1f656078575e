"""``bp``: the back-propagation (BP) neural network, a multilayer perceptron on tabular inputs.

The classical BP network (Rumelhart, Hinton & Williams, *Nature* 323:533, 1986): fully connected
layers ``h_{l+1} = f(W_l h_l + b_l)`` trained by back-propagating the gradient of the loss. Binary
tasks end in one sigmoid unit with binary cross-entropy ``-[y log p + (1-y) log(1-p)]``; multi-class
tasks end in a softmax with cross-entropy ``-log p_y``. Training is full-batch Adam by default
(one iteration = one step on all training rows), which for a net this small is exact gradient
descent with adaptive steps and is deterministic for a fixed seed.

For imbalanced classes: ``class_weight="balanced"`` weights each sample's loss by w_c = N / (K n_c);
``loss="focal"`` replaces the cross-entropy by the focal loss −α_t (1 − p_t)^γ log p_t (Lin et al. 2017,
:mod:`medlens.models.losses`); ``sampler="balanced"`` draws each iteration's rows (all N, or
``batch_size``) with replacement, sample i with probability ∝ 1 / n_{y_i}
(:class:`torch.utils.data.WeightedRandomSampler`), so classes are seen equally often.

The network trains in its own loop of full-batch steps, not through :class:`medlens.engine.trainer.Trainer`:
the Trainer runs one epoch (its data loader, loss bookkeeping, scheduler and early-stopping checks) per
step here, which took 1.95× the time of this loop for the default study's ``bp`` on one LIDC fold
(``benchmarks/speed/bench_bp_loop.py``), and its early stopping watches a validation *score* every epoch
where this loop watches the validation loss every ``eval_every`` iterations.

The hidden activation defaults to the logistic sigmoid, the unit of the classical BP network: with
one or two hidden layers on standardised inputs its vanishing gradient does not bite, and it keeps
the model the reference describes. ``tanh`` (zero-centred) and ``relu`` are options; Xavier/Glorot
initialisation (Glorot & Bengio, AISTATS 2010) suits sigmoid and tanh, Kaiming/He (He et al., ICCV
2015) suits ReLU.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import WeightedRandomSampler

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, ModelError
from medlens.engine.threads import torch_threads
from medlens.models.base import FEATURES, IMAGE, OCCLUSION, Capabilities, ModelState, state_dict_of, tensor_arrays
from medlens.models.features import INPUTS, design_matrix
from medlens.models.losses import LOSSES, focal_loss
from medlens.models.registry import register

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
_INITS = ("xavier", "kaiming", "normal")


def class_weights(labels: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray:
    """Per-class loss weights: ones, or ``"balanced"`` ``w_c = N / (K n_c)`` (scikit-learn's rule).

    A class absent from ``labels`` gets weight 0.
    """
    if mode is None:
        return np.ones(n_classes)
    if mode != "balanced":
        raise ConfigError(f"class_weight: unknown {mode!r}; use 'balanced' or None")
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)


def _init_linear(layer: nn.Linear, init: str, activation: str) -> None:
    if init == "xavier":
        nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(activation))
    elif init == "kaiming":
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    else:
        nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)


@register("bp")
class BPNetwork:
    """The BP neural network.

    Parameters
    ----------
    hidden : sequence of int
        Units per hidden layer, default one layer of 32.
    activation : {"sigmoid", "tanh", "relu"}
    init : {"xavier", "kaiming", "normal"}
        Weight initialisation (``normal``: N(0, 0.01²)); biases start at zero.
    lr : float
        Adam learning rate (reference 0.02).
    iterations : int
        Optimiser steps (reference 2000).
    batch_size : int, optional
        Mini-batch size; ``None`` trains full-batch.
    weight_decay : float
        L2 penalty coefficient (added to the gradient by Adam).
    dropout : float
        Dropout probability after each hidden activation.
    inputs : {"features", "pixels"}
        Tabular features chosen by ``features``, or the flattened image.
    features : "all" or list of str
        Feature names or glob patterns (see :mod:`medlens.models.features`).
    class_weight : {"balanced", None}
    loss : {"ce", "focal"}
        (Binary) cross-entropy, or the focal loss with ``focal_gamma`` (γ) and ``focal_alpha`` (α).
    focal_gamma : float
    focal_alpha : float, list of float or None
    sampler : {None, "balanced"}
        ``"balanced"``: rows of each iteration drawn with replacement, classes equally likely.
    early_stopping : bool
        With a validation set, evaluate its loss every ``eval_every`` iterations, keep the best
        iteration's weights and stop after ``patience`` iterations without improvement.
    patience, eval_every : int
    seed : int
    """

    name = "bp"

    def __init__(self, hidden: Sequence[int] = (32,), activation: str = "sigmoid", init: str = "xavier",
                 lr: float = 0.02, iterations: int = 2000, batch_size: int | None = None, weight_decay: float = 0.0,
                 dropout: float = 0.0, inputs: str = "features", features: str | Sequence[str] = "all",
                 class_weight: str | None = None, early_stopping: bool = False, patience: int = 200,
                 eval_every: int = 10, loss: str = "ce", focal_gamma: float = 2.0,
                 focal_alpha: float | Sequence[float] | None = None, sampler: str | None = None, seed: int = 0):
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"models.bp.activation: unknown {activation!r}; use one of {', '.join(_ACTIVATIONS)}")
        if init not in _INITS:
            raise ConfigError(f"models.bp.init: unknown {init!r}; use one of {', '.join(_INITS)}")
        if inputs not in INPUTS:
            raise ConfigError(f"models.bp.inputs: unknown {inputs!r}; use one of {', '.join(INPUTS)}")
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"models.bp.class_weight: unknown {class_weight!r}; use 'balanced' or None")
        if loss not in LOSSES:
            raise ConfigError(f"models.bp.loss: unknown {loss!r}; use one of {', '.join(LOSSES)}")
        if focal_gamma < 0:
            raise ConfigError(f"models.bp.focal_gamma: must be >= 0, got {focal_gamma}")
        if sampler not in (None, "balanced"):
            raise ConfigError(f"models.bp.sampler: unknown {sampler!r}; use 'balanced' or None")
        if iterations < 1 or lr <= 0 or not 0 <= dropout < 1:
            raise ConfigError("models.bp: iterations must be >= 1, lr > 0 and 0 <= dropout < 1")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.init = init
        self.lr = lr
        self.iterations = iterations
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.inputs = inputs
        self.features = features
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.patience = patience
        self.eval_every = eval_every
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.sampler = sampler
        self.seed = seed
        self.network_: nn.Sequential | None = None

    def _network(self, n_inputs: int, n_outputs: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = n_inputs
        for units in self.hidden:
            linear = nn.Linear(width, units)
            _init_linear(linear, self.init, self.activation)
            layers += [linear, _ACTIVATIONS[self.activation]()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            width = units
        out = nn.Linear(width, n_outputs)
        nn.init.xavier_uniform_(out.weight)
        nn.init.zeros_(out.bias)
        return nn.Sequential(*layers, out)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Class-weighted mean loss ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (cross-entropy or focal)."""
        if self.loss == "focal":
            return focal_loss(logits[:, 0] if self.n_classes_ == 2 else logits, y, gamma=self.focal_gamma,
                              alpha=self.focal_alpha, weight=weights)
        if self.n_classes_ == 2:
            per_row = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="none")
        else:
            per_row = nn.functional.cross_entropy(logits, y, reduction="none")
        w = weights[y]
        return (w * per_row).sum() / w.sum()

    def _inputs(self, data: ArrayDataset) -> torch.Tensor:
        x = self.scaler_.transform(design_matrix(data, self.inputs, self.features))
        return torch.as_tensor(x, dtype=torch.float32)

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "BPNetwork":
        """Standardise the inputs (statistics of ``train`` only) and train by back-propagation.

        Runs on one torch thread: the network is too small for intra-op parallelism to pay.
        """
        with torch_threads(1):
            return self._fit(train, val)

    def _fit(self, train: ArrayDataset, val: ArrayDataset | None) -> "BPNetwork":
        self.n_classes_ = train.n_classes
        self.scaler_ = StandardScaler().fit(design_matrix(train, self.inputs, self.features))
        x, y = self._inputs(train), torch.as_tensor(train.labels)
        weights = torch.as_tensor(class_weights(train.labels, self.n_classes_, self.class_weight), dtype=torch.float32)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        net = self._network(x.shape[1], 1 if self.n_classes_ == 2 else self.n_classes_)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        watch = self.early_stopping and val is not None
        if watch:
            x_val, y_val = self._inputs(val), torch.as_tensor(val.labels)
        batch = len(y) if self.batch_size is None else min(int(self.batch_size), len(y))
        order, cursor = torch.arange(len(y)), len(y)
        draw = None
        if self.sampler == "balanced":
            counts = torch.bincount(y).double()
            draw = WeightedRandomSampler(1.0 / counts[y], num_samples=batch, replacement=True, generator=generator)
        best_loss, best_state, self.best_iteration_ = np.inf, None, self.iterations
        self.loss_curve_: list[float] = []
        self.val_curve_: list[tuple[int, float]] = []
        net.train()
        for iteration in range(1, self.iterations + 1):
            if draw is not None:
                rows = torch.as_tensor(list(draw))
                xb, yb = x[rows], y[rows]
            elif batch < len(y):
                if cursor + batch > len(y):
                    order, cursor = torch.randperm(len(y), generator=generator), 0
                rows = order[cursor:cursor + batch]
                cursor += batch
                xb, yb = x[rows], y[rows]
            else:
                xb, yb = x, y
            loss = self._loss(net(xb), yb, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.loss_curve_.append(float(loss.detach()))
            if watch and iteration % self.eval_every == 0:
                net.eval()
                with torch.no_grad():
                    val_loss = float(self._loss(net(x_val), y_val, weights))
                net.train()
                self.val_curve_.append((iteration, val_loss))
                if val_loss < best_loss:
                    best_loss, best_state, self.best_iteration_ = val_loss, copy.deepcopy(net.state_dict()), iteration
                elif iteration - self.best_iteration_ >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.n_iterations_ = iteration
        self.network_ = net.eval()
        self.n_parameters = sum(p.numel() for p in net.parameters())
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` class probabilities; rows sum to 1."""
        if self.network_ is None:
            raise ModelError("models.bp: predict_proba called before fit")
        with torch.no_grad():
            logits = self.network_(self._inputs(data)).double()
        if self.n_classes_ == 2:
            p = torch.sigmoid(logits[:, 0]).numpy()
            return np.column_stack([1.0 - p, p])
        return torch.softmax(logits, dim=1).numpy()

    # ------------------------------------------------------------------ the model contract
    @property
    def capabilities(self) -> Capabilities:
        """Tabular features in (no explanation), or the flattened image (occlusion explains it)."""
        if self.inputs == "pixels":
            return Capabilities(inputs=frozenset({IMAGE}), explain=(OCCLUSION,))
        return Capabilities(inputs=frozenset({FEATURES}))

    def state(self) -> ModelState:
        """The network's weights and the input standardisation (means, scales, variances)."""
        if self.network_ is None:
            raise ModelError("models.bp: the model is not fitted")
        scaler = self.scaler_
        arrays = tensor_arrays(self.network_.state_dict())
        arrays.update(scaler_mean=scaler.mean_, scaler_scale=scaler.scale_, scaler_var=scaler.var_)
        return ModelState(arrays=arrays, meta={"n_classes": int(self.n_classes_),
                                               "n_inputs": int(scaler.n_features_in_)})

    def load_state(self, state: ModelState) -> "BPNetwork":
        """Rebuild the scaler and the network from :meth:`state`."""
        self.n_classes_ = int(state.meta["n_classes"])
        scaler = StandardScaler()
        scaler.mean_ = np.asarray(state.arrays["scaler_mean"], dtype=np.float64)
        scaler.scale_ = np.asarray(state.arrays["scaler_scale"], dtype=np.float64)
        scaler.var_ = np.asarray(state.arrays["scaler_var"], dtype=np.float64)
        scaler.n_features_in_ = int(state.meta["n_inputs"])
        scaler.n_samples_seen_ = 0
        self.scaler_ = scaler
        network = self._network(scaler.n_features_in_, 1 if self.n_classes_ == 2 else self.n_classes_)
        network.load_state_dict(state_dict_of(state.arrays))
        self.network_ = network.eval()
        self.n_parameters = sum(p.numel() for p in network.parameters())
        return self
