"""``ensemble``: a deep ensemble, M copies of one registered model trained from different seeds.

The ensemble's probability is the mean of its members' (Lakshminarayanan, Pritzel & Blundell,
*Simple and scalable predictive uncertainty estimation using deep ensembles*, NeurIPS 2017):

    p̄(y | x) = 1/M Σ_m p_m(y | x),

where member m is the model ``model`` with ``params`` and the seed ``M · seed + m`` (its weight
initialisation, batch order and augmentation draws), so ensembles built with consecutive seeds (a
study's repeats) share no member. Every member sees the same training and validation data; averaging
removes the part of the error that differs between seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError
from medlens.models.base import Capabilities, ModelState, NetworkView
from medlens.models.registry import build, register


@register("ensemble")
class Ensemble:
    """Mean of ``members`` copies of the registered model ``model``.

    Parameters
    ----------
    model : str
        Name of the member model (any registered model but ``ensemble``).
    members : int
        Number of members M (at least 2).
    params : dict, optional
        The member model's parameters (as under ``params`` of a study model).
    seed : int
        Member m is built with the seed ``M · seed + m``.
    """

    name = "ensemble"

    def __init__(self, model: str, members: int = 5, params: dict[str, Any] | None = None, seed: int = 0):
        if model == self.name:
            raise ConfigError("models.ensemble.model: an ensemble of ensembles is not supported")
        if int(members) < 2:
            raise ConfigError(f"models.ensemble.members: at least 2 members, got {members}")
        params = dict(params or {})
        if "seed" in params:
            raise ConfigError("models.ensemble.params: give the seed to the ensemble, not to its members")
        self.model, n = model, int(members)
        self.seeds = [n * int(seed) + m for m in range(n)]
        self.members = [build(model, **params, seed=s) for s in self.seeds]
        self.description = f"mean of {n} {model} models, seeds {self.seeds[0]}..{self.seeds[-1]}"

    @property
    def n_parameters(self) -> int | None:
        """Total parameters of the members that report theirs (after fit), else None."""
        counts = [getattr(m, "n_parameters", None) for m in self.members]
        return sum(counts) if all(c is not None for c in counts) else None

    def fit(self, train: ArrayDataset, val: ArrayDataset | None = None) -> "Ensemble":
        for member in self.members:
            member.fit(train, val)
        return self

    def predict_proba(self, data: ArrayDataset) -> np.ndarray:
        """``(N, K)`` mean of the members' probabilities."""
        return np.mean([np.asarray(m.predict_proba(data), dtype=np.float64) for m in self.members], axis=0)

    # ------------------------------------------------------------------ the model contract
    @property
    def capabilities(self) -> Capabilities:
        """The members' inputs and the explanation methods they all support; no single ONNX graph."""
        first = self.members[0].capabilities
        return Capabilities(inputs=first.inputs, explain=first.explain)

    def state(self) -> ModelState:
        """Every member's state, under ``member<m>``."""
        state = ModelState(meta={"members": len(self.members)})
        for m, member in enumerate(self.members):
            state.nest(f"member{m}", member.state())
        return state

    def load_state(self, state: ModelState) -> "Ensemble":
        for m, member in enumerate(self.members):
            member.load_state(state.part(f"member{m}"))
        return self

    def explain_networks(self) -> list[NetworkView]:
        """Every member's networks: the ensemble's Grad-CAM is the mean of its members' maps."""
        return [view for member in self.members for view in member.explain_networks()]
