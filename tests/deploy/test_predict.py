"""`medlens train` → bundle → `medlens predict` on real BreastMNIST test images, with Grad-CAM."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from medlens.deploy.classifier import load_classifier as load_bundle
from medlens.commands.predict import predict
from medlens.commands.train import train
from medlens.deploy.explain import grad_cam
from medlens.models.cnn import last_conv_block
from medlens.models.cnn import compact_cnn
from medlens.deploy.predict import prepare_file

from realdata import REPO, need

torch.set_num_threads(1)
CONFIG = REPO / "src/medlens/configs/breastmnist_official.yaml"

app = typer.Typer()
app.command(name="train")(train)
app.command(name="predict")(predict)


@pytest.fixture(scope="module")
def breast_npz(data_root):
    return need(data_root, "medmnist/breastmnist.npz")


@pytest.fixture(scope="module")
def bundle(breast_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    result = CliRunner().invoke(app, ["train", str(CONFIG), "--out", str(out), "--quick", "--max-samples", "300",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def inputs(breast_npz, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    test_images = np.load(breast_npz)["test_images"]
    pngs = []
    for i in range(3):
        Image.fromarray(test_images[i]).save(folder / f"case{i}.png")
        pngs.append(folder / f"case{i}.png")
    # A 56×56 RGB copy of test image 0: must be brought to 1×28×28.
    Image.fromarray(np.repeat(np.kron(test_images[0], np.ones((2, 2), np.uint8))[..., None], 3, axis=2)).save(
        folder / "big_rgb.png")
    np.savez(folder / "four.npz", test_images=test_images[:4])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, pngs, test_images


def test_train_writes_a_bundle_with_test_metrics(bundle):
    loaded = load_bundle(bundle)
    manifest = loaded.manifest
    assert manifest["model"]["id"] == "cnn" and manifest["model"]["params"]["epochs"] == 2
    assert manifest["metrics"]["split"] == "official test" and 0.0 <= manifest["metrics"]["auc"] <= 1.0
    assert manifest["data"]["md5"] and manifest["data"]["image_shape"] == [1, 28, 28]


def test_predict_pngs_npz_and_corrupt_file(bundle, inputs, tmp_path):
    folder, pngs, _ = inputs
    files = [*pngs, folder / "corrupt.png", folder / "four.npz", folder / "big_rgb.png"]
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(bundle), *map(str, files), "--out", str(out),
                                      "--explain", str(tmp_path / "cams"), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 3 + 1 + 4 + 1
    errors = table[table["error"].notna()]
    assert list(errors["path"]) == [str(folder / "corrupt.png")] and "cannot decode" in errors["error"].iloc[0]
    good = table[table["error"].isna()]
    p = good[["p_malignant", "p_normal, benign"]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert set(good["label"]) <= {"malignant", "normal, benign"} and (table["threshold"] == 0.5).all()
    # The PNG of test image i and row i of the npz hold the same pixels: same probabilities.
    npz_rows = good[good["path"] == str(folder / "four.npz")]
    assert list(npz_rows["index"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(good[good["path"].isin(map(str, pngs))]["p_malignant"].to_numpy(),
                               npz_rows["p_malignant"].to_numpy()[:3], atol=1e-9)
    assert len(list((tmp_path / "cams").glob("*.png"))) == 3 + 4 + 1


def test_resized_colour_picture_matches_layout(bundle, inputs):
    folder, _, test_images = inputs
    prepared = prepare_file(folder / "big_rgb.png", (1, 28, 28))
    assert prepared.error is None and prepared.images.shape == (1, 1, 28, 28)
    # 2×2 block replication then anti-aliased downsampling returns close to the original pixels.
    assert np.abs(prepared.images[0, 0] - test_images[0] / 255.0).mean() < 0.05


def test_grad_cam_map_has_image_shape_and_varies(bundle, inputs):
    _, _, test_images = inputs
    model = load_bundle(bundle).model
    images = test_images[:3, None].astype(np.float32) / 255.0
    maps = grad_cam(model, images)
    assert maps.shape == (3, 28, 28)
    assert np.all(maps.std(axis=(1, 2)) > 0.01) and maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6


def test_last_conv_block_of_compact_net_is_its_last_pool():
    network = compact_cnn(2, 1, 2, width=4, depth=2)
    name = last_conv_block(network)
    assert isinstance(dict(network.named_modules())[name], torch.nn.MaxPool2d) and name == "7"


def test_batching_across_files_keeps_order_and_probabilities(bundle, inputs):
    from medlens.deploy.predict import predict_files

    folder, pngs, _ = inputs
    files = [pngs[0], folder / "corrupt.png", folder / "four.npz", pngs[1], folder / "big_rgb.png", pngs[2]]
    loaded = load_bundle(bundle)
    together, _ = predict_files(loaded, files)  # one model call for all 9 good images
    one_by_one, _ = predict_files(loaded, files, batch_size=1)
    assert list(together["path"]) == list(one_by_one["path"]) == [
        str(f) for f in files for _ in range(4 if f.suffix == ".npz" else 1)]
    pd.testing.assert_frame_equal(together.drop(columns=["p_malignant", "p_normal, benign"]),
                                  one_by_one.drop(columns=["p_malignant", "p_normal, benign"]))
    np.testing.assert_allclose(together["p_malignant"].to_numpy(dtype=float),
                               one_by_one["p_malignant"].to_numpy(dtype=float), atol=1e-3)
