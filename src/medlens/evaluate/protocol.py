"""The cross-validation protocol as a library: folds, the per-fold loop, and what each fold yields.

A protocol scores a model by fitting it on part of the data and predicting data it never saw:

* **folds** (:func:`make_folds`): stratified k-fold grouped by patient (no patient on both sides), each
  with an inner validation split taken from its training part (model selection, calibration, operating
  points); or the dataset's official train/val/test split, repeated over seeds.
* **the loop** (:func:`cross_validate`): per fold, fit a fresh model on the training part with the inner
  validation split, predict the validation and test parts, and derive from the validation predictions
  alone what the test predictions are then judged with:

  - *calibration*: one temperature T fitted on the validation predictions (binary: on logit p,
    multiclass: on log p; Guo et al., ICML 2017, :func:`~medlens.evaluate.calibration.temperature_scale`)
    and applied to the fold's test probabilities. A validation split that lacks a class cannot fit T;
    the fold then keeps T = 1 and says so.
  - *operating points* (binary): thresholds for a target sensitivity and for Youden's J
    (:func:`~medlens.evaluate.operating_points.operating_points`), and the SE/SP they give on the test part.

Every fold's result is a :class:`FoldResult`; :class:`CrossValidation` gathers them into out-of-fold
arrays. Turning those into the figures a study reports (summaries over folds, pooled metrics, ECE with its
interval, subgroup metrics) is :mod:`medlens.evaluate.summaries`; writing them is :mod:`medlens.report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, MedlensError
from medlens.evaluate.calibration import expected_calibration_error, temperature_scale
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating_points import operating_points
from medlens.evaluate.splits import inner_validation_split, kfold_splits

#: Per-fold metrics of a classifier, in the order tables show them.
FOLD_METRICS = ("sensitivity", "specificity", "accuracy", "auc", "balanced_accuracy", "f1")


@dataclass
class Fold:
    """One evaluation round: indices into the dataset for training, model selection and testing."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int


def make_folds(data: ArrayDataset, protocol, k: int, seed: int) -> list[Fold]:
    """The outer evaluation rounds of ``protocol`` (a :class:`~medlens.config.ProtocolConfig`).

    Parameters
    ----------
    data : ArrayDataset
        Labels, and the patient ``groups`` and official ``split`` where the data has them.
    protocol : ProtocolConfig
        ``kind`` (``kfold`` or ``official``), ``group_by``, ``inner_val_fraction``, ``repeats`` and the
        split ``seed``.
    k : int
        Number of folds of a k-fold protocol.
    seed : int
        The study's training seed: every k-fold round trains with it; official repeat r with ``seed + r``.
    """
    if protocol.kind == "official":
        split = data.split
        if split is None:
            raise ConfigError("protocol.kind: 'official' needs a dataset that publishes train/val/test splits")
        parts = [np.flatnonzero(split == name) for name in ("train", "val", "test")]
        return [Fold(r, *parts, seed=seed + r) for r in range(protocol.repeats)]
    groups = data.groups if protocol.group_by == "patient" else None
    folds = []
    for i, (train, test) in enumerate(kfold_splits(data.labels, groups=groups, k=k, seed=protocol.seed)):
        inner_train, inner_val = inner_validation_split(
            data.labels[train], None if groups is None else groups[train],
            fraction=protocol.inner_val_fraction, seed=protocol.seed + i)
        folds.append(Fold(i, train[inner_train], train[inner_val], test, seed=seed))
    return folds


@dataclass
class FoldResult:
    """What one fold of :func:`cross_validate` yields.

    ``proba`` are the raw test probabilities ``(n_test, K)``; ``calibrated`` the temperature-scaled ones
    (None without calibration); ``row`` the fold's figures as ``results.json`` records them (metrics at
    the protocol's threshold, ECE, temperature, operating points).
    """

    fold: Fold
    proba: np.ndarray
    calibrated: np.ndarray | None
    temperature: float | None
    operating_points: dict[str, dict] | None
    row: dict[str, Any]
    seconds: float
    model: Any = None
    """The fitted model (None for a fold read back from a :class:`~medlens.evaluate.fold_store.FoldStore`)."""


@dataclass
class CrossValidation:
    """Every fold's result of one model, and the out-of-fold arrays over the whole dataset.

    ``oof`` and ``oof_calibrated`` are ``(N, K)`` with NaN rows for samples no fold tested; ``fold_of`` is
    each sample's test fold (-1 where never tested); ``thresholds`` maps each operating point to each
    sample's fold threshold (NaN where never tested or where the fold had none).
    """

    folds: list[FoldResult]
    oof: np.ndarray
    oof_calibrated: np.ndarray | None
    fold_of: np.ndarray
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    last_model: Any = None
    """The model fitted in the last fold (kept for its explanations)."""

    @property
    def train_seconds(self) -> float:
        return sum(result.seconds for result in self.folds)


def predict_checked(model, data: ArrayDataset, n_classes: int, name: str) -> np.ndarray:
    """``model.predict_proba(data)`` as float64, checked to be ``(len(data), n_classes)``."""
    proba = np.asarray(model.predict_proba(data), dtype=np.float64)
    if proba.shape != (len(data), n_classes):
        raise MedlensError(f"model {name}: predict_proba returned shape {proba.shape}, "
                           f"expected {(len(data), n_classes)}")
    return proba


def ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Expected calibration error of ``(N, K)`` probabilities: of the positive-class column for a binary
    task, else of the whole matrix (:func:`~medlens.evaluate.calibration.expected_calibration_error`)."""
    return expected_calibration_error(y, calibration_scores(p), n_bins)


def calibration_scores(p: np.ndarray) -> np.ndarray:
    """What the ECE reads: the positive-class column of a binary task, else the (N, K) matrix."""
    return p[:, 1] if p.shape[1] == 2 else p


def run_fold(model, data: ArrayDataset, fold: Fold, protocol, *, name: str = "model",
             augment: Callable[[ArrayDataset, Fold], ArrayDataset] | None = None) -> FoldResult:
    """Fit ``model`` (unfitted) on one fold's training part with its validation part, and score its test part
    (see the module docstring): the fold's :class:`FoldResult`, with the fitted model in ``result.model``."""
    n_classes = data.n_classes
    labels = data.meta.get("labels")
    n_bins = protocol.ece_bins
    train = data.subset(fold.train)
    if augment is not None:
        train = augment(train, fold)
    val = data.subset(fold.val)
    start = time.perf_counter()
    model.fit(train, val)
    seconds = time.perf_counter() - start
    y_test = data.labels[fold.test]
    proba = predict_checked(model, data.subset(fold.test), n_classes, name)
    scores = classification_metrics(y_test, proba, labels=labels, threshold=protocol.threshold)
    row = {"fold": fold.index, "n_train": len(train), "n_synthetic": int(train.meta.get("n_synthetic", 0)),
           "n_test": int(len(fold.test)), **{m: scores[m] for m in FOLD_METRICS},
           "ece": ece(y_test, proba, n_bins)}
    proba_val = predict_checked(model, val, n_classes, name) if len(fold.val) else None
    y_val = data.labels[fold.val]
    scaled, temperature = None, None
    if protocol.calibration == "temperature":
        if proba_val is not None and len(np.unique(y_val)) == n_classes:
            scaled, temperature = temperature_scale(proba_val, y_val, proba)
        else:  # documented fallback: no temperature can be fitted without every class; T = 1
            scaled, temperature = proba, 1.0
            row["calibration_note"] = "validation split lacks a class: temperature left at 1"
        row.update(temperature=temperature, ece_calibrated=ece(y_test, scaled, n_bins))
    points = None
    if n_classes == 2:
        if proba_val is None:
            proba_val, y_val = np.empty((0, 2)), np.empty(0, int)
        points = operating_points(y_val, proba_val, y_test, proba, target_sensitivity=protocol.target_sensitivity)
        row["operating_points"] = points
    return FoldResult(fold, proba, scaled, temperature, points, row, seconds, model=model)


def gather(results: list[FoldResult], n_samples: int, n_classes: int) -> CrossValidation:
    """The out-of-fold arrays of a model's fold results (see :class:`CrossValidation`)."""
    oof = np.full((n_samples, n_classes), np.nan)
    calibrated = any(r.calibrated is not None for r in results)
    oof_cal = np.full((n_samples, n_classes), np.nan) if calibrated else None
    fold_of = np.full(n_samples, -1)
    thresholds: dict[str, np.ndarray] = {}
    for result in results:
        test = result.fold.test
        oof[test] = result.proba
        fold_of[test] = result.fold.index
        if oof_cal is not None:
            oof_cal[test] = result.calibrated
        for point_name, point in (result.operating_points or {}).items():
            thresholds.setdefault(point_name, np.full(n_samples, np.nan))[test] = point["threshold"]
    return CrossValidation(results, oof, oof_cal, fold_of, thresholds, last_model=results[-1].model)


def cross_validate(make_model: Callable[[Fold], Any], data: ArrayDataset, folds: list[Fold], protocol, *,
                   name: str = "model", augment: Callable[[ArrayDataset, Fold], ArrayDataset] | None = None,
                   advance: Callable[[], None] | None = None) -> CrossValidation:
    """Fit and score a model on every fold (:func:`run_fold`), in turn.

    Parameters
    ----------
    make_model : callable
        ``make_model(fold)`` returns a fresh, unfitted model for that fold (seeded with ``fold.seed``).
    data : ArrayDataset
    folds : list of Fold
    protocol : ProtocolConfig
        ``threshold`` (decision threshold of the fold metrics), ``calibration`` (``temperature`` or
        ``none``), ``ece_bins`` and ``target_sensitivity``.
    name : str
        The model's name in error messages.
    augment : callable, optional
        ``augment(train, fold)`` returns the fold's training part with synthetic samples added (never its
        validation or test part).
    advance : callable, optional
        Called after each fold (a progress bar).
    """
    results = []
    for fold in folds:
        results.append(run_fold(make_model(fold), data, fold, protocol, name=name, augment=augment))
        if advance is not None:
            advance()
    return gather(results, len(data), data.n_classes)
