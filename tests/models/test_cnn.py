"""2D and 3D CNNs on real MedMNIST: BreastMNIST (ultrasound, 28×28) and AdrenalMNIST3D (shape masks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, ModelError
from medlens.models.cnn import cifar_resnet, compact_cnn, flip_augment, shift_augment
from medlens.models.losses import AuxiliaryTargetLoss
from medlens.models.registry import build

from realdata import need

torch.set_num_threads(1)  # on the shared 2-core CPU one thread per process is fastest


def load(path, pool: int = 1) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """(train, val, test) of a MedMNIST archive scaled to [0, 1], average-pooled by ``pool`` per axis."""
    z = np.load(path)
    parts = []
    for split in ("train", "val", "test"):
        images = z[f"{split}_images"].astype(np.float32) / 255.0
        if pool > 1:
            shape = [len(images)] + [s for n in images.shape[1:] for s in (n // pool, pool)]
            images = images.reshape(shape).mean(axis=tuple(range(2, len(shape), 2)))
        parts.append(ArrayDataset(images=images[:, None], labels=z[f"{split}_labels"]))
    return tuple(parts)


def checked_auc(model, data) -> float:
    proba = model.predict_proba(data)
    assert proba.shape == (len(data), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    return roc_auc_score(data.labels, proba[:, 1])


def test_compact_2d_beats_baseline_and_is_deterministic(data_root):
    train, val, test = load(need(data_root, "medmnist/breastmnist.npz"))
    params = dict(arch="compact", width=16, epochs=6, batch_size=64, seed=0)
    first = build("cnn", **params).fit(train, val)
    assert checked_auc(first, test) > 0.8
    history = first.history_
    assert history.best_epoch == int(np.argmax(history.val_score))
    second = build("cnn", **params).fit(train, val)
    np.testing.assert_array_equal(first.predict_proba(test), second.predict_proba(test))


def test_resnet_2d_with_inner_validation_split(data_root):
    train, _, test = load(need(data_root, "medmnist/breastmnist.npz"))
    model = build("cnn", arch="resnet", width=8, blocks=1, epochs=5, batch_size=64, val_fraction=0.2).fit(train)
    assert checked_auc(model, test) > 0.75
    # The inner validation part (20% of 546, stratified) is held out of training: fewer steps per epoch.
    steps_per_epoch = model.history_.steps / len(model.history_.train_loss)
    assert steps_per_epoch == np.ceil(round(546 * 0.8) / 64)
    assert model.n_parameters == sum(p.numel() for p in model.network_.parameters())


def test_compact_3d_on_adrenal_volumes(data_root):
    train, val, test = load(need(data_root, "medmnist/adrenalmnist3d.npz"), pool=2)  # 14³ volumes
    model = build("cnn", arch="compact", width=8, depth=2, epochs=4, batch_size=64, lr=3e-3).fit(train, val)
    assert model.spatial_dims_ == 3
    assert checked_auc(model, test) > 0.7
    with pytest.raises(ModelError, match="fitted on 3D"):
        model.predict_proba(load(need(data_root, "medmnist/breastmnist.npz"))[2])


def test_networks_shapes_and_augmentation():
    for dims, shape in ((2, (3, 1, 20, 20)), (3, (3, 2, 8, 12, 12))):
        x = torch.randn(shape)
        for net in (compact_cnn(dims, shape[1], 4, width=4), cifar_resnet(dims, shape[1], 4, width=4, blocks=2)):
            assert net(x).shape == (3, 4)
    torch.manual_seed(0)
    volume = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4, 4).repeat(16, 1, 1, 1, 1)
    moved = flip_augment(volume)
    assert moved.shape == volume.shape
    # Flips and rotations permute voxels: each sample keeps its values, and some samples change.
    assert torch.equal(moved.flatten(1).sort(1).values, volume.flatten(1).sort(1).values)
    assert not torch.equal(moved, volume)


def test_shift_augment_mirrors_left_right_and_translates_real_xrays(data_root):
    _, _, test = load(need(data_root, "medmnist/pneumoniamnist.npz"))
    x = torch.from_numpy(test.images[:64])
    torch.manual_seed(0)
    out = shift_augment(x, max_shift=2)
    assert out.shape == x.shape
    seen = set()
    for a, b in zip(x, out):  # each sample is its original or its left-right mirror (never upside down), moved
        matches = [(m, dy, dx) for m, src in (("as is", a), ("mirrored", a.flip(-1)))
                   for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(b[:, 2:-2, 2:-2], src[:, 2 - dy:26 - dy, 2 - dx:26 - dx])]
        assert matches, "not a mirrored/translated copy"
        seen.add(matches[0][0])
    assert seen == {"as is", "mirrored"}
    torch.manual_seed(0)
    assert torch.equal(shift_augment(x, max_shift=2), out)  # seeded: reproducible
    assert shift_augment(torch.randn(3, 2, 6, 8, 8), max_shift=1).shape == (3, 2, 6, 8, 8)


def test_cnn_config_errors():
    with pytest.raises(ConfigError, match="models.cnn.arch"):
        build("cnn", arch="vgg")
    with pytest.raises(ConfigError, match="models.cnn.augment"):
        build("cnn", augment="rotate")
    with pytest.raises(ConfigError, match="val_fraction"):
        build("cnn", val_fraction=0.9)
    with pytest.raises(ConfigError, match="train.lr"):
        build("cnn", lr=0)
    with pytest.raises(ConfigError, match="train.ema"):
        build("cnn", ema=0)
    with pytest.raises(ModelError, match="images must be"):
        build("cnn").fit(ArrayDataset(images=np.zeros((40, 28, 28), np.float32), labels=np.arange(40) % 2))


def test_auxiliary_loss_is_class_loss_plus_weighted_squared_error_of_observed_targets():
    outputs = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0, float("nan")], [1.0, -1.0, 2.0], [1.0, float("nan"), float("nan")]])
    loss = AuxiliaryTargetLoss(torch.nn.CrossEntropyLoss(), n_classes=2, weight=0.5)(outputs, targets)
    ce = torch.nn.functional.cross_entropy(outputs[:, :2], torch.tensor([0, 1, 1]))
    squared = [(0.5 - 1.0) ** 2, (-2.0 + 1.0) ** 2, (1.0 - 2.0) ** 2]  # the three observed targets only
    assert float(loss) == pytest.approx(float(ce) + 0.5 * np.mean(squared), rel=1e-6)


def test_auxiliary_targets_on_lidc_nodules(data_root, monkeypatch):
    """The readers' semantic ratings ride along as auxiliary targets: the network learns them (subtlety, how
    conspicuous the nodule is, ranks held-out nodules with Spearman ρ ≈ 0.6 for seeds 0 and 1 at 12 and 24
    epochs; an untrained head gives ≈ 0), and cutting their outputs leaves the class logits."""
    from scipy.stats import spearmanr

    from medlens.data.builders import LIDC_SEMANTIC_RATINGS, lidc_nodules
    from medlens.models import cnn

    data = lidc_nodules(need(data_root, "lidc_idri_nodule_vois"), spacing=2.0, size=16, max_samples=240, seed=0)
    assert data.aux.shape == (240, len(LIDC_SEMANTIC_RATINGS)) and len(data.meta["aux_names"]) == data.aux.shape[1]
    assert np.nanmin(data.aux) >= 1 and np.nanmax(data.aux) <= 6  # 1–5 ratings (calcification 1–6)
    order = np.random.default_rng(0).permutation(len(data))
    train, val, test = data.subset(order[:150]), data.subset(order[150:190]), data.subset(order[190:])

    kept, cut_outputs = [], cnn.keep_class_outputs
    monkeypatch.setattr(cnn, "keep_class_outputs", lambda network, k: kept.append(k))
    model = build("cnn", width=8, epochs=12, patience=None, auxiliary_weight=1.0, progress=False).fit(train, val)
    assert kept == [2] and model.network_[-1].out_features == 2 + data.aux.shape[1]
    full = model.trainer_.predict(model.standardise(torch.from_numpy(test.images)))
    subtlety = data.meta["aux_names"].index("subtlety")
    rho = spearmanr(full[:, 2 + subtlety].numpy(), test.aux[:, subtlety]).statistic
    assert rho > 0.4

    cut_outputs(model.network_, 2)
    assert model.network_[-1].out_features == 2
    np.testing.assert_allclose(model.predict_proba(test), torch.softmax(full[:, :2].double(), 1).numpy(), atol=1e-6)


def test_auxiliary_weight_errors(data_root):
    with pytest.raises(ConfigError, match="auxiliary_weight"):
        build("cnn", auxiliary_weight=-1)
    train, val, _ = load(need(data_root, "medmnist/breastmnist.npz"))
    with pytest.raises(ConfigError, match="no auxiliary targets"):
        build("cnn", auxiliary_weight=0.5, epochs=1).fit(train, val)
