"""Extractors and probes on real BreastMNIST ultrasound: better than chance, one interface, npz round trip, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from realdata import need
from medlens.commands.features import app
from medlens.data.builders import medmnist
from medlens.errors import BadArchiveError, ConfigError, GeometryError
from medlens.features.extractors import (AutoencoderExtractor, CNNExtractor, Extractor, GaborExtractor,
                                         make_extractor)
from medlens.features.probe import probe_cv, probe_holdout
from medlens.features.store import load_features, save_features

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def breast(data_root):
    return medmnist(need(data_root, "medmnist/breastmnist.npz"))


def test_gabor_features_with_probes_beat_chance(breast):
    extractor = GaborExtractor()
    assert isinstance(extractor, Extractor)
    features = extractor.fit(breast.images).transform(breast.images)
    assert features.shape == (len(breast), len(extractor.feature_names))
    for probe in ("logistic", "svm"):
        result = probe_cv(features, breast.labels, probe=probe, k=5, seed=0, names=breast.meta["labels"])
        assert len(result["folds"]) == 5
        assert result["summary"]["auc"]["ci95"][0] > 0.55  # the whole 95% interval above chance


def test_learned_extractors_share_the_interface(breast):
    train = breast.subset(np.flatnonzero(breast.split == "train")[:256])
    test = breast.subset(np.flatnonzero(breast.split == "test"))
    ae = AutoencoderExtractor(channels=(8, 16), strides=(1, 2), epochs=2)
    cnn = CNNExtractor(width=8, depth=2, epochs=2)
    for extractor in (ae, cnn):
        assert isinstance(extractor, Extractor)
        extractor.fit(train.images, train.labels)
        features = extractor.transform(test.images)
        assert features.shape == (len(test), len(extractor.feature_names))
        assert np.isfinite(features).all() and features.std(0).max() > 0
    transfer = make_extractor("transfer", pretrain=train, width=8, depth=2, epochs=1).fit(test.images)
    assert transfer.name == "transfer" and transfer.transform(test.images[:4]).shape == (4, 24)
    metrics = probe_holdout(cnn.transform(train.images), train.labels, cnn.transform(test.images), test.labels)
    assert 0.0 <= metrics["auc"] <= 1.0


def test_bad_extractor_inputs_raise(breast):
    with pytest.raises(ConfigError):
        make_extractor("sift")
    with pytest.raises(ConfigError, match="labels"):
        CNNExtractor().fit(breast.images[:8])
    with pytest.raises(ConfigError, match="pretrain"):
        make_extractor("transfer")
    with pytest.raises(GeometryError):
        GaborExtractor().transform(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(GeometryError):
        probe_cv(np.zeros((10, 3)), np.zeros(9))


def test_feature_table_round_trip(tmp_path, breast):
    path = save_features(tmp_path / "f.npz", np.ones((3, 2)), [0, 1, 0], ["a", "b", "c"], ["x", "y"],
                         {"method": "test"})
    table = load_features(path)
    assert table["feature_names"] == ["x", "y"] and table["meta"] == {"method": "test"}
    assert list(table["ids"]) == ["a", "b", "c"]
    with pytest.raises(GeometryError):
        save_features(tmp_path / "g.npz", np.ones((3, 2)), [0, 1], ["a", "b", "c"], ["x", "y"], {})
    np.savez(tmp_path / "bad.npz", features=np.ones((2, 2)))
    with pytest.raises(BadArchiveError, match="bad.npz"):
        load_features(tmp_path / "bad.npz")


def test_cli_extract_then_probe(data_root, tmp_path):
    archive = need(data_root, "medmnist/breastmnist.npz")
    out = tmp_path / "gabor.npz"
    runner = CliRunner()
    result = runner.invoke(app, ["extract", str(archive), "--out", str(out), "--method", "gabor"])
    assert result.exit_code == 0, result.output
    table = load_features(out)
    assert len(table["labels"]) == 78 + 156 and table["meta"]["splits"] == ["val", "test"]
    result = runner.invoke(app, ["probe", str(out), "--probes", "logistic", "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert "| logistic |" in result.output
    result = runner.invoke(app, ["extract", str(archive), "--out", str(out), "--splits", "holdout"])
    assert result.exit_code == 2 and "holdout" in result.output
