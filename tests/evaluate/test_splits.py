"""Cross-validation splits on the real LIDC nodules (994 VOIs, 551 patients) and BreastMNIST labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realdata import need
from medlens.data.builders import lidc_stems
from medlens.errors import ConfigError
from medlens.evaluate import splits


@pytest.fixture(scope="module")
def lidc(data_root):
    """Benign/malignant labels and patient ids of the 994 LIDC nodules that have a VOI file."""
    root = need(data_root, "lidc_idri_nodule_vois")
    table = pd.read_csv(root / "MetadatabyNoduleMaxVoting.csv")
    has_voi = [(root / "image" / f"{stem}.nii.gz").is_file() for stem in lidc_stems(table)]
    table = table[has_voi]
    assert len(table) == 994 and table.patient_id.nunique() == 551
    return table.Diagnosis_value.to_numpy(), table.patient_id.to_numpy()


@pytest.fixture(scope="module")
def breast_labels(data_root):
    return np.load(need(data_root, "medmnist/breastmnist.npz"))["train_labels"].ravel()


def test_grouped_kfold_no_leak_every_sample_once_stratified(lidc):
    labels, patients = lidc
    folds = splits.kfold_splits(labels, patients, k=10, seed=0)
    assert len(folds) == 10
    tested = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(labels)))  # each sample tested exactly once
    overall = labels.mean()
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0 and train.size + test.size == len(labels)
        assert not set(patients[train]) & set(patients[test])
        assert abs(labels[test].mean() - overall) < 0.05  # stratified: malignant share near 34.6%
        assert 0.07 < test.size / len(labels) < 0.13
    splits.assert_no_group_leak(folds, patients)


def test_ungrouped_split_of_lidc_would_leak_and_is_caught(lidc):
    labels, patients = lidc
    leaky = splits.kfold_splits(labels, k=10, seed=0)  # nodules of one patient end up on both sides
    with pytest.raises(ConfigError, match="in both train and test"):
        splits.assert_no_group_leak(leaky, patients)


def test_stratified_kfold_class_counts_differ_by_at_most_one(breast_labels):
    folds = splits.kfold_splits(breast_labels, k=5, seed=3)
    for c in np.unique(breast_labels):
        per_fold = [np.sum(breast_labels[test] == c) for _, test in folds]
        assert max(per_fold) - min(per_fold) <= 1
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(breast_labels)))


def test_seed_decides_the_folds(lidc):
    labels, patients = lidc
    a = splits.kfold_splits(labels, patients, k=5, seed=1)
    b = splits.kfold_splits(labels, patients, k=5, seed=1)
    c = splits.kfold_splits(labels, patients, k=5, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_too_many_folds_or_too_rare_a_class_is_a_config_error(lidc):
    labels, patients = lidc
    few = np.isin(patients, np.unique(patients)[:6])
    with pytest.raises(ConfigError, match="only 6 groups"):
        splits.kfold_splits(labels[few], patients[few], k=10)
    rare = labels.copy()
    rare[np.flatnonzero(labels == 1)[:3]] = 2  # a third class of 3 nodules
    with pytest.raises(ConfigError, match="class"):
        splits.kfold_splits(rare, k=5)
    with pytest.raises(ConfigError, match="class"):
        splits.kfold_splits(rare, patients, k=5)
    with pytest.raises(ConfigError, match="at least 2"):
        splits.kfold_splits(labels, k=1)
    with pytest.raises(ConfigError, match="groups has"):
        splits.kfold_splits(labels, patients[:-1], k=5)


def test_inner_validation_split_grouped(lidc):
    labels, patients = lidc
    train, val = splits.inner_validation_split(labels, patients, fraction=0.15, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert not set(patients[train]) & set(patients[val])
    assert abs(np.unique(patients[val]).size / np.unique(patients).size - 1 / 7) < 0.03  # round(1/0.15) = 7
    assert abs(labels[val].mean() - labels.mean()) < 0.05


def test_inner_validation_split_relative_indices_of_a_fold(breast_labels):
    train_idx, _ = splits.kfold_splits(breast_labels, k=5, seed=0)[0]
    inner_train, inner_val = splits.inner_validation_split(breast_labels[train_idx], fraction=0.2, seed=0)
    assert inner_train.max() < train_idx.size and inner_val.max() < train_idx.size
    assert inner_val.size == pytest.approx(0.2 * train_idx.size, abs=1)
    with pytest.raises(ConfigError, match="fraction"):
        splits.inner_validation_split(breast_labels, fraction=0.9)
