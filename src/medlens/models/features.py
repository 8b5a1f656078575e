"""Choosing the tabular inputs of feature-based models.

A *feature spec* is ``"all"``, or a list of exact feature names and shell-style glob patterns
(``["gabor_*", "diameter_mm"]``) matched against ``data.meta["feature_names"]``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Sequence

import numpy as np

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError

INPUTS = ("features", "pixels")


def feature_columns(names: Sequence[str], spec: str | Sequence[str]) -> list[int]:
    """Column indices that ``spec`` selects from ``names``, in the order the spec names them.

    Each entry of ``spec`` is an exact name or a glob pattern; a pattern's matches keep the order of
    ``names``, and a column selected twice appears once.

    Raises
    ------
    ConfigError
        An entry matches no name, or the spec selects nothing.
    """
    names = list(names)
    if isinstance(spec, str):
        if spec == "all":
            return list(range(len(names)))
        spec = [spec]
    columns: list[int] = []
    for pattern in spec:
        matched = [i for i, name in enumerate(names) if fnmatchcase(name, pattern)]
        if not matched:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise ConfigError(f"features: {pattern!r} matches no feature name; available: {shown}")
        columns.extend(i for i in matched if i not in columns)
    if not columns:
        raise ConfigError("features: the spec selects no feature")
    return columns


def select_features(data: ArrayDataset, spec: str | Sequence[str] = "all") -> np.ndarray:
    """``(N, F')`` float32 columns of ``data.features`` chosen by ``spec`` (see :func:`feature_columns`).

    Raises
    ------
    ConfigError
        ``data`` has no features, or ``spec`` names features it does not have.
    """
    if data.features is None:
        raise ConfigError("features: this dataset has no tabular features; compute them first "
                          "(e.g. Gabor statistics) or use inputs='pixels'")
    features = np.asarray(data.features, dtype=np.float32)
    if isinstance(spec, str) and spec == "all":
        return features
    names = data.meta.get("feature_names")
    if names is None or len(names) != features.shape[1]:
        raise ConfigError("features: data.meta['feature_names'] is missing or does not match the feature columns, "
                          "so features cannot be chosen by name")
    return features[:, feature_columns(names, spec)]


def selected_feature_names(data: ArrayDataset, spec: str | Sequence[str] = "all") -> list[str]:
    """The names of the columns :func:`select_features` returns (``f0, f1, ...`` when unnamed)."""
    names = data.meta.get("feature_names")
    if names is None:
        width = 0 if data.features is None else data.features.shape[1]
        names = [f"f{i}" for i in range(width)]
    return [names[i] for i in feature_columns(names, spec)]


def design_matrix(data: ArrayDataset, inputs: str = "features", spec: str | Sequence[str] = "all") -> np.ndarray:
    """The ``(N, F)`` float32 input matrix of a tabular model.

    ``inputs="features"`` selects ``data.features`` columns by ``spec``; ``inputs="pixels"`` flattens
    each image (all channels and voxels) into one row.
    """
    if inputs == "pixels":
        return np.asarray(data.images, dtype=np.float32).reshape(len(data), -1)
    if inputs == "features":
        return select_features(data, spec)
    raise ConfigError(f"inputs: unknown {inputs!r}; use one of {', '.join(INPUTS)}")
