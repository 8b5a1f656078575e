"""Feature models (bp, svm, logistic, twostage) and feature selection on real BreastMNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, ModelError
from medlens.models.features import design_matrix, feature_columns, select_features
from medlens.models.registry import Model, available, build

from realdata import need

torch.set_num_threads(1)  # tiny full-batch nets: one thread is fastest on a shared CPU


def simple_features(images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Intensity mean/std, an 8-bin histogram and 7×7 block means of ``(N, 1, 28, 28)`` images in [0, 1]."""
    flat = images.reshape(len(images), -1)
    hist = np.stack([np.histogram(row, bins=8, range=(0, 1))[0] / row.size for row in flat])
    blocks = images.reshape(len(images), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(images), -1)
    names = (["mean_intensity", "std_intensity"] + [f"hist_{i:02d}" for i in range(8)]
             + [f"pix_{i:02d}" for i in range(49)])
    return np.column_stack([flat.mean(1), flat.std(1), hist, blocks]).astype(np.float32), names


@pytest.fixture(scope="module")
def breast(data_root):
    """(train, val, test) ArrayDatasets of BreastMNIST with simple features, images 14×14 for pixel models."""
    z = np.load(need(data_root, "medmnist/breastmnist.npz"))
    parts = []
    for split in ("train", "val", "test"):
        images = z[f"{split}_images"][:, None].astype(np.float32) / 255.0
        features, names = simple_features(images)
        small = images.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))
        parts.append(ArrayDataset(images=small, labels=z[f"{split}_labels"], features=features,
                                  meta={"labels": ["malignant", "normal/benign"], "feature_names": names}))
    return tuple(parts)


def test_auc(model, data) -> float:
    proba = model.predict_proba(data)
    assert proba.shape == (len(data), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    return roc_auc_score(data.labels, proba[:, 1])


test_auc.__test__ = False  # a helper, not a test


def test_select_features_by_name_and_glob(breast):
    train = breast[0]
    names = train.meta["feature_names"]
    assert select_features(train, "all").shape == (len(train), 59)
    chosen = select_features(train, ["std_intensity", "hist_0*", "mean_*", "hist_01"])
    expected = [names.index("std_intensity")] + [names.index(f"hist_{i:02d}") for i in range(8)] + [0]
    np.testing.assert_array_equal(chosen, train.features[:, expected])
    assert feature_columns(names, "pix_4?") == list(range(50, 59))
    with pytest.raises(ConfigError, match="'diameter_mm' matches no feature"):
        select_features(train, ["diameter_mm"])
    with pytest.raises(ConfigError, match="no tabular features"):
        select_features(ArrayDataset(images=train.images, labels=train.labels), "all")
    assert design_matrix(train, "pixels").shape == (len(train), 196)


def test_bp_on_pixels_beats_baseline_and_is_deterministic(breast):
    train, val, test = breast
    runs = [build("bp", inputs="pixels", hidden=(32,), iterations=300, seed=1).fit(train, val) for _ in range(2)]
    assert test_auc(runs[0], test) > 0.75
    np.testing.assert_array_equal(runs[0].predict_proba(test), runs[1].predict_proba(test))
    other = build("bp", inputs="pixels", hidden=(32,), iterations=300, seed=2).fit(train, val)
    assert not np.array_equal(other.predict_proba(test), runs[0].predict_proba(test))
    assert runs[0].n_parameters == 196 * 32 + 32 + 32 + 1
    # Full-batch Adam on a convex-ish start: the training loss falls.
    assert runs[0].loss_curve_[-1] < 0.6 * runs[0].loss_curve_[0]


def test_bp_on_features_variants(breast):
    train, val, test = breast
    for params in ({"activation": "relu", "init": "kaiming", "dropout": 0.2, "weight_decay": 1e-4},
                   {"activation": "tanh", "hidden": (16, 8), "batch_size": 64, "class_weight": "balanced"}):
        model = build("bp", features=["mean_*", "std_*", "hist_*", "pix_*"], iterations=200, lr=0.01, **params)
        assert test_auc(model.fit(train, val), test) > 0.75, params


def test_bp_early_stopping_keeps_best_iteration(breast):
    train, val, _ = breast
    model = build("bp", inputs="pixels", hidden=(64,), iterations=600, early_stopping=True, patience=100,
                  eval_every=10).fit(train, val)
    iterations, losses = zip(*model.val_curve_)
    assert model.best_iteration_ == iterations[int(np.argmin(losses))]
    assert model.n_iterations_ == model.best_iteration_ + 100 < 600  # stopped by patience
    # The kept weights are the best iteration's: their validation loss is the smallest seen.
    p = model.predict_proba(val)[np.arange(len(val)), val.labels]
    assert -np.log(p).mean() == pytest.approx(min(losses), rel=1e-4)


def test_bp_multiclass_softmax_shapes():
    rng = np.random.default_rng(0)
    data = ArrayDataset(images=rng.random((60, 1, 4, 4), dtype=np.float32), labels=np.repeat([0, 1, 2], 20))
    proba = build("bp", inputs="pixels", iterations=20).fit(data).predict_proba(data)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test_svm_with_grid_search_on_gabor_features(breast):
    from medlens.preprocess.gabor import GaborBank

    bank = GaborBank(wavelengths=(4.0, 8.0), orientations=4)
    z = np.load(need_breast_path(breast))
    gabor = []
    for part, split in zip(breast, ("train", "val", "test")):
        features = bank.features(z[f"{split}_images"].astype(np.float32) / 255.0)
        gabor.append(ArrayDataset(images=part.images, labels=part.labels, features=features,
                                  meta={"feature_names": list(bank.feature_names)}))
    train, _, test = gabor
    model = build("svm", features=["gabor_*_mean", "gabor_*_std"], grid={"C": [0.3, 3.0], "gamma": ["scale"]},
                  class_weight="balanced", cv=3)
    assert test_auc(model.fit(train), test) > 0.75
    assert model.best_params_["C"] in (0.3, 3.0) and model.n_support_vectors_ > 0


def need_breast_path(breast) -> str:
    """The BreastMNIST archive path (the fixture already checked that it exists)."""
    import os

    return os.path.join(os.environ["MEDLENS_DATA"], "medmnist/breastmnist.npz")


def test_svm_and_logistic_on_simple_features(breast):
    train, _, test = breast
    svm = build("svm", C=1.0, features=["mean_*", "std_*", "hist_*", "pix_*"]).fit(train)
    assert test_auc(svm, test) > 0.75
    again = build("svm", C=1.0, features=["mean_*", "std_*", "hist_*", "pix_*"]).fit(train)
    np.testing.assert_array_equal(svm.predict_proba(test), again.predict_proba(test))
    # One-feature reference: the mean of the central 4×4 block, where the lesion lies (malignant
    # lesions are darker, hypoechoic).
    single = build("logistic", features=["pix_24"]).fit(train)
    assert single.n_parameters == 2
    assert test_auc(single, test) > 0.6


def test_twostage_kmeans_and_gmm(breast):
    train, val, test = breast
    kmeans = build("twostage", first="kmeans", n_clusters=3, features=["hist_*", "pix_*"],
                   bp={"iterations": 200, "lr": 0.01}).fit(train, val)
    assert test_auc(kmeans, test) > 0.75
    assert kmeans.feature_names_[-6:] == [f"stage1_{k}_{i}" for k in ("onehot", "distance") for i in range(3)]
    assert set(np.unique(kmeans.clusters_)) == {0, 1, 2}
    gmm = build("twostage", first="gmm", n_clusters=2, append="posterior", features=["pix_*"],
                bp={"iterations": 200, "lr": 0.01, "hidden": (16,)}).fit(train)
    assert test_auc(gmm, test) > 0.75
    with pytest.raises(ConfigError, match="posterior"):
        build("twostage", first="kmeans", append="posterior")


def test_registry_builds_and_rejects():
    assert {"bp", "svm", "logistic", "twostage", "cnn"} <= set(available())
    svm = build("svm", C=3.5, gamma=0.1)
    assert isinstance(svm, Model) and svm.C == 3.5 and svm.name == "svm"
    with pytest.raises(ConfigError, match="models.svm"):
        build("svm", kernel_size=3)
    with pytest.raises(ConfigError, match="unknown model 'forest'"):
        build("forest")
    with pytest.raises(ConfigError, match="models.bp.activation"):
        build("bp", activation="swish")
    with pytest.raises(ConfigError, match="models.twostage"):
        build("twostage", bp={"hiden": (3,)})
    with pytest.raises(ModelError, match="before fit"):
        build("logistic").predict_proba(ArrayDataset(images=np.zeros((2, 1, 2, 2)), labels=[0, 1]))


def test_ensemble_is_the_mean_of_its_seeded_members(breast):
    train, val, test = breast
    params = {"inputs": "pixels", "hidden": (32,), "iterations": 300}
    ens = build("ensemble", model="bp", members=3, params=params, seed=1).fit(train, val)
    assert ens.seeds == [3, 4, 5]  # seeds M·seed + m: consecutive ensembles share no member
    singles = [build("bp", **params, seed=s).fit(train, val).predict_proba(test) for s in (3, 4, 5)]
    np.testing.assert_allclose(ens.predict_proba(test), np.mean(singles, axis=0), atol=1e-12)
    assert not np.array_equal(singles[0], singles[1])  # the members differ by seed
    assert test_auc(ens, test) > 0.75
    assert ens.n_parameters == 3 * (196 * 32 + 32 + 32 + 1) and "3 bp models" in ens.description
    for bad, match in (({"model": "bp", "members": 1}, "at least 2"),
                       ({"model": "ensemble"}, "ensemble of ensembles"),
                       ({"model": "bp", "params": {"seed": 3}}, "seed to the ensemble"),
                       ({"model": "bp", "params": {"activation": "swish"}}, "models.bp.activation"),
                       ({"model": "forest"}, "unknown model 'forest'")):
        with pytest.raises(ConfigError, match=match):
            build("ensemble", **bad)
