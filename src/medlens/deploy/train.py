"""Train one model of a study config on its data and write a model bundle.

The model is fitted once on the configured data; what a user of the bundle needs to trust it is
measured on data the fit did not use:

* **calibration**: with ``calibrate=True`` a temperature ``T`` is fitted on the validation
  predictions (Guo et al. 2017, :func:`medlens.evaluate.calibration.temperature_scale`) and stored;
  ``medlens predict`` applies it, so the bundle's probabilities are the calibrated ones;
* **operating point**: the decision threshold is a fixed number, or chosen on the (calibrated)
  validation predictions for a target sensitivity or for Youden's J
  (:mod:`medlens.evaluate.operating_points`);
* **metrics**: with an official test split, AUC, sensitivity, specificity, accuracy and ECE at the
  stored threshold on that split; without one only the validation figures are recorded (the
  validation set chose the threshold, so they are optimistic, and the card says so).

Every bundle carries a model card (``model_card.md``, :func:`medlens.report.model_card.render_model_card`).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import StudyConfig
from medlens.errors import ConfigError

TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class OperatingPoint:
    """How the decision threshold is set: ``fixed`` (``value`` is the threshold), ``youden``, or
    ``sensitivity`` (``value`` is the target sensitivity on validation data)."""

    rule: str
    value: float | None = None

    def describe(self) -> str:
        if self.rule == "fixed":
            return f"fixed threshold {self.value:g}"
        if self.rule == "youden":
            return "Youden's J (SE + SP − 1) maximised on validation data"
        return f"sensitivity ≥ {self.value:g} on validation data"


def parse_operating_point(text: str) -> OperatingPoint:
    """``"0.5"`` (a fixed threshold), ``"youden"`` or ``"sensitivity:0.95"``."""
    text = text.strip().lower()
    if text == "youden":
        return OperatingPoint("youden")
    match = re.fullmatch(r"(?:sensitivity|se)[:=]([0-9.]+)", text)
    try:
        if match:
            value = float(match.group(1))
            if not 0 < value <= 1:
                raise ValueError
            return OperatingPoint("sensitivity", value)
        value = float(text)
        if not 0 < value < 1:
            raise ValueError
        return OperatingPoint("fixed", value)
    except ValueError:
        raise ConfigError(f"--threshold: expected a number in (0, 1), 'youden' or 'sensitivity:S' with S in (0, 1], "
                          f"got {text!r}") from None


def choose_model(config: StudyConfig, model_id: str | None):
    """The config entry ``model_id``, or by default the first image network (a model whose capabilities include
    Grad-CAM, such as ``cnn``), else the first entry."""
    from medlens.models.base import GRADCAM_METHODS
    from medlens.models.registry import build

    if model_id is not None:
        for entry in config.models:
            if entry.key == model_id:
                return entry
        raise ConfigError(f"--model: no model with id {model_id!r}; the config has "
                          f"{', '.join(m.key for m in config.models)}")
    return next((m for m in config.models if GRADCAM_METHODS[0] in build(m.name, **m.params).capabilities.explain),
                config.models[0])


def without_groups(data, groups: list[str]):
    """``data`` less the samples of ``groups``; every group must exist (a typo would silently train on it)."""
    if data.groups is None:
        raise ConfigError("--exclude-group: this dataset has no patient groups")
    missing = sorted(set(groups) - set(np.unique(data.groups).tolist()))
    if missing:
        raise ConfigError(f"--exclude-group: no samples of {', '.join(missing)} in the dataset")
    return data.subset(np.flatnonzero(~np.isin(data.groups, groups)))


def _threshold(point: OperatingPoint, y_val: np.ndarray, p_val: np.ndarray, binary: bool) -> float:
    from medlens.evaluate.operating_points import threshold_for_sensitivity, youden_threshold

    if point.rule == "fixed":
        return float(point.value)
    if not binary:
        raise ConfigError(f"--threshold {point.rule}: operating points need a binary task; this one is multiclass")
    if point.rule == "youden":
        return youden_threshold(y_val, p_val[:, 1])
    return threshold_for_sensitivity(y_val, p_val[:, 1], point.value)


def _scores(y: np.ndarray, p: np.ndarray, labels, threshold: float, n_bins: int) -> dict[str, Any]:
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.protocol import ece
    from medlens.files import json_ready

    scores = classification_metrics(y, p, labels=labels, threshold=threshold)
    out = {k: json_ready(scores[k]) for k in ("auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy")
           if k in scores}
    out["ece"] = ece(y, p, n_bins)
    out["n"] = int(len(y))
    return out


def train_bundle(config: StudyConfig, out: Path, model_id: str | None = None, *, quick: bool = False,
                 max_samples: int | None = None, threshold: float | str | OperatingPoint = 0.5,
                 calibrate: bool = False, quiet: bool = False,
                 exclude_groups: list[str] | None = None, onnx: bool = False, resume: bool = False,
                 keep_identifiers: bool = False) -> dict[str, Any]:
    """Train one model of ``config`` and write its bundle into ``out``.

    With the dataset's official split the model trains on ``train``, stops early on ``val`` (which
    also fits the temperature and the operating point) and is scored on ``test``. Without one it
    trains on all samples but an inner, patient-grouped validation split (early stopping,
    temperature, operating point); no test figures exist then. ``exclude_groups`` (patient ids) are
    left out entirely, e.g. to test the bundle on a patient it has never seen; the manifest lists them.

    Parameters
    ----------
    threshold : float, str or OperatingPoint
        A fixed threshold, or ``"youden"`` / ``"sensitivity:0.95"`` (see :func:`parse_operating_point`).
    calibrate : bool
        Fit and store a temperature on the validation predictions.
    onnx : bool
        Also export the model to ``model.onnx`` (models that can), checked on the validation images.
    resume : bool
        Continue the training of an earlier run into ``out`` that was killed (its resume checkpoints are kept
        beside ``out`` until the bundle is written, :func:`medlens.files.resume_folder`); the bundle equals an
        uninterrupted run's.
    keep_identifiers : bool
        Record absolute paths of the user's data in the manifest (default: not).

    Returns
    -------
    dict
        The bundle manifest.
    """
    from medlens.deploy.classifier import load_classifier, save_classifier
    from medlens.deploy.input_profile import fit_profile
    from medlens.engine.trainer import resumable, seed_everything
    from medlens.evaluate.calibration import temperature_scale
    from medlens.evaluate.protocol import ece
    from medlens.evaluate.splits import inner_validation_split
    from medlens.files import resume_folder
    from medlens.models.pipeline import build_pipeline
    from medlens.progress import silenced
    from medlens.study import load_dataset, model_params, subsample

    point = threshold if isinstance(threshold, OperatingPoint) else parse_operating_point(str(threshold))
    entry = choose_model(config, model_id)
    params = model_params(entry, quick, config.seed)
    model = build_pipeline(entry.name, params, config.features)
    if onnx and not model.capabilities.onnx:
        raise ConfigError(f"--onnx: model {entry.key} ({entry.name}) does not export to ONNX; only models whose "
                          "capabilities say so (image networks such as cnn) do")
    progress_folder = resume_folder(out, resume)
    seed_everything(config.seed)
    data = load_dataset(config)
    if exclude_groups:
        data = without_groups(data, exclude_groups)
    if max_samples:
        data = subsample(data, max_samples, config.seed)
    official = data.split is not None and {"train", "val", "test"} <= set(np.unique(data.split))
    if official:
        train_idx, val_idx = np.flatnonzero(data.split == "train"), np.flatnonzero(data.split == "val")
        protocol = "trained on the official train split, early stopping, calibration and threshold on val, scored on test"
    else:
        inner, held = inner_validation_split(data.labels, data.groups, fraction=config.protocol.inner_val_fraction,
                                             seed=config.seed)
        train_idx, val_idx = inner, held
        protocol = (f"trained on all samples but a {config.protocol.inner_val_fraction:.0%} "
                    f"{'patient-grouped ' if data.groups is not None else ''}validation split (early stopping, "
                    "calibration, threshold); no held-out test set")
    val = data.subset(val_idx)
    with silenced(quiet), resumable(progress_folder):
        model.fit(data.subset(train_idx), val)
    p_val_raw = np.asarray(model.predict_proba(val), dtype=np.float64)
    temperature = None
    p_val = p_val_raw
    if calibrate:
        p_val, temperature = temperature_scale(p_val_raw, val.labels, p_val_raw, bounds=TEMPERATURE_BOUNDS)
    warnings = []
    if temperature is not None and not TEMPERATURE_BOUNDS[0] * 1.01 < temperature < TEMPERATURE_BOUNDS[1] * 0.99:
        warnings.append(f"The fitted temperature ({temperature:.3g}) sits at its search bound "
                        f"{TEMPERATURE_BOUNDS}: the validation predictions carry little information, and the "
                        "calibrated probabilities are close to constant.")
    binary = data.n_classes == 2
    chosen = _threshold(point, val.labels, p_val, binary)
    labels = data.meta.get("labels")
    n_bins = config.protocol.ece_bins
    validation = {**_scores(val.labels, p_val, labels, chosen, n_bins),
                  "ece_uncalibrated": ece(val.labels, p_val_raw, n_bins)}
    metrics: dict[str, Any] = {}
    if official:
        from medlens.evaluate.calibration import apply_temperature, probability_logits

        test = data.subset(np.flatnonzero(data.split == "test"))
        p_test = np.asarray(model.predict_proba(test), dtype=np.float64)
        if temperature is not None:
            p_test = apply_temperature(probability_logits(p_test), temperature)
        metrics = {"split": "official test", **_scores(test.labels, p_test, labels, chosen, n_bins)}
    meta = {**data.meta, "excluded_groups": sorted(exclude_groups or []),
            "class_counts": np.bincount(data.labels, minlength=data.n_classes).tolist(), "n_samples": len(data)}
    save_classifier(model, params, config, meta, out, model_id=entry.key, metrics=metrics, threshold=chosen,
                    image_shape=tuple(data.images.shape[1:]), temperature=temperature,
                    training={"protocol": protocol, "operating_point": point.describe(), "validation": validation,
                              "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "warnings": warnings},
                    input_profile=fit_profile(data.images[train_idx], data.meta.get("modality")),
                    onnx_images=val.images if onnx else None, keep_identifiers=keep_identifiers)
    shutil.rmtree(progress_folder, ignore_errors=True)
    return load_classifier(out).manifest
