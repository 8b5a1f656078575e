"""A model together with the feature steps that prepare its inputs: the object that is fitted is the object
that prepares inputs (the idea of scikit-learn's :class:`~sklearn.pipeline.Pipeline`).

A study, ``medlens train`` and ``medlens predict`` all go through :class:`ModelPipeline`, so a model of
tabular features sees the same features in cross-validation, in its bundle and on a new file. Two kinds of
tabular features exist:

* features **computed from the model-ready image** by a step of the pipeline: the pooled Gabor statistics
  (:class:`GaborFeatures`);
* features **measured with the sample** when it is cut from its source, before resampling: the lesion's
  radiomic shape and HU features of the readers' mask at native resolution
  (:func:`medlens.preprocess.voi.lesion_cube`, the one function that both the ``lidc_nodules`` builder and
  ``medlens predict`` on a CT volume call) and the readers' diameter. A pipeline names the ones its model
  selects; an input that cannot give one is an error at prediction time, never a silent zero.

Steps are deterministic functions of one sample at a time, fitted on nothing, so a study may compute them
once for the whole dataset (:func:`prepare_features`); a dataset records the steps already applied in
``meta["feature_steps"]`` and a pipeline skips those.
"""

from __future__ import annotations

import dataclasses
from fnmatch import fnmatchcase
from typing import Any, Sequence

import numpy as np

from medlens.data.dataset import ArrayDataset, chunks
from medlens.errors import ConfigError, ModelError
from medlens.models.base import FEATURES, IMAGE, OCCLUSION, Capabilities, ModelState
from medlens.models.registry import build


class GaborFeatures:
    """Pooled Gabor statistics of each image, appended as tabular features ``gabor_*``.

    2D images: the bank (:class:`medlens.preprocess.gabor.GaborBank`) runs on channel 0. Volumes: on the
    central axial, coronal and sagittal slices of channel 0 (:meth:`~medlens.preprocess.gabor.GaborBank.features_3d`),
    inside the ``nodule_mask`` channel when ``inside_mask`` is set.
    """

    kind = "gabor"

    def __init__(self, wavelengths: Sequence[float], orientations: int, gamma: float, bandwidth: float,
                 inside_mask: bool = False):
        from medlens.preprocess.gabor import GaborBank

        self.params = {"wavelengths": [float(w) for w in wavelengths], "orientations": int(orientations),
                       "gamma": float(gamma), "bandwidth": float(bandwidth), "inside_mask": bool(inside_mask)}
        self.bank = GaborBank(wavelengths=wavelengths, orientations=orientations, gamma=gamma, bandwidth=bandwidth)
        self.names = [n if n.startswith("gabor") else f"gabor_{n}" for n in self.bank.feature_names]

    def describe(self) -> dict[str, Any]:
        """The step as JSON (``kind`` and parameters): what a bundle records and :func:`step_from` reads."""
        return {"kind": self.kind, **self.params}

    def apply(self, data: ArrayDataset) -> ArrayDataset:
        """``data`` with the Gabor statistics appended to its features (a new dataset; ``data`` is unchanged).

        The images are read in blocks of 256 (:func:`~medlens.data.dataset.chunks`), so that the memory this
        takes does not grow with the number of images when they are :class:`~medlens.data.dataset.LazyImages`
        (each image's features are its own: the blocks give the values of one pass, bit for bit).
        """
        mask_channel = None
        if data.images.ndim == 5 and self.params["inside_mask"]:
            channels = data.meta.get("channels", [])
            if "nodule_mask" not in channels:
                raise ConfigError("features.gabor.inside_mask: the dataset has no nodule_mask channel")
            mask_channel = channels.index("nodule_mask")
        blocks = []
        for rows in chunks(len(data)):
            images = np.asarray(data.images[rows])
            if images.ndim == 5:
                masks = None if mask_channel is None else images[:, mask_channel] > 0.5
                blocks.append(self.bank.features_3d(images[:, 0], masks=masks))
            else:
                blocks.append(self.bank.features(images[:, 0]))
        values = np.concatenate(blocks) if blocks else np.zeros((0, len(self.names)))
        old = data.features if data.features is not None else np.zeros((len(data), 0), np.float32)
        meta = {**data.meta, "feature_names": list(data.meta.get("feature_names", [])) + self.names,
                "feature_steps": [*data.meta.get("feature_steps", []), self.describe()]}
        return dataclasses.replace(data, features=np.concatenate([old, values.astype(np.float32)], axis=1),
                                   meta=meta)


_STEPS = {GaborFeatures.kind: GaborFeatures}


def step_from(description: dict[str, Any]):
    """The step a :meth:`GaborFeatures.describe` dictionary describes."""
    params = dict(description)
    kind = params.pop("kind", None)
    if kind not in _STEPS:
        raise ConfigError(f"feature step: unknown kind {kind!r}; known: {', '.join(_STEPS)}")
    return _STEPS[kind](**params)


def prepare_features(data: ArrayDataset, steps: Sequence) -> ArrayDataset:
    """``data`` with every step of ``steps`` applied that it has not had yet (see the module docstring)."""
    done = data.meta.get("feature_steps", [])
    for step in steps:
        if step.describe() not in done:
            data = step.apply(data)
            done = data.meta["feature_steps"]
    return data


def _selects_any(spec: str | Sequence[str], names: Sequence[str]) -> bool:
    """Whether a feature spec (``"all"`` or names / glob patterns) selects any of ``names``."""
    if isinstance(spec, str):
        spec = [spec]
    return any(pattern == "all" or fnmatchcase(name, pattern) for pattern in spec for name in names)


class ModelPipeline:
    """A registered model and the feature steps that prepare its inputs.

    It answers the model contract (:mod:`medlens.models.base`) itself: ``fit`` and ``predict_proba`` apply the
    steps first; ``capabilities`` are the model's, with images added to its inputs and occlusion to its
    explanations when a step computes the model's features from the image; ``state()`` is the model's
    (the steps are fitted on nothing and recorded by :meth:`describe`).
    """

    def __init__(self, model, steps: Sequence = (), channels: Sequence[str] | None = None):
        self.model = model
        self.steps = list(steps)
        self.channels = None if channels is None else list(channels)
        """The names of the training images' channels (a step may read one, e.g. the nodule mask)."""

    @property
    def name(self) -> str:
        return self.model.name

    def __getattr__(self, attribute: str):  # n_parameters, description, history_... of the fitted model
        if attribute == "model":
            raise AttributeError(attribute)
        return getattr(self.model, attribute)

    def prepare(self, data: ArrayDataset) -> ArrayDataset:
        """``data`` as the model reads it: the pipeline's feature steps applied (those not applied yet); images
        without channel names are taken to have the training images' channels."""
        if self.steps and "channels" not in data.meta and self.channels is not None:
            data = dataclasses.replace(data, meta={**data.meta, "channels": self.channels})
        return prepare_features(data, self.steps)

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "ModelPipeline":
        self.channels = train.meta.get("channels")
        self.model.fit(self.prepare(train), None if val is None else self.prepare(val))
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        return self.model.predict_proba(self.prepare(data))

    @property
    def capabilities(self) -> Capabilities:
        own = self.model.capabilities
        if not self.steps:
            return own
        explain = own.explain if own.explain else (OCCLUSION,)
        return Capabilities(inputs=own.inputs | {IMAGE}, explain=explain, onnx=own.onnx)

    def state(self) -> ModelState:
        return self.model.state()

    def load_state(self, state: ModelState) -> "ModelPipeline":
        self.model.load_state(state)
        return self

    def explain_networks(self):
        return self.model.explain_networks()

    def export_graph(self):
        return self.model.export_graph()

    def describe(self) -> list[dict[str, Any]]:
        """The steps as JSON, in order (what a bundle records)."""
        return [step.describe() for step in self.steps]


def feature_steps(features_config, model) -> list:
    """The feature steps of a study's ``features`` config that ``model`` reads.

    A model that consumes tabular features gets the Gabor step when its feature spec (its ``features``
    parameter) selects any ``gabor_*`` feature; models of images get none.
    """
    gabor = getattr(features_config, "gabor", None)
    if gabor is None or FEATURES not in model.capabilities.inputs:
        return []
    step = GaborFeatures(gabor.wavelengths, gabor.orientations, gabor.gamma, gabor.bandwidth, gabor.inside_mask)
    return [step] if _selects_any(getattr(model, "features", "all"), step.names) else []


def build_pipeline(name: str, params: dict[str, Any], features_config=None) -> ModelPipeline:
    """The registered model ``name`` with ``params``, and the feature steps of ``features_config`` it reads."""
    model = build(name, **params)
    return ModelPipeline(model, feature_steps(features_config, model))


def restore_pipeline(name: str, params: dict[str, Any], steps: Sequence[dict[str, Any]], state: ModelState,
                     channels: Sequence[str] | None = None) -> ModelPipeline:
    """A fitted pipeline from what a bundle recorded: model name and parameters, step descriptions, state and
    the training images' channel names."""
    try:
        model = build(name, **params)
    except ConfigError as exc:
        raise ModelError(f"model {name!r}: the recorded parameters do not build it ({exc})") from exc
    return ModelPipeline(model, [step_from(s) for s in steps], channels).load_state(state)
