"""Linear and kernel probes of a feature matrix, scored like a study.

A probe is the registry's ``logistic`` (L2 logistic regression) or ``svm`` (RBF SVM with Platt
probabilities) model, each standardising its inputs inside the fold. :func:`probe_cv` scores a feature
matrix under stratified k-fold cross-validation (:func:`medlens.evaluate.splits.kfold_splits`, grouped
when ``groups`` are given) with :func:`medlens.evaluate.metrics.classification_metrics` per fold and
:func:`medlens.evaluate.stats.summarize` over folds: the same protocol functions a study uses.
:func:`probe_holdout` fits on one set and scores another (the label-budget comparison).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.data.dataset import ArrayDataset
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.splits import kfold_splits
from medlens.evaluate.stats import summarize
from medlens.errors import ConfigError, GeometryError
from medlens.models.registry import build

PROBES = ("logistic", "svm")
SUMMARY_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "f1")


def _dataset(features: np.ndarray, labels: np.ndarray, n_classes: int, groups=None) -> ArrayDataset:
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if features.ndim != 2 or len(features) != len(labels):
        raise GeometryError(f"probe: features must be (N, F) with N = {len(labels)} labels, got {features.shape}")
    if not np.isfinite(features).all():
        raise ConfigError("probe: features hold NaN or infinite values")
    # no pixels: the probes read ``features`` only
    return ArrayDataset(images=np.empty((len(labels), 0), np.float32), labels=labels, features=features,
                        groups=groups, meta={"labels": [str(c) for c in range(n_classes)]})


def _model(probe: str, seed: int):
    if probe not in PROBES:
        raise ConfigError(f"probe: unknown {probe!r}; use one of {', '.join(PROBES)}")
    return build(probe, class_weight="balanced", seed=seed)


def probe_holdout(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  probe: str = "logistic", labels: Sequence[str] | None = None, seed: int = 0) -> dict:
    """Fit ``probe`` on the training features, return :func:`classification_metrics` on the test ones."""
    n_classes = len(labels) if labels else int(max(np.max(train_y), np.max(test_y))) + 1
    model = _model(probe, seed).fit(_dataset(train_x, train_y, n_classes))
    proba = model.predict_proba(_dataset(test_x, test_y, n_classes))
    return classification_metrics(np.asarray(test_y).reshape(-1), proba, labels)


def probe_cv(features: np.ndarray, labels: np.ndarray, probe: str = "logistic", k: int = 5, seed: int = 0,
             groups: np.ndarray | None = None, names: Sequence[str] | None = None) -> dict:
    """Stratified k-fold score of a probe on ``features``.

    Returns
    -------
    dict
        ``{"probe", "k", "seed", "summary": {metric: summarize(...)}, "folds": [{fold, n_test, metrics}]}``.
    """
    y = np.asarray(labels).reshape(-1)
    n_classes = len(names) if names else int(y.max()) + 1
    data = _dataset(features, y, n_classes, groups)
    folds = []
    for fold, (train, test) in enumerate(kfold_splits(y, groups=groups, k=k, seed=seed)):
        model = _model(probe, seed).fit(data.subset(train))
        metrics = classification_metrics(y[test], model.predict_proba(data.subset(test)), names)
        folds.append({"fold": fold, "n_test": int(len(test)), **{m: float(metrics[m]) for m in SUMMARY_KEYS}})
    summary = {m: summarize([f[m] for f in folds]) for m in SUMMARY_KEYS}
    return {"probe": probe, "k": k, "seed": seed, "summary": summary, "folds": folds}
