"""FID / KID with an in-domain extractor trained on real BreastMNIST, and the nearest-neighbour copy check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlens.data.builders import build_dataset
from medlens.synth.quality import (FeatureExtractor, copy_check, frechet_distance, kernel_distance,
                                   nearest_distances)

from realdata import need

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def breast(data_root):
    data = build_dataset("medmnist", need(data_root, "medmnist/breastmnist.npz"), name="breastmnist")
    train, test = (data.subset(np.flatnonzero(data.split == s)) for s in ("train", "test"))
    return train, test, FeatureExtractor(width=8, epochs=2, seed=0).fit(train)


def test_fid_and_kid_real_vs_real_below_real_vs_noise(breast):
    train, test, extract = breast
    noise = np.random.default_rng(0).random(test.images.shape, dtype=np.float32)
    f_train, f_test, f_noise = extract(train.images), extract(test.images), extract(noise)
    assert f_train.shape == (len(train), 32)
    assert frechet_distance(f_train, f_test) < frechet_distance(f_train, f_noise)
    assert kernel_distance(f_train, f_test)[0] < kernel_distance(f_train, f_noise)[0]
    assert abs(frechet_distance(f_test, f_test)) < 1e-6 * frechet_distance(f_train, f_noise)


def test_copy_check_flags_copies_not_new_images(breast):
    train, test, _ = breast
    copies = copy_check(train.images[:30], train.images, test.images)
    assert copies["copy_fraction"] == 1.0 and copies["ratio"] < 1e-3
    fresh = copy_check(test.images[:60], train.images, test.images[60:])
    assert fresh["copy_fraction"] < 0.1 and fresh["ratio"] > 0.7
    d = nearest_distances(train.images[:5], train.images, exclude_self=True)
    assert (d > 0).all()
