"""The MedMNIST reader on the real archives, and its errors on broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from realdata import need
from medlens.data import catalog
from medlens.data.readers.medmnist import load_medmnist, medmnist_counts
from medlens.errors import BadArchiveError, DatasetError, MissingPathError, UnreadableFileError

REAL = ["pneumoniamnist", "breastmnist", "adrenalmnist3d", "adrenalmnist3d_64"]


@pytest.mark.parametrize("name", REAL)
def test_counts_equal_the_catalogue(data_root, name):
    path = need(data_root, catalog.get(name).local_path)
    counts = medmnist_counts(path)
    assert {split: sum(per.values()) for split, per in counts.items()} == catalog.get(name).splits
    assert all(len(per) == len(catalog.get(name).labels) for per in counts.values())


def test_class_counts_equal_the_published_tables(data_root):
    # Per-class counts from the shared data README (sections 1 and 6).
    assert medmnist_counts(need(data_root, "medmnist/breastmnist.npz")) == {
        "train": {0: 147, 1: 399}, "val": {0: 21, 1: 57}, "test": {0: 42, 1: 114}}
    assert medmnist_counts(need(data_root, "medmnist/pneumoniamnist.npz")) == {
        "train": {0: 1214, 1: 3494}, "val": {0: 135, 1: 389}, "test": {0: 234, 1: 390}}
    assert medmnist_counts(need(data_root, "medmnist/adrenalmnist3d.npz"))["test"] == {0: 229, 1: 69}


@pytest.mark.parametrize("name", REAL)
def test_loaded_split_is_channel_first_uint8(data_root, name):
    info = catalog.get(name)
    images, labels = load_medmnist(need(data_root, info.local_path), "val")
    n = info.splits["val"]
    assert images.shape == (n, 1, *[info.size_px] * info.dims)
    assert images.dtype == np.uint8 and labels.shape == (n,)
    assert set(np.unique(labels)) <= set(range(len(info.labels)))


def test_adrenal_sizes_hold_the_same_samples(data_root):
    small, y_small = load_medmnist(need(data_root, "medmnist/adrenalmnist3d.npz"), "test")
    large, y_large = load_medmnist(need(data_root, "medmnist/adrenalmnist3d_64.npz"), "test")
    np.testing.assert_array_equal(y_small, y_large)
    assert set(np.unique(small)) == {0, 255}  # binary shape masks, as documented
    fraction_small = (small > 0).reshape(len(small), -1).mean(axis=1)
    fraction_large = (large > 0).reshape(len(large), -1).mean(axis=1)
    assert np.corrcoef(fraction_small, fraction_large)[0, 1] > 0.95


def _archive(path, images, labels, splits=("train", "val", "test")):
    arrays = {}
    for split in splits:
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez_compressed(path, **arrays)
    return path


def test_rgb_images_become_channel_first(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 28, 28, 3), dtype=np.uint8)
    images, labels = load_medmnist(_archive(tmp_path / "rgb.npz", rgb, np.arange(5).reshape(5, 1)), "train")
    assert images.shape == (5, 3, 28, 28) and images.flags.c_contiguous
    np.testing.assert_array_equal(images[2, 1], rgb[2, :, :, 1])
    np.testing.assert_array_equal(labels, np.arange(5))


def test_multilabel_labels_are_kept_and_counted_per_label(tmp_path):
    multi = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.uint8)
    path = _archive(tmp_path / "multi.npz", np.zeros((4, 28, 28), np.uint8), multi)
    _, labels = load_medmnist(path, "test")
    assert labels.shape == (4, 3)
    assert medmnist_counts(path)["val"] == {0: 3, 1: 1, 2: 2}


def test_missing_keys_are_named(tmp_path):
    path = _archive(tmp_path / "partial.npz", np.zeros((2, 28, 28), np.uint8), np.zeros((2, 1)), ("train",))
    with pytest.raises(BadArchiveError, match="val_images, val_labels") as err:
        load_medmnist(path, "val")
    assert "partial.npz" in str(err.value)
    with pytest.raises(BadArchiveError, match="val_labels, test_labels"):
        medmnist_counts(path)


def test_bad_inputs(tmp_path):
    with pytest.raises(MissingPathError):
        load_medmnist(tmp_path / "absent.npz", "train")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive at all")
    with pytest.raises(UnreadableFileError, match="junk.npz"):
        load_medmnist(junk, "train")
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(BadArchiveError, match="3 images but train_labels 2"):
        load_medmnist(mismatched, "train")
    floats = tmp_path / "floats.npz"
    np.savez(floats, train_images=np.zeros((2, 28, 28), np.float32), train_labels=np.zeros((2, 1)))
    with pytest.raises(BadArchiveError, match="float32"):
        load_medmnist(floats, "train")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load_medmnist(floats, "training")
