"""The segmentation plan as a validated object: ``plan.json`` in, :class:`SegmentationPlan` out.

A plan says how one dataset is segmented: how images are normalised and resampled, the patch and
batch, the network, the augmentations, how long to train, how to predict, and which post-processing
follows the arg-max. :func:`medlens.segment.rules.make_plan` derives it from the dataset's
fingerprint (:mod:`medlens.segment.fingerprint`) and writes the reason of each choice under
``reasons``; ``medlens segment cv`` adds the post-processing chosen on its folds
(``postprocessing.decision``).

``plan.json`` stays plain JSON that a user may edit before ``train``. Reading it validates every field:
an unknown field, a missing one or a bad value raises :class:`~medlens.errors.ConfigError` naming the
file and the field (``plan.json: field `augmentations.elastic.sigma`: ...``), as the study config does.
Versions: a plan of :data:`PLAN_VERSION` loads as it is; a version-1 plan (medlens before the typed
plan) is upgraded on reading (its post-processing settings move from ``inference`` to
``postprocessing``; the rules' reasons and the structure statistics stay absent); any other version is
refused with a message naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from medlens.errors import ConfigError, UnreadableFileError
from medlens.files import write_text_atomically

PLAN_VERSION = 2
PLAN_FILE = "plan.json"
POSTPROCESSING_KEYS = ("min_component_size", "keep_component", "keep_count", "fill_holes")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetInfo(_Strict):
    """The dataset a plan was made from; ``dataset_id`` is :func:`medlens.segment.fingerprint.dataset_id`."""

    path: str
    dataset_id: str
    mask_mode: Literal["binary", "labels", "instance"] = "binary"
    n_classes: int = Field(2, ge=2)


class Intensity(_Strict):
    """Foreground intensity statistics (percentiles 0.5, 50 and 99.5, mean, std)."""

    p00_5: float
    p50: float
    p99_5: float
    mean: float
    std: float


class Structure(_Strict):
    """What the masks show about the target structure (:func:`medlens.segment.fingerprint.structure_statistics`).

    ``kind``: ``whole`` when a case holds a few structures that are segmented together (two lungs, one
    nodule) and ``objects`` when it holds many (cells, nuclei); ``extent_median`` and ``extent_p90`` are the
    median and 90th percentile of the bounding box (mm, per axis) of the whole foreground or of one
    object; ``thickness`` the median thickness (mm)
    of the thinnest class; ``components``/``components_share`` the most common number of foreground
    components per case and the share of cases that have exactly that many; ``component_size_p05`` the 5th
    percentile of the true components' sizes (voxels); ``centred_share`` the share of cases whose
    foreground reaches the array centre; ``orientation_asymmetry`` the mean absolute change of the mean
    training mask (at 8 pixels a side) under quarter turns.
    """

    kind: Literal["whole", "objects"]
    extent_median: list[float]
    extent_p90: list[float]
    thickness: float | None = None
    components: int = Field(ge=0)
    components_share: float = Field(ge=0, le=1)
    component_size_p05: float = Field(ge=0)
    centred_share: float = Field(ge=0, le=1)
    orientation_asymmetry: float = Field(ge=0)


class Fingerprint(_Strict):
    """Dataset statistics the plan derives from (:func:`medlens.segment.fingerprint.fingerprint`)."""

    dims: Literal[2, 3]
    channels: int = Field(ge=1)
    n_cases: int = Field(ge=1)
    modality: str
    shape_median: list[float]
    shape_min: list[float]
    shape_max: list[float]
    spacing_median: list[float]
    spacing_p10: list[float]
    intensity: Intensity
    class_frequencies: list[float]
    cases_with_foreground: int = Field(ge=0)
    structure: Structure | None = None


class Normalization(_Strict):
    """``ct_clip_zscore`` (CT) and ``dataset_clip_zscore`` (lesion-centred crops of any modality):
    ``(clip(x, lo, hi) - mean) / std`` with the dataset's foreground statistics; ``zscore_per_image``:
    ``(x - mean_c) / std_c`` per channel of each image."""

    scheme: Literal["ct_clip_zscore", "dataset_clip_zscore", "zscore_per_image"]
    clip: list[float] | None = None
    mean: float | None = None
    std: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ct_needs_statistics(self) -> "Normalization":
        if self.scheme != "zscore_per_image":
            if self.clip is None or len(self.clip) != 2 or self.clip[0] >= self.clip[1]:
                raise ValueError(f"{self.scheme} needs clip: [low, high] with low < high")
            if self.mean is None or self.std is None:
                raise ValueError(f"{self.scheme} needs mean and std")
        return self


class Network(_Strict):
    """A network of :data:`medlens.segment.networks.NETWORKS`, first-stage width and downsampling steps."""

    name: str = "unet"
    channels: int = Field(16, ge=1)
    depth: int = Field(ge=1, le=6)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from medlens.segment.networks import NETWORKS

        if value not in NETWORKS:
            raise ValueError(f"unknown network {value!r}; choose one of {sorted(NETWORKS)}")
        return value


class Elastic(_Strict):
    """Elastic deformation (:func:`medlens.segment.train.elastic_deform`): displacements of σ pixels on a
    ``grid`` × ... grid, applied to a share ``prob`` of the patches."""

    sigma: float = Field(gt=0)
    grid: int = Field(3, ge=2)
    prob: float = Field(0.5, ge=0, le=1)


class Augmentations(_Strict):
    """Random mirroring on ``flip_axes``, intensity scale ``1 ± s`` and shift ``± t`` (z-score units),
    quarter turns in the last two axes (``rot90``) and elastic deformation (``elastic``)."""

    flip_axes: list[int] = Field(default_factory=list)
    flip_prob: float = Field(0.5, ge=0, le=1)
    intensity_scale: float = Field(0.1, ge=0)
    intensity_shift: float = Field(0.1, ge=0)
    rot90: bool = False
    elastic: Elastic | None = None


class Training(_Strict):
    """``epochs`` × ``steps_per_epoch`` optimiser steps of ``batch_size`` patches (AdamW, cosine decay)."""

    epochs: int = Field(ge=1)
    steps_per_epoch: int = Field(25, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    foreground_oversample: float = Field(0.33, ge=0, le=1)
    seed: int = 0
    patience: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    amp: Literal["auto", "bf16", "off"] = "auto"


class Instances(_Strict):
    """How instances are cut from a predicted interior/boundary map (:mod:`medlens.segment.instances`)."""

    markers: Literal["hmaxima", "hmaxima_relative", "components"] = "hmaxima_relative"
    h: float | None = Field(None, ge=0)
    smooth: float = Field(1.0, ge=0)
    min_size: int = Field(8, ge=0)
    diameter_range: list[float] | None = None

    @field_validator("diameter_range")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not (len(value) == 2 and 0 < value[0] <= value[1]):
            raise ValueError(f"must be null or [low, high] with 0 < low <= high, got {value!r}")
        return value


class Inference(_Strict):
    """Sliding-window overlap and batch, mirror (``tta_flips``) and square-symmetry (``tta_rotations``)
    test-time augmentation, and for instance mode how instances are cut."""

    overlap: float = Field(0.5, ge=0, lt=1)
    tta_flips: bool = True
    tta_rotations: bool = False
    sw_batch_size: int = Field(4, ge=1)
    instances: Instances | None = None


class PostprocessingTrial(_Strict):
    """One candidate step tried on the cross-validation predictions: its settings, the mean Dice with it
    (on top of the steps kept before it) and whether it was kept."""

    step: dict[str, Any]
    dice: float
    kept: bool


class PostprocessingDecision(_Strict):
    """What ``segment cv`` measured: mean Dice over its ``n_cases`` validation predictions without
    post-processing (``dice_before``), each trial, and the mean Dice with the kept steps (``dice_after``)."""

    folds: int = Field(ge=2)
    n_cases: int = Field(ge=1)
    dice_before: float
    dice_after: float
    trials: list[PostprocessingTrial] = Field(default_factory=list)


class Postprocessing(_Strict):
    """Steps applied to the arg-max label map (:func:`medlens.segment.postprocess.postprocess`), in this
    order: drop components under ``min_component_size`` voxels, keep components (``keep_component``:
    ``largest`` keeps ``keep_count`` of them, ``central`` the one nearest the centre), fill holes.

    ``candidates`` are the steps ``segment cv`` tries (derived from the training masks); ``decision``
    records what it measured when it chose the applied steps.
    """

    min_component_size: int = Field(0, ge=0)
    keep_component: Literal["largest", "central"] | None = None
    keep_count: int = Field(1, ge=1)
    fill_holes: bool = False
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    decision: PostprocessingDecision | None = None

    def steps(self) -> dict[str, Any]:
        """The applied settings alone (what :func:`medlens.segment.postprocess.postprocess` reads)."""
        return {k: getattr(self, k) for k in POSTPROCESSING_KEYS}


class SegmentationPlan(_Strict):
    """A whole segmentation plan (see the module docstring)."""

    version: Literal[2] = PLAN_VERSION
    dataset: DatasetInfo
    fingerprint: Fingerprint
    normalization: Normalization
    target_spacing: list[float]
    patch_size: list[int]
    batch_size: int = Field(ge=1)
    network: Network
    loss: Literal["ce", "dice", "dicece"] = "dicece"
    augmentations: Augmentations
    training: Training
    inference: Inference = Field(default_factory=Inference)
    postprocessing: Postprocessing = Field(default_factory=Postprocessing)
    reasons: dict[str, str] = Field(default_factory=dict)
    _source: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _geometry(self) -> "SegmentationPlan":
        dims = self.fingerprint.dims
        for key in ("target_spacing", "patch_size"):
            if len(getattr(self, key)) != dims:
                raise ValueError(f"{key} must have {dims} values, has {getattr(self, key)}")
        if any(s <= 0 for s in self.target_spacing):
            raise ValueError(f"target_spacing must be positive, got {self.target_spacing}")
        step = 2 ** self.network.depth
        if self.network.name == "unet" and any(p < 1 or p % step for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by 2**network.depth = {step}")
        bad = [a for a in self.augmentations.flip_axes if not 0 <= a < dims]
        if bad:
            raise ValueError(f"augmentations.flip_axes {bad} must lie in 0..{dims - 1}")
        return self

    @property
    def source(self) -> str:
        """Where the plan was read from (for messages), or ``plan``."""
        return self._source or "plan"

    @property
    def dims(self) -> int:
        return self.fingerprint.dims

    @property
    def n_classes(self) -> int:
        return self.dataset.n_classes

    @property
    def patch(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.patch_size)

    def copy_with(self, **changes: Any) -> "SegmentationPlan":
        """A validated deep copy with top-level fields or dotted paths replaced:
        ``plan.copy_with(**{"training.seed": 1})``."""
        data = self.to_dict()
        for dotted, value in changes.items():
            node, *path = dotted.split(".")
            target = data
            for key in [node, *path][:-1]:
                target = target[key]
            target[[node, *path][-1]] = value
        plan = parse_plan(data, self.source)
        plan._source = self._source
        return plan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping (what ``plan.json`` holds)."""
        return json.loads(self.model_dump_json())


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"]).replace(".[", "[")
        lines.append(f"{source}: field `{field or '<root>'}`: {item['msg']}")
    return "\n".join(lines)


def upgrade(mapping: dict[str, Any], source: str = "plan") -> dict[str, Any]:
    """A plan mapping of an older version as a mapping of :data:`PLAN_VERSION` (see the module docstring).

    Raises :class:`ConfigError` naming the version for a version this release cannot read.
    """
    version = mapping.get("version")
    if version == PLAN_VERSION:
        return mapping
    if version == 1:
        data = json.loads(json.dumps(mapping))
        inference = data.get("inference", {})
        data["postprocessing"] = {k: inference.pop(k) for k in POSTPROCESSING_KEYS if k in inference}
        data["version"] = PLAN_VERSION
        return data
    raise ConfigError(f"{source}: field `version`: plan version {version!r} is not one this medlens reads "
                      f"(1 or {PLAN_VERSION}); make a new plan with `medlens segment plan DATA`")


def parse_plan(mapping: Any, source: str = "plan") -> SegmentationPlan:
    """Validate a mapping as a plan (upgrading version 1); errors name ``source`` and the field."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: a plan must be a JSON object, got {type(mapping).__name__}")
    try:
        plan = SegmentationPlan.model_validate(upgrade(mapping, source))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    plan._source = source
    return plan


def load_plan(path: str | Path) -> SegmentationPlan:
    """Read and validate a ``plan.json`` (or the one in a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_FILE
    try:
        mapping = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UnreadableFileError(path, "no plan.json here; run `medlens segment plan DATA` first") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return parse_plan(mapping, str(path))


def save_plan(plan: SegmentationPlan, path: str | Path) -> Path:
    """Write ``plan`` as indented JSON (temporary name, then rename)."""
    return write_text_atomically(path, json.dumps(plan.to_dict(), indent=2))


def check_dataset(plan: SegmentationPlan, data: str | Path) -> None:
    """Raise :class:`ConfigError` when ``data`` is not the dataset the plan was made from."""
    from medlens.segment.fingerprint import dataset_id

    found = dataset_id(data)
    if found != plan.dataset.dataset_id:
        raise ConfigError(
            f"{plan.source}: this plan was made for the dataset {plan.dataset.path} "
            f"(id {plan.dataset.dataset_id[:12]}), not {data} (id {found[:12]}); run "
            f"`medlens segment plan {data}` to make a plan for it")


def check_image(plan: SegmentationPlan, array: np.ndarray, source: Any) -> None:
    """Raise :class:`ConfigError` when an image's dimensionality does not fit the plan."""
    if array.ndim - 1 != plan.dims:
        raise ConfigError(f"{source}: a {array.ndim - 1}D image, but the plan ({plan.source}) is for "
                          f"{plan.dims}D data")
