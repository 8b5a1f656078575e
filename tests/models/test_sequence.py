"""cnn_lstm (CNN-LSTM/GRU over slices) and the cnn_view 2D/2.5D input adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medlens.models.sequence  # noqa: F401  (registers cnn_lstm and cnn_view)
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.splits import kfold_splits
from medlens.models.registry import build
from medlens.models.sequence import CNNRNN, as_sequence, central_slice, orthogonal_slices

from realdata import need

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nodules(data_root):
    """160 real LIDC-IDRI nodules, (2, 32, 32, 32), split 2:1 by patient."""
    from medlens.data.builders import build_dataset

    data = build_dataset("lidc_nodules", need(data_root, "lidc_idri_nodule_vois"), spacing=1.0, size=32,
                         max_samples=160, seed=0)
    train, test = kfold_splits(data.labels, data.groups, k=3, seed=0)[0]
    return data.subset(train), data.subset(test)


@pytest.mark.parametrize("cell,bidirectional,pooling", [("lstm", False, "last"), ("gru", True, "attention"),
                                                        ("lstm", True, "last")])
def test_network_output_shape(cell, bidirectional, pooling):
    net = CNNRNN(2, 3, cell=cell, bidirectional=bidirectional, pooling=pooling, width=4, depth=2)
    assert net(torch.zeros(5, 2, 7, 16, 16)).shape == (5, 3)


def test_views_and_sequences_shapes():
    volumes = np.arange(2 * 1 * 4 * 6 * 8, dtype=np.float32).reshape(2, 1, 4, 6, 8)
    assert as_sequence(volumes, 0).shape == (2, 1, 4, 6, 8)
    assert as_sequence(volumes, 2).shape == (2, 1, 8, 4, 6)
    np.testing.assert_array_equal(central_slice(volumes, 1), volumes[:, :, :, 3, :])
    cubes = np.random.default_rng(0).random((3, 2, 8, 8, 8), dtype=np.float32)
    both = orthogonal_slices(cubes)
    assert both.shape == (3, 6, 8, 8)
    np.testing.assert_array_equal(both[:, 2:4], cubes[:, :, :, 4, :])
    with pytest.raises(ModelError, match="cubic"):
        orthogonal_slices(volumes)
    with pytest.raises(ModelError, match="volumes"):
        as_sequence(volumes[:, :, 0], 0)


def test_bad_params_raise_config_error():
    with pytest.raises(ConfigError, match="cell"):
        build("cnn_lstm", cell="rnn")
    with pytest.raises(ConfigError, match="axis"):
        build("cnn_lstm", axis=3)
    with pytest.raises(ConfigError, match="view"):
        build("cnn_view", view="mip")


def test_cnn_lstm_learns_real_nodules(nodules):
    train, test = nodules
    model = build("cnn_lstm", width=8, hidden=32, epochs=6, patience=None, seed=0).fit(train)
    losses = model.history_.train_loss
    assert losses[-1] < losses[0]
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), 2) and np.allclose(proba.sum(1), 1)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(test.labels, proba[:, 1]) > 0.75
    assert model.n_parameters == sum(p.numel() for p in model.network_.parameters())


def test_cnn_lstm_is_deterministic_under_a_seed(nodules):
    train, test = nodules
    small = train.subset(np.arange(48))
    runs = [build("cnn_lstm", cell="gru", width=4, hidden=8, epochs=1, max_steps=2, seed=3).fit(small)
            .predict_proba(test.subset(np.arange(10))) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("view,channels", [("central", 2), ("2.5d", 6)])
def test_cnn_view_fits_the_2d_cnn_on_a_view(nodules, view, channels):
    train, test = nodules
    model = build("cnn_view", view=view, width=4, depth=2, epochs=2, seed=0).fit(train)
    assert model.inner.network_[0].in_channels == channels
    assert model.predict_proba(test).shape == (len(test), 2)
    assert model.n_parameters > 0
