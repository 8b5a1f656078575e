"""``twostage``: unsupervised pre-classification followed by a supervised BP network.

Stage 1 clusters the standardised training features without labels, by k-means (Lloyd's algorithm,
k-means++ seeding) or a Gaussian mixture fitted by EM, into ``n_clusters`` initial classes. Stage 2 is
the BP network (:class:`~medlens.models.mlp.BPNetwork`) trained on the labels, with stage 1's output
appended to its inputs:

- ``"onehot"``: the one-hot cluster assignment (k-means nearest centre, GMM ``argmax_k p(k|x)``);
- ``"posterior"``: the GMM responsibilities ``p(k|x) = π_k N(x|μ_k,Σ_k) / Σ_j π_j N(x|μ_j,Σ_j)``
  (Gaussian mixture only);
- ``"distance"``: Euclidean distances ``||x - μ_k||`` to the centres (standardised feature space).

Both stages see the training rows only; test rows are mapped through the fitted stage 1.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, ModelError
from medlens.models.base import FEATURES, Capabilities, ModelState
from medlens.models.features import select_features, selected_feature_names
from medlens.models.mlp import BPNetwork
from medlens.models.registry import register

_FIRST = ("kmeans", "gmm")
_APPEND = ("onehot", "posterior", "distance")


@register("twostage")
class TwoStageModel:
    """Clustering pre-classification + BP network.

    Parameters
    ----------
    first : {"kmeans", "gmm"}
        The unsupervised first stage.
    n_clusters : int
    append : str or sequence of str
        What stage 1 adds to the BP network's inputs: any of ``"onehot"``, ``"posterior"`` (GMM only),
        ``"distance"``.
    features : "all" or list of str
        Feature names or glob patterns used by both stages.
    bp : dict, optional
        Parameters of the second-stage :class:`BPNetwork` (``hidden``, ``lr``, ``iterations``...).
    seed : int
    """

    name = "twostage"

    def __init__(self, first: str = "kmeans", n_clusters: int = 2, append: str | Sequence[str] = ("onehot", "distance"),
                 features: str | Sequence[str] = "all", bp: dict[str, Any] | None = None, seed: int = 0):
        append = (append,) if isinstance(append, str) else tuple(append)
        if first not in _FIRST:
            raise ConfigError(f"models.twostage.first: unknown {first!r}; use one of {', '.join(_FIRST)}")
        unknown = [a for a in append if a not in _APPEND]
        if unknown or not append:
            raise ConfigError(f"models.twostage.append: {unknown or 'nothing'}; use some of {', '.join(_APPEND)}")
        if "posterior" in append and first != "gmm":
            raise ConfigError("models.twostage.append: 'posterior' needs first='gmm' (k-means has no posteriors)")
        if n_clusters < 2:
            raise ConfigError(f"models.twostage.n_clusters: must be at least 2, got {n_clusters}")
        bp = dict(bp or {})
        for fixed in ("inputs", "features", "seed"):
            if fixed in bp:
                raise ConfigError(f"models.twostage.bp.{fixed}: set by the two-stage model, not in bp")
        self.first = first
        self.n_clusters = n_clusters
        self.append = append
        self.features = features
        self.bp = bp
        self.seed = seed
        self.network_: BPNetwork | None = None
        BPNetwork(**bp)  # fail early on a bad BP parameter

    def _stage1_outputs(self, x: np.ndarray) -> np.ndarray:
        z = self.scaler_.transform(x)
        assigned = self.clusterer_.predict(z)
        parts = []
        for kind in self.append:
            if kind == "onehot":
                parts.append(np.eye(self.n_clusters)[assigned])
            elif kind == "posterior":
                parts.append(self.clusterer_.predict_proba(z))
            else:
                centres = self.clusterer_.cluster_centers_ if self.first == "kmeans" else self.clusterer_.means_
                parts.append(np.linalg.norm(z[:, None, :] - centres[None], axis=2))
        return np.hstack(parts).astype(np.float32)

    def _augmented(self, data: ArrayDataset) -> ArrayDataset:
        x = select_features(data, self.features)
        return ArrayDataset(images=data.images, labels=data.labels, groups=data.groups,
                            features=np.hstack([x, self._stage1_outputs(x)]),
                            meta={**data.meta, "feature_names": self.feature_names_})

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "TwoStageModel":
        """Fit stage 1 on ``train``'s features, then the BP network on features + stage-1 outputs."""
        x = select_features(train, self.features)
        self.scaler_ = StandardScaler().fit(x)
        z = self.scaler_.transform(x)
        if self.first == "kmeans":
            self.clusterer_ = KMeans(self.n_clusters, n_init=10, random_state=self.seed).fit(z)
        else:
            self.clusterer_ = GaussianMixture(self.n_clusters, covariance_type="full", reg_covar=1e-4,
                                              random_state=self.seed).fit(z)
        stage1_names = [f"stage1_{kind}_{k}" for kind in self.append for k in range(self.n_clusters)]
        self.feature_names_ = selected_feature_names(train, self.features) + stage1_names
        self.clusters_ = self.clusterer_.predict(z)
        self.network_ = BPNetwork(**self.bp, inputs="features", features="all", seed=self.seed)
        self.network_.fit(self._augmented(train), None if val is None else self._augmented(val))
        self.n_parameters = self.network_.n_parameters
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` class probabilities; rows sum to 1."""
        if self.network_ is None:
            raise ModelError("models.twostage: predict_proba called before fit")
        return self.network_.predict_proba(self._augmented(data))

    # ------------------------------------------------------------------ the model contract
    capabilities = Capabilities(inputs=frozenset({FEATURES}))
    """Tabular features in; no explanation, no ONNX graph."""

    def state(self) -> ModelState:
        """Stage 1 (scaler and clusterer, scikit-learn objects written with skops) and stage 2's BP network."""
        if self.network_ is None:
            raise ModelError("models.twostage: the model is not fitted")
        state = ModelState(meta={"feature_names": list(self.feature_names_)},
                           estimators={"scaler": self.scaler_, "clusterer": self.clusterer_})
        return state.nest("bp", self.network_.state())

    def load_state(self, state: ModelState) -> "TwoStageModel":
        self.scaler_, self.clusterer_ = state.estimators["scaler"], state.estimators["clusterer"]
        self.feature_names_ = list(state.meta["feature_names"])
        self.network_ = BPNetwork(**self.bp, inputs="features", features="all", seed=self.seed)
        self.network_.load_state(state.part("bp"))
        self.n_parameters = self.network_.n_parameters
        return self
