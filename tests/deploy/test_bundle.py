"""Bundles on real BreastMNIST: save/load round trips for cnn and bp, and refusal of tampered bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import medlens
from medlens.deploy.bundle import load_bundle, save_bundle
from medlens.config import load_config
from medlens.data.dataset import ArrayDataset
from medlens.errors import MedlensError, ModelError
from medlens.models.registry import build
from medlens.study import add_gabor_features

from realdata import REPO, need

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

    return load_config(REPO / CONFIG)


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
    assert set(manifest["files"]) == {"weights.pt", "state.json", "model_card.md"}
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
    manifest["medlens_version"], manifest["format_version"] = medlens.__version__, 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MedlensError, match="bundle format 2 is newer"):
        load_bundle(copy)
    with pytest.raises(MedlensError, match="not a medlens bundle"):
        load_bundle(tmp_path)


def test_unsupported_model_is_refused(breast, config, tmp_path):
    train = breast[0]
    model = build("logistic")
    with pytest.raises(ModelError, match="cannot be bundled"):
        save_bundle(model, config, train.meta, tmp_path)


def test_model_card_is_written_and_hash_checked(cnn_bundle, tmp_path):
    import shutil

    _, folder = cnn_bundle
    card = (folder / "model_card.md").read_text()
    assert "Research use only" in card and "Limitations" in card
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    (copy / "model_card.md").write_text(card.replace("Research use only", "Cleared for clinical use"))
    with pytest.raises(MedlensError, match="model_card.md"):
        load_bundle(copy)


@pytest.fixture(scope="module")
def calibrated(config, tmp_path_factory):
    """A quick BreastMNIST cnn with a temperature and the sensitivity-0.9 operating point, both fitted on val."""
    from medlens.deploy.train import train_bundle

    out = tmp_path_factory.mktemp("calibrated")
    manifest = train_bundle(config, out, quick=True, max_samples=400, threshold="sensitivity:0.9", calibrate=True,
                            quiet=True)
    return out, manifest


def test_operating_point_is_chosen_on_validation(calibrated, config):
    from medlens.evaluate.operating_points import threshold_for_sensitivity
    from medlens.study import load_dataset, subsample

    out, manifest = calibrated
    bundle = load_bundle(out)
    data = subsample(load_dataset(config), 400, config.seed)
    val = data.subset(np.flatnonzero(data.split == "val"))
    p_val = bundle.predict_proba(val)[:, 1]
    assert bundle.threshold == pytest.approx(threshold_for_sensitivity(val.labels, p_val, 0.9))
    assert manifest["training"]["validation"]["sensitivity"] >= 0.9
    assert manifest["metrics"]["split"] == "official test" and 0.0 <= manifest["metrics"]["specificity"] <= 1.0
    assert "sensitivity ≥ 0.9" in (out / "model_card.md").read_text()


def test_temperature_changes_confidence_not_ranking(calibrated, config):
    from scipy.stats import rankdata

    from medlens.study import load_dataset, subsample

    out, manifest = calibrated
    bundle = load_bundle(out)
    assert manifest["temperature"] is not None and manifest["temperature"] > 0
    data = subsample(load_dataset(config), 400, config.seed)
    test = data.subset(np.flatnonzero(data.split == "test"))
    raw, scaled = bundle.model.predict_proba(test)[:, 1], bundle.predict_proba(test)[:, 1]
    assert not np.allclose(raw, scaled)
    np.testing.assert_array_equal(rankdata(raw), rankdata(scaled))
    val = data.subset(np.flatnonzero(data.split == "val"))
    y = val.labels

    def nll(p):
        return -np.mean(np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-12, None)))

    # the temperature minimises the validation NLL, and T = 1 (no scaling) lies in its search range
    assert nll(bundle.predict_proba(val)[:, 1]) <= nll(bundle.model.predict_proba(val)[:, 1]) + 1e-6


def test_onnx_export_matches_pytorch_on_real_images(config, tmp_path):
    """The exported graph (standardise, network, temperature, softmax) gives the bundle's probabilities."""
    import onnxruntime

    from medlens.study import load_dataset, subsample
    from medlens.deploy.train import train_bundle

    manifest = train_bundle(config, tmp_path / "b", quick=True, max_samples=300, calibrate=True, quiet=True,
                            onnx=True)
    assert manifest["onnx"]["max_abs_diff"] <= 1e-4 and manifest["onnx"]["checked_on"] > 0
    assert "model.onnx" in manifest["files"]
    bundle = load_bundle(tmp_path / "b")
    data = subsample(load_dataset(config), 300, config.seed)
    test = data.subset(np.flatnonzero(data.split == "test"))
    session = onnxruntime.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": test.images.astype(np.float32)})[0]
    # the bundle predicts under bfloat16 autocast where it speeds up the CPU; ONNX runs float32
    np.testing.assert_allclose(got, bundle.predict_proba(test), atol=0.02)
    assert np.mean(got.argmax(axis=1) == bundle.predict_proba(test).argmax(axis=1)) >= 0.97
