"""The model contract: what every model family answers, so that nothing outside the registry asks for a
model's name.

A study, a bundle, ``predict``, ``explain`` and the ONNX export see a model only through this contract:

* ``fit(train, val)`` and ``predict_proba(data)`` on :class:`~medlens.data.dataset.ArrayDataset` (the
  estimator contract of scikit-learn: parameters in ``__init__``, work in ``fit``);
* ``capabilities``: a :class:`Capabilities` saying what the model consumes (images, tabular features or
  both), which explanation methods apply to it and whether it exports to ONNX;
* ``state()`` → :class:`ModelState` and ``load_state(state)``: the fitted state as numeric arrays (written
  as safetensors), JSON metadata, and scikit-learn estimators (written with skops, read back with an explicit
  list of trusted types): nothing in a bundle is executed when it is read;
* for models that declare Grad-CAM: ``explain_networks()``, the torch networks and the layer whose
  activations are explained (:class:`NetworkView`); for models that declare ONNX: ``export_graph()``, one
  torch module from model-ready images to logits.

A family is one file in ``medlens/models/`` whose class is decorated with
:func:`medlens.models.registry.register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from medlens.data.dataset import ArrayDataset

IMAGE = "image"
FEATURES = "features"
GRADCAM_METHODS = ("gradcam", "gradcam++")
OCCLUSION = "occlusion"


@dataclass(frozen=True)
class Capabilities:
    """What a model can do.

    Parameters
    ----------
    inputs : frozenset of {"image", "features"}
        What ``predict_proba`` reads of a dataset: the images, the tabular features, or both.
    explain : tuple of str
        Explanation methods that apply (:data:`medlens.deploy.explain.METHODS`): ``gradcam`` and
        ``gradcam++`` need torch networks with convolutional feature maps (:meth:`Model.explain_networks`);
        ``occlusion`` needs only ``predict_proba`` on images. Empty: the model cannot be explained
        (e.g. a model of tabular features measured outside the image).
    onnx : bool
        The model exports to one ONNX graph from images to probabilities (:meth:`Model.export_graph`).
    """

    inputs: frozenset[str]
    explain: tuple[str, ...] = ()
    onnx: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": sorted(self.inputs), "explain": list(self.explain), "onnx": self.onnx}


@dataclass
class ModelState:
    """The fitted state of a model, in forms that are read back without executing anything.

    ``arrays``: named numeric arrays (network weights, scaler statistics), written as safetensors;
    ``meta``: JSON-ready values (shapes, class count, input scaling); ``estimators``: fitted scikit-learn
    objects, written with skops and read back only with the trusted types of
    :data:`medlens.deploy.classifier.TRUSTED_SKOPS_TYPES`.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    estimators: dict[str, Any] = field(default_factory=dict)

    def nest(self, prefix: str, inner: "ModelState") -> "ModelState":
        """Add ``inner``'s entries under ``prefix.`` (a member or stage of a composite model); returns self."""
        self.arrays.update({f"{prefix}.{k}": v for k, v in inner.arrays.items()})
        self.estimators.update({f"{prefix}.{k}": v for k, v in inner.estimators.items()})
        self.meta[prefix] = inner.meta
        return self

    def part(self, prefix: str) -> "ModelState":
        """The entries that :meth:`nest` stored under ``prefix``."""
        cut = len(prefix) + 1
        return ModelState(arrays={k[cut:]: v for k, v in self.arrays.items() if k.startswith(prefix + ".")},
                          meta=self.meta.get(prefix, {}),
                          estimators={k[cut:]: v for k, v in self.estimators.items() if k.startswith(prefix + ".")})


@dataclass
class NetworkView:
    """A torch network as Grad-CAM sees it.

    ``module`` maps ``prepare(images)`` to class logits; ``layer`` names (as in ``named_modules``) the block
    whose activations and gradients make the map; ``prepare`` turns model-ready images ``(N, C, ...)`` into the
    network's input tensor (standardisation); ``spatial_dims`` is 2 or 3.
    """

    module: Any
    layer: str
    prepare: Callable[[np.ndarray], Any]
    spatial_dims: int


@runtime_checkable
class Model(Protocol):
    """What every model family answers (see the module docstring)."""

    name: str

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "Model": ...

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, n_classes)`` probabilities; rows sum to 1."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def state(self) -> ModelState: ...

    def load_state(self, state: ModelState) -> "Model": ...


def tensor_arrays(state_dict: dict[str, Any], prefix: str = "network") -> dict[str, np.ndarray]:
    """A torch ``state_dict`` as named numpy arrays (``prefix.key``), for :attr:`ModelState.arrays`."""
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().numpy() for k, v in state_dict.items()}


def state_dict_of(arrays: dict[str, np.ndarray], prefix: str = "network") -> dict[str, Any]:
    """The torch ``state_dict`` that :func:`tensor_arrays` stored under ``prefix``."""
    import torch

    cut = len(prefix) + 1
    return {k[cut:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix + ".")}
