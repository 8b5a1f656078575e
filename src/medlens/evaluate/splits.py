"""Cross-validation splits: stratified by class, grouped by patient when groups are given.

Samples of one group (patient) never sit on both sides of a split, otherwise a model is tested on
the patient it was trained on and the estimate is optimistic. Stratification keeps each fold's class
proportions close to the whole set's. Both come from scikit-learn's :class:`StratifiedKFold` and
:class:`StratifiedGroupKFold`; this module adds the checks and the error messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medlens.errors import ConfigError

Split = tuple[np.ndarray, np.ndarray]


def _inputs(labels, groups) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        raise ConfigError("splits: labels is empty")
    if groups is None:
        return y, None
    g = np.asarray(groups).reshape(-1)
    if g.size != y.size:
        raise ConfigError(f"splits: groups has {g.size} values but labels has {y.size}")
    return y, g


def _splitter(y: np.ndarray, g: np.ndarray | None, n_splits: int, seed: int):
    if g is None:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(y.size), y)
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(y.size), y, g)


def _as_index(split) -> Split:
    train, test = split
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def kfold_splits(labels, groups=None, k: int = 10, seed: int = 0) -> list[Split]:
    """Stratified (and, with ``groups``, group-disjoint) k-fold cross-validation.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Class of each sample.
    groups : array_like, shape (N,), optional
        Group (patient) id of each sample; no group is in both the train and the test part of a fold.
    k : int
        Number of folds, at least 2.
    seed : int
        Seed of the shuffle that decides which samples (groups) go to which fold.

    Returns
    -------
    list of (train_idx, test_idx)
        ``k`` pairs of sorted int64 index arrays; every sample is in exactly one test part.

    Raises
    ------
    ConfigError
        When ``k < 2``, when there are fewer samples (or groups) than folds, or when a class has fewer
        than ``k`` samples (or, grouped, appears in fewer than ``k`` groups) so that some fold could
        not test it.
    """
    y, g = _inputs(labels, groups)
    if k < 2:
        raise ConfigError(f"splits: k (folds) must be at least 2, got {k}")
    classes, counts = np.unique(y, return_counts=True)
    if g is None:
        if y.size < k:
            raise ConfigError(f"splits: k={k} folds but only {y.size} samples")
        short = {str(c): int(n) for c, n in zip(classes, counts) if n < k}
        if short:
            raise ConfigError(f"splits: k={k} folds need at least {k} samples of each class; "
                              f"too few for class(es) {short}; lower the number of folds")
    else:
        n_groups = np.unique(g).size
        if n_groups < k:
            raise ConfigError(f"splits: k={k} folds but only {n_groups} groups (patients); lower the number of folds")
        per_class = {str(c): int(np.unique(g[y == c]).size) for c in classes}
        short = {c: n for c, n in per_class.items() if n < k}
        if short:
            raise ConfigError(f"splits: k={k} folds need each class in at least {k} groups (patients); "
                              f"class(es) {short} appear in fewer; lower the number of folds")
    folds = [_as_index(s) for s in _splitter(y, g, k, seed)]
    empty = [i for i, (_, test) in enumerate(folds) if test.size == 0]
    if empty:
        raise ConfigError(f"splits: folds {empty} have no test samples; lower the number of folds")
    return folds


def inner_validation_split(labels, groups=None, fraction: float = 0.15, seed: int = 0) -> Split:
    """Hold out about ``fraction`` of a training set for validation (early stopping, model choice).

    Splits ``labels`` into ``round(1 / fraction)`` stratified (group-disjoint when ``groups`` is given)
    folds and returns the first: the validation part is about ``fraction`` of the samples (of the
    groups, when grouped). Indices are positions in ``labels`` (0 .. N-1), not in any larger set.
    A class too rare to be spread over every fold is allowed here (training sets can be small); it
    simply may be missing from the validation part.

    Returns
    -------
    (train_idx, val_idx)
        Sorted int64 arrays that together hold every position once.
    """
    y, g = _inputs(labels, groups)
    if not 0.0 < fraction <= 0.5:
        raise ConfigError(f"splits: validation fraction must be in (0, 0.5], got {fraction}")
    n_splits = max(2, round(1.0 / fraction))
    n_units = y.size if g is None else np.unique(g).size
    if n_units < n_splits:
        unit = "samples" if g is None else "groups (patients)"
        raise ConfigError(f"splits: a validation fraction of {fraction} needs at least {n_splits} {unit}, "
                          f"got {n_units}")
    with warnings.catch_warnings():
        # "The least populated class in y has only n members": accepted here, see the docstring.
        warnings.simplefilter("ignore", UserWarning)
        return _as_index(next(iter(_splitter(y, g, n_splits, seed))))


def assert_no_group_leak(splits: Sequence[Split], groups) -> None:
    """Raise :class:`ConfigError` when any fold has a group in both its train and its test part."""
    g = np.asarray(groups).reshape(-1)
    for i, (train, test) in enumerate(splits):
        shared = np.intersect1d(g[np.asarray(train)], g[np.asarray(test)])
        if shared.size:
            raise ConfigError(f"splits: fold {i} has {shared.size} group(s) in both train and test, "
                              f"e.g. {shared[:5].tolist()}")
