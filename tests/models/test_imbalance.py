"""Imbalance options do what their docs say: focal loss (Lin et al. 2017), class-balanced sampling and
class weights, on the real, imbalanced BreastMNIST (malignant 27 %)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import FocalLoss as MonaiFocalLoss
from torch import nn
from torch.utils.data import TensorDataset

from realdata import need
from medlens.data.dataset import ArrayDataset
from medlens.engine.threads import torch_threads
from medlens.engine.trainer import Trainer, TrainConfig
from medlens.errors import ConfigError
from medlens.models.cnn import CNNClassifier
from medlens.models.losses import FocalLoss, classification_loss, focal_loss
from medlens.models.mlp import BPNetwork, class_weights


@pytest.fixture(scope="module")
def breast(data_root):
    """BreastMNIST train split, 28x28 images, label 0 = malignant (the minority), 1 = normal/benign."""
    archive = np.load(need(data_root, "medmnist/breastmnist.npz"))
    images = (archive["train_images"][:, None] / 255.0).astype(np.float32)
    labels = archive["train_labels"].ravel().astype(np.int64)
    return ArrayDataset(images=images, labels=labels, meta={"labels": ["malignant", "normal/benign"]})


@pytest.fixture(scope="module")
def logits_and_targets(breast):
    """Real logits: a linear model's scores on the downsampled BreastMNIST pixels, and their labels."""
    x = torch.as_tensor(breast.images.reshape(len(breast), 14, 2, 14, 2).mean((2, 4)).reshape(len(breast), -1))
    torch.manual_seed(0)
    z = nn.Linear(x.shape[1], 2)(x - x.mean(0)).detach() * 5
    return z, torch.as_tensor(breast.labels)


def test_focal_with_gamma_zero_is_cross_entropy(logits_and_targets, breast):
    z, y = logits_and_targets
    w = torch.as_tensor(class_weights(breast.labels, 2, "balanced"), dtype=torch.float32)
    assert torch.allclose(focal_loss(z, y, gamma=0.0), nn.functional.cross_entropy(z, y))
    assert torch.allclose(focal_loss(z, y, gamma=0.0, weight=w), nn.CrossEntropyLoss(weight=w)(z, y))
    assert torch.allclose(classification_loss("focal", weight=w, gamma=0.0)(z, y),
                          classification_loss("ce", weight=w)(z, y))
    t = z[:, 1] - z[:, 0]  # one binary logit: the same probabilities as the softmax pair
    assert torch.allclose(focal_loss(t, y, gamma=0.0), nn.functional.binary_cross_entropy_with_logits(t, y.float()))
    assert torch.allclose(focal_loss(t, y, gamma=2.0), focal_loss(z, y, gamma=2.0), atol=1e-6)


def test_focal_down_weights_easy_samples_as_documented(logits_and_targets):
    z, y = logits_and_targets
    per_ce = focal_loss(z, y, gamma=0.0, reduction="none")
    per_fl = focal_loss(z, y, gamma=2.0, reduction="none")
    pt = torch.softmax(z, 1).gather(1, y[:, None])[:, 0]
    assert torch.allclose(per_fl, (1 - pt) ** 2 * per_ce, atol=1e-6)  # FL = (1 - p_t)^γ CE
    easy, hard = pt > 0.8, pt < 0.2
    assert easy.any() and hard.any()
    assert (per_fl[easy] / per_ce[easy]).max() < 0.04 < (per_fl[hard] / per_ce[hard]).min()
    # MONAI's softmax focal loss averages over samples and classes: ours times K
    monai = MonaiFocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True)(z, y[:, None])
    assert torch.allclose(per_fl.mean(), 2 * monai, atol=1e-6)
    # α: the positive class weighted α, the negative 1 − α
    per_a = focal_loss(z, y, gamma=2.0, alpha=0.25, reduction="none")
    assert torch.allclose(per_a, torch.where(y == 1, 0.25, 0.75) * per_fl)
    assert torch.allclose(FocalLoss(gamma=2.0, alpha=0.25)(z, y), per_a.mean())
    with pytest.raises(ConfigError, match="alpha"):
        focal_loss(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), alpha=0.25)
    with pytest.raises(ConfigError, match="gamma"):
        focal_loss(z, y, gamma=-1.0)


def _drawn_labels(breast, sampler):
    """Labels of every sample the Trainer feeds to the loss over 3 epochs of a linear model."""
    seen = []

    def loss(out, target):
        seen.append(target.clone())
        return nn.functional.cross_entropy(out, target)

    x = torch.as_tensor(breast.images.reshape(len(breast), -1))
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-3, patience=None, progress=False, sampler=sampler, seed=0)
    with torch_threads(1):
        Trainer(nn.Linear(x.shape[1], 2), loss, config).fit(TensorDataset(x, torch.as_tensor(breast.labels)))
    return torch.cat(seen).numpy()


def test_balanced_sampler_draws_classes_equally(breast):
    minority = float((breast.labels == 0).mean())
    assert 0.2 < minority < 0.35  # the real set is imbalanced
    plain = _drawn_labels(breast, None)
    assert len(plain) == 3 * len(breast) and (plain == 0).mean() == pytest.approx(minority)
    balanced = _drawn_labels(breast, "balanced")
    assert len(balanced) == 3 * len(breast)
    # 1638 draws with p = 1/2: the standard deviation of the fraction is 0.012
    assert abs((balanced == 0).mean() - 0.5) < 0.05
    weights = Trainer.balanced_weights(breast.labels)
    assert torch.allclose(torch.bincount(torch.as_tensor(breast.labels), weights), torch.ones(2, dtype=weights.dtype))
    with pytest.raises(ConfigError, match="sampler"):
        TrainConfig(sampler="oversample")


def _minority_means(model, data):
    """Mean predicted minority probability over all samples, and the average of its two per-class means."""
    p0 = model.predict_proba(data)[:, 0]
    return float(p0.mean()), float((p0[data.labels == 0].mean() + p0[data.labels == 1].mean()) / 2)


def test_bp_imbalance_options_balance_the_classes(breast):
    """At the optimum of a loss with an output bias, ∂L/∂b = Σ_i w_i (p_i − y_i) = 0. Plain BCE (w = 1) so
    matches the mean predicted probability to the base rate; balanced class weights w_c = N / (2 n_c) make
    the *per-class* means average to 1/2 (the classes count equally); the balanced sampler does the same in
    expectation."""
    small = ArrayDataset(images=breast.images[:, :, ::2, ::2], labels=breast.labels, meta=breast.meta)
    base = dict(inputs="pixels", hidden=(8,), iterations=150, lr=0.01, seed=0)
    minority = float((small.labels == 0).mean())
    plain_mean, plain_balanced = _minority_means(BPNetwork(**base).fit(small), small)
    _, weighted_balanced = _minority_means(BPNetwork(**base, class_weight="balanced").fit(small), small)
    _, sampled_balanced = _minority_means(BPNetwork(**base, sampler="balanced").fit(small), small)
    assert plain_mean == pytest.approx(minority, abs=0.01)
    assert plain_balanced < 0.46
    assert weighted_balanced == pytest.approx(0.5, abs=0.01)
    assert sampled_balanced == pytest.approx(0.5, abs=0.03)
    # focal with γ = 0 is the same loss as BCE: the same fitted probabilities
    focal = BPNetwork(**base, loss="focal", focal_gamma=0.0).fit(small)
    assert np.allclose(focal.predict_proba(small), BPNetwork(**base).fit(small).predict_proba(small), atol=1e-5)
    with pytest.raises(ConfigError, match="loss"):
        BPNetwork(loss="hinge")


def test_cnn_focal_and_sampler_options(breast):
    """CNN: focal loss with γ = 0 trains exactly like cross-entropy; γ = 2 trains differently; the balanced
    sampler reaches the Trainer."""
    data = ArrayDataset(images=breast.images[:300], labels=breast.labels[:300], meta=breast.meta)
    base = dict(width=4, depth=2, epochs=1, batch_size=32, max_steps=4, amp="off", augment=False, progress=False,
                patience=None, seed=0)
    with torch_threads(1):
        ce = CNNClassifier(**base).fit(data).predict_proba(data)
        focal0 = CNNClassifier(**base, loss="focal", focal_gamma=0.0).fit(data).predict_proba(data)
        focal2 = CNNClassifier(**base, loss="focal", focal_gamma=2.0).fit(data).predict_proba(data)
        sampled = CNNClassifier(**base, sampler="balanced", class_weight=None)
        sampled.fit(data)
    assert np.allclose(ce, focal0, atol=1e-4)
    assert np.abs(ce - focal2).max() > 1e-3
    assert sampled.trainer_.config.sampler == "balanced"
    with pytest.raises(ConfigError, match="loss"):
        CNNClassifier(loss="dice")
