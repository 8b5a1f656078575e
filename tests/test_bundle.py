"""Bundles on real BreastMNIST: save/load round trips for cnn and bp, and refusal of tampered bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medlens.bundle import load_bundle, save_bundle
from medlens.config import load_config
from medlens.data.dataset import ArrayDataset
from medlens.errors import MedlensError, ModelError
from medlens.models.registry import build
from medlens.study import add_gabor_features

from conftest import need

torch.set_num_threads(1)
CONFIG = "src/medlens/configs/breastmnist_official.yaml"


@pytest.fixture(scope="module")
def breast(data_root):
    z = np.load(need(data_root, "medmnist/breastmnist.npz"))
    meta = {"labels": ["malignant", "normal, benign"], "source_md5": "test"}

    def part(split, n):
        return ArrayDataset(images=z[f"{split}_images"][:n, None].astype(np.float32) / 255.0,
                            labels=z[f"{split}_labels"][:n], meta=dict(meta))

    return part("train", 240), part("val", 60), part("test", 40)


@pytest.fixture(scope="module")
def config():
    from pathlib import Path

    return load_config(Path(__file__).parents[1] / CONFIG)


@pytest.fixture(scope="module")
def cnn_bundle(breast, config, tmp_path_factory):
    train, val, test = breast
    model = build("cnn", arch="resnet", epochs=2, progress=False, seed=0).fit(train, val)
    folder = save_bundle(model, config, train.meta, tmp_path_factory.mktemp("cnn"), metrics={"auc": 0.5},
                         threshold=0.4, image_shape=train.images.shape[1:])
    return model, folder


def test_cnn_round_trip_gives_identical_probabilities(cnn_bundle, breast):
    model, folder = cnn_bundle
    test = breast[2]
    loaded = load_bundle(folder)
    expected = model.predict_proba(test)
    got = loaded.model.predict_proba(test)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    assert loaded.threshold == 0.4 and loaded.labels == ["malignant", "normal, benign"]
    assert loaded.image_shape == (1, 28, 28)
    manifest = loaded.manifest
    assert manifest["model"]["name"] == "cnn" and manifest["model"]["params"]["arch"] == "resnet"
    assert manifest["config"]["data"]["builder"] == "medmnist"
    assert set(manifest["files"]) == {"weights.pt", "state.json"}
    assert len(manifest["files"]["weights.pt"]) == 64 and manifest["versions"]["torch"] == torch.__version__


def test_bp_round_trip_with_gabor_features(breast, config, tmp_path):
    train, _, test = breast
    train = add_gabor_features(train.subset(np.arange(len(train))), config)
    test = add_gabor_features(test.subset(np.arange(len(test))), config)
    model = build("bp", hidden=[8], iterations=30, features=["gabor_*"], seed=0).fit(train)
    save_bundle(model, config, train.meta, tmp_path, image_shape=(1, 28, 28))
    loaded = load_bundle(tmp_path)
    np.testing.assert_array_equal(loaded.model.predict_proba(test), model.predict_proba(test))
    assert any(n.startswith("gabor_") for n in loaded.manifest["data"]["feature_names"])


def test_tampered_weights_are_refused(cnn_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(cnn_bundle[1], tmp_path / "b")
    weights = copy / "weights.pt"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(MedlensError, match="weights.pt: sha256 differs"):
        load_bundle(copy)


def test_other_major_version_and_non_bundle_are_refused(cnn_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(cnn_bundle[1], tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["medlens_version"] = "99.0.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MedlensError, match="major versions differ"):
        load_bundle(copy)
    with pytest.raises(MedlensError, match="not a medlens bundle"):
        load_bundle(tmp_path)


def test_unsupported_model_is_refused(breast, config, tmp_path):
    train = breast[0]
    model = build("logistic")
    with pytest.raises(ModelError, match="cannot be bundled"):
        save_bundle(model, config, train.meta, tmp_path)
