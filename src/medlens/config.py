"""A study as a validated object: YAML in, :class:`StudyConfig` out.

Every field is checked before any training starts; an unknown model, dataset or feature set, or a bad
value, raises :class:`~medlens.errors.ConfigError` whose message names the field (``models[1].name``)
and the file. A number that is NaN or infinite (YAML ``.nan``, ``.inf``) is refused anywhere in the file,
free-form ``params`` included (``models[0].params.lr``), before any data is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medlens.errors import ConfigError, MissingPathError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    """Which dataset and how it is turned into arrays.

    ``builder`` names a dataset builder (see :mod:`medlens.data.builders`); ``name`` is the catalogue
    name of the files; ``path`` an explicit location that wins over ``MEDLENS_DATA``.
    """

    builder: str
    name: str
    path: Path | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class GaborConfig(_Strict):
    """A Gabor filter bank whose pooled statistics become features (``gabor_*``)."""

    wavelengths: list[float] = Field(default_factory=lambda: [4.0, 8.0])
    orientations: int = Field(4, ge=1, le=16)
    gamma: float = Field(0.5, gt=0)
    bandwidth: float = Field(1.0, gt=0)
    inside_mask: bool = False

    @field_validator("wavelengths")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or min(value) < 2:
            raise ValueError("needs at least one wavelength, each >= 2 pixels (the Nyquist limit)")
        return value


class FeaturesConfig(_Strict):
    """Tabular features computed once for the whole dataset (unsupervised, so no fold can leak)."""

    gabor: GaborConfig | None = None


class ProtocolConfig(_Strict):
    """How models are scored.

    ``kfold``: stratified k-fold, grouped by ``group_by`` where the data has groups (no patient in
    both train and test). ``official``: train on the published train split, select on its val
    split, report on its test split (repeated over ``repeats`` seeds).

    ``threshold``: the decision threshold of the reported SE/SP/AR (binary tasks).
    ``calibration``: ``temperature`` fits one temperature per fold on the inner validation predictions
    (binary: on logit p; multiclass: on log p) and applies it to that fold's test probabilities; the
    study reports the ECE before and after. ``none`` reports the ECE of the raw probabilities only.
    ``ece_bins``: equal-width bins of the expected calibration error.
    ``target_sensitivity``: the operating point chosen per fold on the validation predictions as the
    largest threshold reaching this sensitivity (reported with Youden's J point; binary tasks).
    """

    kind: Literal["kfold", "official"] = "kfold"
    folds: int = Field(10, ge=2, le=50)
    group_by: Literal["patient", "none"] = "patient"
    inner_val_fraction: float = Field(0.15, gt=0, lt=0.5)
    repeats: int = Field(1, ge=1, le=20)
    seed: int = 0
    threshold: float = Field(0.5, gt=0, lt=1)
    calibration: Literal["none", "temperature"] = "temperature"
    ece_bins: int = Field(10, ge=2, le=100)
    target_sensitivity: float = Field(0.95, gt=0, le=1)


class AugmentConfig(_Strict):
    """Synthetic training images from a trained conditional GAN (``medlens synth train``).

    Only the training part of each fold is augmented, never its validation or test part. Train the
    GAN on data that excludes every test sample (e.g. the official train split), or k-fold leaks.
    """

    kind: Literal["gan"] = "gan"
    checkpoint: Path
    n_per_class: int = Field(100, ge=1)


class ModelConfig(_Strict):
    """One row of the comparison: a registered model with its parameters.

    ``id`` is the name the model gets in tables (defaults to ``name``); several entries may share a
    ``name`` with different parameters. ``seeds``: the model is cross-validated once per training seed
    (the entry's seed, +1, ...); its figures are the mean over seeds, with their spread across seeds.
    """

    name: str
    id: str | None = None
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    quick_params: dict[str, Any] = Field(default_factory=dict)
    seeds: int = Field(1, ge=1, le=20)

    @property
    def key(self) -> str:
        return self.id or self.name


class ReferenceConfig(_Strict):
    """Published figures shown beside the models (not computed here)."""

    name: str
    sensitivity: float | None = None
    specificity: float | None = None
    accuracy: float | None = None
    auc: float | None = None
    note: str = ""


class QuickConfig(_Strict):
    """What ``--quick`` changes: fewer folds and a subsample, for a smoke run in under two minutes."""

    folds: int = Field(3, ge=2)
    max_samples: int | None = Field(None, ge=20)
    models: list[str] | None = None


class StudyConfig(_Strict):
    """A whole study: data, features, protocol, models, and what to compare against."""

    study: str
    title: str = ""
    description: str = ""
    data: DataConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    models: list[ModelConfig]
    augment: AugmentConfig | None = None
    reference: ReferenceConfig | None = None
    quick: QuickConfig = Field(default_factory=QuickConfig)
    seed: int = 0
    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> "StudyConfig":
        keys = [m.key for m in self.models]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"models: ids must be unique, repeated: {duplicates} (set `id:` on each)")
        if not self.models:
            raise ValueError("models: the study names no model")
        return self


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"])
        field = field.replace(".[", "[")
        lines.append(f"{source}: field `{field or '<root>'}`: {item['msg']}")
    return "\n".join(lines)


def _leaves(value: Any, field: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, value) of every scalar in nested mappings and lists: ``models[0].params.lr``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{field}[{i}]")
    else:
        yield field, value


def reject_non_finite(mapping: Any, source: str = "<config>") -> None:
    """:class:`ConfigError` naming the first field whose value is a NaN or infinite number.

    Used on every YAML config medlens reads (studies, ``medlens synth`` configs), so that ``lr: .nan``
    fails at validation and not after the data is loaded or, worse, trains a network on NaN.
    """
    for field, value in _leaves(mapping):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: field `{field or '<root>'}`: {value} is not a finite number")


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (safe loader: plain data only); :class:`ConfigError` for a file that is
    not UTF-8 text or not valid YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a date 2024-02-30
        raise ConfigError(f"{path}: a YAML value cannot be read ({type(exc).__name__}: {exc})") from exc


def parse_config(mapping: dict[str, Any], source: str = "<config>") -> StudyConfig:
    """Validate a mapping as a study, then check names against the registries."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: a study config must be a YAML mapping, got {type(mapping).__name__}")
    reject_non_finite(mapping, source)
    try:
        config = StudyConfig.model_validate(mapping)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    _check_names(config, source)
    return config


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(path, "study config file")
    mapping = read_yaml(path)
    config = parse_config(mapping, str(path))
    config.source = path
    return config


def _check_names(config: StudyConfig, source: str) -> None:
    """Unknown builders, datasets and models fail here, before any data is read."""
    from medlens.data import builders, catalog
    from medlens.models import registry

    if config.data.builder not in builders.available():
        raise ConfigError(
            f"{source}: field `data.builder`: unknown builder {config.data.builder!r}; "
            f"available: {', '.join(builders.available())}"
        )
    try:
        catalog.get(config.data.name)
    except Exception as exc:  # DatasetError lists close names
        raise ConfigError(f"{source}: field `data.name`: {exc}") from exc
    known = registry.available()
    for i, model in enumerate(config.models):
        if model.name not in known:
            raise ConfigError(
                f"{source}: field `models[{i}].name`: unknown model {model.name!r}; available: {', '.join(known)}"
            )
    if config.quick.models:
        keys = {m.key for m in config.models}
        unknown = [k for k in config.quick.models if k not in keys]
        if unknown:
            raise ConfigError(f"{source}: field `quick.models`: {unknown} are not ids of `models`")


def default_config_path() -> Path:
    """The default study: CT lung nodules (LIDC-IDRI), shipped with the package."""
    return Path(__file__).parent / "configs" / "lidc_nodules.yaml"
