"""``svm`` and ``logistic``: scikit-learn classifiers on selected tabular features.

Both standardise their inputs inside a :class:`~sklearn.pipeline.Pipeline` (``StandardScaler`` fitted
on the training rows only), so cross-validation never leaks test statistics.

``svm`` is an RBF-kernel support vector machine, ``K(x, x') = exp(-gamma ||x - x'||²)`` (Cortes &
Vapnik, 1995). Its probabilities come from Platt scaling (Platt, 1999): a sigmoid
``P(y=1|f) = 1 / (1 + exp(A f + B))`` of the decision value ``f``, fitted by
``CalibratedClassifierCV(SVC(), method="sigmoid", ensemble=False)`` on out-of-fold decision values of
a stratified ``calibration_cv``-fold split of the training rows (seeded with ``seed``); the SVM itself is
then refitted on all training rows. (scikit-learn 1.9 deprecates ``SVC(probability=True)`` for exactly
this; multi-class probabilities are one-vs-rest sigmoids, normalised.) Optionally ``C`` and ``gamma``
are chosen first by a stratified grid search on the training rows (group-aware when the data has groups).

``logistic`` is L2-regularised logistic regression, ``P(y=1|x) = 1 / (1 + exp(-(w·x + b)))``: the
one-feature reference row (nodule diameter alone) of a study.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, ModelError
from medlens.models.base import FEATURES, Capabilities, ModelState
from medlens.models.features import select_features
from medlens.models.registry import register

DEFAULT_SVM_GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.1]}


def _full_proba(pipeline: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``(N, n_classes)`` probabilities, with zero columns for classes absent from training."""
    proba = np.zeros((len(x), n_classes))
    proba[:, pipeline.classes_] = pipeline.predict_proba(x)
    return proba / proba.sum(axis=1, keepdims=True)


class _FeatureClassifier(ABC):
    """Shared fit/predict of a scaler + scikit-learn classifier pipeline on selected features."""

    name = ""
    features: str | Sequence[str]
    pipeline_: Pipeline | None = None

    @abstractmethod
    def _pipeline(self) -> Pipeline:
        """The unfitted scaler + classifier pipeline."""

    def _search(self, pipeline: Pipeline, train: ArrayDataset, x: np.ndarray) -> Pipeline:
        return pipeline.fit(x, train.labels)

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "_FeatureClassifier":
        """Fit on ``train``'s selected features; ``val`` is not needed and is ignored."""
        self.n_classes_ = train.n_classes
        x = select_features(train, self.features)
        self.pipeline_ = self._search(self._pipeline(), train, x)
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` class probabilities; rows sum to 1."""
        if self.pipeline_ is None:
            raise ModelError(f"models.{self.name}: predict_proba called before fit")
        return _full_proba(self.pipeline_, select_features(data, self.features), self.n_classes_)

    # ------------------------------------------------------------------ the model contract
    capabilities = Capabilities(inputs=frozenset({FEATURES}))
    """Tabular features in; no explanation, no ONNX graph."""

    #: Fitted attributes besides the pipeline that describe the model (kept in its state).
    _described: tuple[str, ...] = ()

    def state(self) -> ModelState:
        """The fitted scaler + classifier pipeline (a scikit-learn object, written with skops)."""
        if self.pipeline_ is None:
            raise ModelError(f"models.{self.name}: the model is not fitted")
        meta = {"n_classes": int(self.n_classes_), **{k: getattr(self, k) for k in self._described}}
        return ModelState(meta=meta, estimators={"pipeline": self.pipeline_})

    def load_state(self, state: ModelState) -> "_FeatureClassifier":
        self.n_classes_ = int(state.meta["n_classes"])
        for key in self._described:
            setattr(self, key, state.meta[key])
        self.pipeline_ = state.estimators["pipeline"]
        return self


@register("svm")
class SVMClassifier(_FeatureClassifier):
    """RBF support vector machine with Platt-scaled probabilities.

    Parameters
    ----------
    C : float
        Soft-margin penalty.
    gamma : float or "scale"
        RBF width; ``"scale"`` is ``1 / (F var(X))``.
    features : "all" or list of str
        Feature names or glob patterns.
    class_weight : {"balanced", None}
    grid : bool or dict, optional
        ``True`` searches :data:`DEFAULT_SVM_GRID`; a dict ``{"C": [...], "gamma": [...]}`` searches
        that grid; the search is ``cv``-fold stratified (grouped when the data has groups) on the
        training rows only, scored by AUC (binary) or accuracy.
    cv : int
        Folds of the grid search.
    calibration_cv : int
        Folds of the Platt calibration.
    seed : int
    """

    name = "svm"
    _described = ("best_params_", "n_support_vectors_")

    def __init__(self, C: float = 1.0, gamma: float | str = "scale", features: str | Sequence[str] = "all",
                 class_weight: str | None = None, grid: bool | dict[str, list[Any]] | None = None, cv: int = 3,
                 calibration_cv: int = 5, seed: int = 0):
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"models.svm.class_weight: unknown {class_weight!r}; use 'balanced' or None")
        if isinstance(grid, dict) and not set(grid) <= {"C", "gamma"}:
            raise ConfigError(f"models.svm.grid: only 'C' and 'gamma' can be searched, got {sorted(grid)}")
        self.C = C
        self.gamma = gamma
        self.features = features
        self.class_weight = class_weight
        self.grid = grid
        self.cv = cv
        self.calibration_cv = calibration_cv
        self.seed = seed

    def _pipeline(self) -> Pipeline:
        svc = SVC(kernel="rbf", C=self.C, gamma=self.gamma, class_weight=self.class_weight)
        folds = StratifiedKFold(self.calibration_cv, shuffle=True, random_state=self.seed)
        platt = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False)
        return Pipeline([("scale", StandardScaler()), ("svc", platt)])

    def _search(self, pipeline: Pipeline, train: ArrayDataset, x: np.ndarray) -> Pipeline:
        if not self.grid:
            self.best_params_ = {"C": self.C, "gamma": self.gamma}
            fitted = pipeline.fit(x, train.labels)
        else:
            grid = DEFAULT_SVM_GRID if self.grid is True else self.grid
            grouped = train.groups is not None
            splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(self.cv, shuffle=True,
                                                                              random_state=self.seed)
            search = GridSearchCV(pipeline, {f"svc__estimator__{k}": list(v) for k, v in grid.items()}, cv=splitter,
                                  scoring="roc_auc" if self.n_classes_ == 2 else "accuracy")
            search.fit(x, train.labels, groups=train.groups if grouped else None)
            self.best_params_ = {k.removeprefix("svc__estimator__"): v for k, v in search.best_params_.items()}
            fitted = search.best_estimator_
        svm = fitted.named_steps["svc"].calibrated_classifiers_[0].estimator
        self.n_support_vectors_ = int(svm.n_support_.sum())
        return fitted


@register("logistic")
class LogisticModel(_FeatureClassifier):
    """L2-regularised logistic regression (multinomial for more than two classes).

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    features : "all" or list of str
        Feature names or glob patterns, e.g. ``["diameter_mm"]`` for the one-feature reference.
    class_weight : {"balanced", None}
    seed : int
    """

    name = "logistic"
    _described = ("n_parameters",)

    def __init__(self, C: float = 1.0, features: str | Sequence[str] = "all", class_weight: str | None = None,
                 seed: int = 0):
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"models.logistic.class_weight: unknown {class_weight!r}; use 'balanced' or None")
        self.C = C
        self.features = features
        self.class_weight = class_weight
        self.seed = seed

    def _pipeline(self) -> Pipeline:
        model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=2000, random_state=self.seed)
        return Pipeline([("scale", StandardScaler()), ("logistic", model)])

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "LogisticModel":
        super().fit(train, val)
        model = self.pipeline_.named_steps["logistic"]
        self.n_parameters = int(model.coef_.size + model.intercept_.size)
        return self
