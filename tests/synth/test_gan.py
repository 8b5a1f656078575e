"""Conditional DCGAN / WGAN-GP: shapes, training on real BreastMNIST, sampling, checkpoints, CLI, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medlens.data.dataset import ArrayDataset
from medlens.deploy.bundle import BundleError, load_bundle
from medlens.errors import ConfigError
from medlens.synth.augment import augment_with_generator
from medlens.synth.gan import GAN, Discriminator, GANConfig, Generator, save_grid

from realdata import need

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def breast(data_root):
    """The 546 real BreastMNIST training images in [0, 1] and their labels."""
    from medlens.data.readers.medmnist import load_medmnist

    path = need(data_root, "medmnist/breastmnist.npz")
    images, labels = load_medmnist(path, "train")
    return path, images.astype(np.float32) / 255.0, labels.astype(np.int64)


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("kind", ["dcgan", "wgan-gp"])
def test_generator_and_discriminator_shapes(kind, size):
    config = GANConfig(kind=kind, image_size=size, channels=1, n_classes=3, width=4, latent_dim=8)
    g, d = Generator(config), Discriminator(config, spectral=kind == "dcgan")
    y = torch.tensor([0, 1, 2, 1])
    images = g(torch.randn(4, 8), y)
    assert images.shape == (4, 1, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert d(images, y).shape == (4,)


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="kind"):
        GANConfig(kind="stylegan")
    with pytest.raises(ConfigError, match="image_size"):
        GANConfig(image_size=32)


def test_dcgan_losses_move_on_real_images(breast):
    _, images, labels = breast
    gan = GAN(GANConfig(kind="dcgan", width=8, steps=40, batch_size=32, seed=0))
    h = gan.fit(images, labels)
    assert len(h.d_loss) == len(h.g_loss) == 40
    # The discriminator learns to separate real from generated images first: its loss falls from
    # about 2·log 2 while the generator's loss rises.
    assert np.mean(h.d_loss[-10:]) < np.mean(h.d_loss[:3])
    assert np.mean(h.g_loss[-10:]) > np.mean(h.g_loss[:3])


def test_wgan_gp_critic_separates_real_from_generated(breast):
    _, images, labels = breast
    gan = GAN(GANConfig(kind="wgan-gp", width=8, steps=8, n_critic=5, batch_size=32, seed=0))
    h = gan.fit(images, labels)
    assert h.gap[0] < np.mean(h.gap[-3:])  # E[D(real)] - E[D(fake)] grows as the critic trains
    assert np.mean(h.gap[-3:]) > 0 and np.mean(h.d_loss[-3:]) < 0


def test_sampling_by_label_is_seeded(breast):
    _, images, labels = breast
    gan = GAN(GANConfig(width=4, steps=2, batch_size=16, seed=1))
    gan.fit(images[:64], labels[:64])
    x, y = gan.sample(7, label=1, seed=5)
    assert x.shape == (7, 1, 28, 28) and (y == 1).all()
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(x, gan.sample(7, label=1, seed=5)[0])
    _, mixed = gan.sample(10)
    assert np.bincount(mixed).tolist() == [5, 5]
    with pytest.raises(ConfigError, match="label"):
        gan.sample(2, label=2)


def test_training_is_deterministic_under_a_seed(breast):
    _, images, labels = breast
    runs = []
    for _ in range(2):
        gan = GAN(GANConfig(width=4, steps=3, batch_size=16, seed=7))
        gan.fit(images[:64], labels[:64])
        runs.append(gan.sample(4, seed=0)[0])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_checkpoint_round_trip_and_grid(breast, tmp_path):
    _, images, labels = breast
    gan = GAN(GANConfig(kind="wgan-gp", width=4, steps=2, n_critic=1, batch_size=16, seed=0), ["malignant", "normal"])
    gan.fit(images[:64], labels[:64])
    folder = gan.save(tmp_path / "gan")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"]["kind"] == "wgan-gp" and manifest["labels"] == ["malignant", "normal"]
    assert (folder / "checksums.sha256").is_file() and not list(folder.glob("*.pt"))  # no pickle
    again = load_bundle(folder)  # the one loader of every bundle kind
    assert isinstance(again, GAN)
    np.testing.assert_array_equal(gan.sample(3, seed=2)[0], again.sample(3, seed=2)[0])
    png = save_grid(again.sample(10)[0], tmp_path / "grid.png", columns=4)
    assert Image.open(png).size == (4 * 30, 3 * 30)
    with pytest.raises(BundleError, match="no such bundle folder"):
        GAN.load(tmp_path / "nowhere")


def test_augment_appends_n_per_class_resized(breast):
    _, images, labels = breast
    data = ArrayDataset(images=images[:40], labels=labels[:40], meta={"labels": ["malignant", "normal"]},
                        split=np.full(40, "train"))
    gan = GAN(GANConfig(image_size=64, width=4, steps=1, batch_size=16, seed=0))
    gan.fit(images[:40], labels[:40])
    bigger = augment_with_generator(data, gan, n_per_class=6, seed=0)
    assert len(bigger) == 52 and bigger.images.shape[1:] == (1, 28, 28)
    assert np.bincount(bigger.labels[40:]).tolist() == [6, 6]
    assert bigger.meta["n_synthetic"] == 12 and (bigger.split[40:] == "train").all()
    np.testing.assert_array_equal(bigger.images[:40], data.images)


def test_cli_train_and_sample(breast, tmp_path):
    from medlens.commands.synth import app

    path, _, _ = breast
    config = tmp_path / "gan.yaml"
    config.write_text(f"data: {path}\nfraction: 0.2\nout: {tmp_path / 'gan'}\n"
                      "gan: {kind: dcgan, width: 4, steps: 2, batch_size: 16}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gan" / "samples.png").is_file()
    result = runner.invoke(app, ["sample", str(tmp_path / "gan"), "--n", "5", "--label", "0", "--out",
                                 str(tmp_path / "npz"), "--format", "npz"])
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "npz" / "samples.npz")
    assert saved["images"].shape == (5, 1, 28, 28) and (saved["labels"] == 0).all()
    result = runner.invoke(app, ["sample", str(tmp_path / "gan"), "--n", "3", "--out", str(tmp_path / "png")])
    assert result.exit_code == 0 and len(list((tmp_path / "png").glob("*.png"))) == 3
    config.write_text(f"data: {path}\nout: {tmp_path / 'x'}\ngan: {{kind: vae}}\n")
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2 and "kind" in result.output


def test_study_with_gan_augmentation_reports_the_samples(breast, tmp_path):
    """``augment: gan`` in a study: each training fold grows by n_per_class per class, the report shows the
    generator's samples, and the validation and test parts stay real."""
    from medlens.config import load_config
    from medlens.study import run_study

    _, images, labels = breast
    gan = GAN(GANConfig(width=4, steps=2, batch_size=16, seed=0), labels=["malignant", "normal"])
    gan.fit(images[:64], labels[:64])
    checkpoint = gan.save(tmp_path / "gan")
    config = load_config("configs/breastmnist_official.yaml")
    raw = config.model_dump()
    raw["models"] = [{**m, "quick_params": {"iterations": 20}} for m in raw["models"] if m["name"] == "bp"]
    raw["augment"] = {"checkpoint": checkpoint, "n_per_class": 7}
    config = type(config).model_validate(raw)
    results = run_study(config, tmp_path / "study", quick=True, quiet=True)
    grid = Image.open(tmp_path / "study" / "synthetic_samples.png")
    assert grid.size == (8 * 30, 2 * 30)  # 8 samples per class, one row per class, 28 px + 2 px frame
    report = (tmp_path / "study" / "report.html").read_text()
    assert "Synthetic training images from the GAN" in report and "7 per class" in report
    fold = results["models"]["bp"]["folds"][0]
    assert fold["n_synthetic"] == 14 and fold["n_train"] > 14


def test_an_interrupted_training_resumes_to_the_same_weights(breast, tmp_path, monkeypatch):
    """A training stopped after 5 of 6 steps continues from its step-4 checkpoint and ends with the weights
    of an uninterrupted training."""
    _, images, labels = breast
    config = GANConfig(kind="wgan-gp", width=4, steps=6, n_critic=1, batch_size=16, seed=0)
    whole = GAN(config)
    whole.fit(images[:64], labels[:64])
    step = GAN._generator_step
    calls = [0]

    def stopping(self, *args):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(GAN, "_generator_step", stopping)
    with pytest.raises(KeyboardInterrupt):
        GAN(config).fit(images[:64], labels[:64], checkpoint=tmp_path / "gan.pt", every=2)
    monkeypatch.setattr(GAN, "_generator_step", step)
    resumed = GAN(config)
    history = resumed.fit(images[:64], labels[:64], checkpoint=tmp_path / "gan.pt", every=2)
    assert len(history.g_loss) == 6 and history.g_loss == pytest.approx(whole.history.g_loss)
    for key, value in whole.generator.state_dict().items():
        assert torch.equal(resumed.generator.state_dict()[key], value), key
