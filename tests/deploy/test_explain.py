"""Explanation maps on real images: BreastMNIST (2D ResNet) and LIDC-IDRI nodule cubes (3D compact CNN).

Checks: shapes and [0, 1] range of Grad-CAM, Grad-CAM++ and occlusion maps in 2D and 3D; agreement with
MONAI's GradCAM / GradCAMpp on single images and per-image classes in batches; the model-parameter
randomisation sanity test (Adebayo et al., NeurIPS 2018); a deletion test (hiding the most important
region lowers the class probability more than hiding a random region of the same size); overlays.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import uniform_filter
from scipy.stats import spearmanr

from medlens.data.dataset import ArrayDataset
from medlens.deploy.explain import (METHODS, blend, explain, grad_cam, unit_scale, volume_slices, with_random_weights,
                                    write_overlay)
from medlens.errors import ModelError
from medlens.models.cnn import last_conv_block
from medlens.models.registry import build

from realdata import need

torch.set_num_threads(1)
N_TEST = 32  # BreastMNIST test images explained
BOX = 7  # side of the masked square in the deletion test (a quarter of 28)
RANDOMISATION_BOUND = 0.5  # mean Spearman ρ(trained map, randomised-weights map) must stay below this


@pytest.fixture(scope="module")
def breast(data_root):
    z = np.load(need(data_root, "medmnist/breastmnist.npz"))
    meta = {"labels": ["malignant", "normal, benign"]}

    def part(split, n=None):
        return ArrayDataset(images=z[f"{split}_images"][:n, None].astype(np.float32) / 255.0,
                            labels=z[f"{split}_labels"][:n, 0].astype(np.int64), meta=dict(meta))

    return part("train"), part("val"), part("test", N_TEST)


@pytest.fixture(scope="module")
def model2d(breast):
    """The BreastMNIST config's ResNet, trained 5 epochs on the official train split (a few seconds)."""
    train, val, _ = breast
    return build("cnn", arch="resnet", epochs=5, progress=False, seed=0).fit(train, val)


@pytest.fixture(scope="module")
def maps2d(model2d, breast):
    images = breast[2].images
    return {method: explain(model2d, images, method) for method in METHODS}


@pytest.fixture(scope="module")
def model3d(data_root):
    """The LIDC study's 3D compact CNN (inputs (N, 2, 32, 32, 32)), one short epoch on 24 real nodule cubes."""
    from medlens.data.builders import lidc_nodules

    data = lidc_nodules(need(data_root, "lidc_idri_nodule_vois"), max_samples=24, seed=0)
    model = build("cnn", arch="compact", epochs=1, batch_size=8, progress=False, seed=0).fit(data)
    return model, data.images[:2]


def class_probability(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy((images - model.mean_) / model.std_)
        return model.network_.eval()(x).softmax(1).numpy()[np.arange(len(images)), classes]


def mask_box(images: np.ndarray, rows, cols, value: float) -> np.ndarray:
    """Copies of ``images`` with a BOX×BOX square centred at (row, col) (moved inside) set to ``value``."""
    out = images.copy()
    side = images.shape[-1]
    for i, (r, c) in enumerate(zip(rows, cols)):
        r0, c0 = (int(np.clip(v - BOX // 2, 0, side - BOX)) for v in (r, c))
        out[i, :, r0:r0 + BOX, c0:c0 + BOX] = value
    return out


# --------------------------------------------------------------------------------------------------
# Shapes and ranges
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_2d_maps_have_image_shape_unit_range_and_vary(maps2d, method):
    maps = maps2d[method]
    assert maps.shape == (N_TEST, 28, 28) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # Each map is scaled by its own range: it spans [0, 1] and is not flat.
    np.testing.assert_allclose(maps.reshape(N_TEST, -1).max(axis=1), 1.0, atol=1e-6)
    assert np.all(maps.std(axis=(1, 2)) > 0.02)


@pytest.mark.parametrize("method", METHODS)
def test_3d_maps_of_lidc_cubes(model3d, method, tmp_path):
    model, cubes = model3d
    assert cubes.shape == (2, 2, 32, 32, 32)
    options = {"mask_size": 16} if method == "occlusion" else {}
    maps = explain(model, cubes, method, **options)
    assert maps.shape == (2, 32, 32, 32) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.all(maps.std(axis=(1, 2, 3)) > 0.01)
    path = write_overlay(cubes[0], maps[0], tmp_path / "cube.png", title=method)
    picture = np.asarray(Image.open(path))
    # Three 32×7 = 224 pixel panels with 4-pixel gaps, under a 14-pixel title strip.
    assert picture.shape == (14 + 224, 3 * 224 + 2 * 4, 3)


# --------------------------------------------------------------------------------------------------
# Agreement with MONAI and per-image classes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cams_match_monai_on_single_images(model2d, breast, method):
    from monai.visualize import GradCAM, GradCAMpp

    images = breast[2].images[:4]
    # MONAI's Grad-CAM++ divides by (2g² + ΣA·g³ + 1e-7); with this network's small gradients that 1e-7
    # moves the maps by up to 0.02. Logits scaled by 10 (same predictions, same Grad-CAM, g² 100× larger)
    # bring that below 0.002 (it falls as 1/scale²); a larger scale would overflow MONAI's exp(score).
    model = copy.deepcopy(model2d)  # MONAI's hooks stay on the module: use a copy
    with torch.no_grad():
        model.network_[-1].weight.mul_(10.0)
        model.network_[-1].bias.mul_(10.0)
    network = model.network_.eval()
    monai_cam = {"gradcam": GradCAM, "gradcam++": GradCAMpp}[method](
        network, target_layers=last_conv_block(network), postprocessing=lambda m: m)
    for c in (0, 1):
        ours = explain(model, images, method, class_index=c)
        for i in range(len(images)):
            x = torch.from_numpy((images[i:i + 1] - model.mean_) / model.std_)
            reference = unit_scale(monai_cam(x, class_idx=c)[:, 0])
            np.testing.assert_allclose(ours[i], reference[0], atol={"gradcam": 1e-5, "gradcam++": 3e-3}[method])


@pytest.mark.parametrize("method", METHODS)
def test_batch_maps_explain_each_images_own_class(model2d, breast, maps2d, method):
    images = breast[2].images
    predicted = model2d.predict_proba(breast[2]).argmax(1)
    assert len(set(predicted)) == 2  # both classes occur, so a batch that mixed them would show here
    chosen = [0, int(np.argmax(predicted == 0)), int(np.argmax(predicted == 1))]
    for i in chosen:
        np.testing.assert_allclose(maps2d[method][i], explain(model2d, images[i:i + 1], method)[0], atol=1e-5)
    np.testing.assert_allclose(explain(model2d, images, method, class_index=predicted), maps2d[method], atol=1e-5)


def test_grad_cam_is_explain_gradcam_and_bad_arguments_fail(model2d, breast, maps2d):
    np.testing.assert_array_equal(grad_cam(model2d, breast[2].images), maps2d["gradcam"])
    with pytest.raises(ModelError, match="unknown method"):
        explain(model2d, breast[2].images, "saliency")
    with pytest.raises(ModelError, match="class_index"):
        explain(model2d, breast[2].images[:2], "gradcam", class_index=2)
    with pytest.raises(ModelError, match="no option mask_size"):
        explain(model2d, breast[2].images[:2], "gradcam", mask_size=8)
    with pytest.raises(ModelError, match="takes 2D images"):
        explain(model2d, np.zeros((1, 1, 8, 8, 8), np.float32))


def test_occlusion_explains_a_model_without_a_network(breast):
    """Occlusion needs forward passes only: a BP network on raw pixels is explained as a black box."""
    train, _, test = breast
    bp = build("bp", inputs="pixels", hidden=[16], iterations=300, seed=0).fit(train)
    maps = explain(bp, test.images[:4], "occlusion")
    assert maps.shape == (4, 28, 28) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.all(maps.std(axis=(1, 2)) > 0.01)
    with pytest.raises(ModelError, match="model 'bp' cannot be explained by gradcam; it supports occlusion"):
        explain(bp, test.images[:4], "gradcam")
    features_only = build("bp", hidden=[4], iterations=5, seed=0)
    with pytest.raises(ModelError, match="model 'bp' cannot be explained by occlusion; its inputs are not images"):
        explain(features_only, test.images[:4], "occlusion")


# --------------------------------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_model_parameter_randomisation(model2d, breast, maps2d, method):
    """Adebayo et al. (2018): maps must depend on the learned weights. The same architecture with
    re-initialised weights gives maps whose mean Spearman rank correlation with the trained model's
    maps is below RANDOMISATION_BOUND; the trained model's maps are deterministic."""
    images = breast[2].images
    trained = maps2d[method]
    np.testing.assert_array_equal(explain(model2d, images, method), trained)
    randomised = explain(with_random_weights(model2d, seed=1), images, method)
    varying = randomised.std(axis=(1, 2)) > 0
    assert varying.mean() >= 0.9  # a flat random map would make ρ undefined, not small
    rho = [spearmanr(trained[i].ravel(), randomised[i].ravel())[0] for i in np.flatnonzero(varying)]
    assert np.mean(rho) < RANDOMISATION_BOUND, f"mean Spearman ρ {np.mean(rho):.3f}"


@pytest.mark.parametrize("method", METHODS)
def test_masking_the_most_important_region_lowers_the_score_more_than_a_random_one(model2d, breast, maps2d, method):
    """Deletion check on the trained model: a BOX×BOX square at the map's most important place, set to
    the training mean (the occlusion baseline), lowers the explained class's probability more on average
    than squares of the same size at random places (20 per image)."""
    images = breast[2].images
    classes = model2d.predict_proba(breast[2]).argmax(1)
    base = class_probability(model2d, images, classes)
    centres = [np.unravel_index(np.argmax(uniform_filter(m, size=BOX, mode="constant")), m.shape)
               for m in maps2d[method]]
    rows, cols = np.array(centres).T
    top_drop = base - class_probability(model2d, mask_box(images, rows, cols, model2d.mean_), classes)
    rng = np.random.default_rng(0)
    random_drop = np.mean([base - class_probability(
        model2d, mask_box(images, rng.integers(0, 28, N_TEST), rng.integers(0, 28, N_TEST), model2d.mean_), classes)
        for _ in range(20)], axis=0)
    assert top_drop.mean() > random_drop.mean(), (top_drop.mean(), random_drop.mean())


# --------------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------------
def test_2d_overlay_is_the_alpha_blend_of_image_and_jet_map(breast, tmp_path):
    image = breast[2].images[0]
    heat = np.zeros((28, 28), np.float32)
    heat[:, :14] = 1.0
    path = write_overlay(image, heat, tmp_path / "a" / "overlay.png", title="case 0")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == (14 + 224, 224, 3)
    panel = picture[14:]
    expected = blend(image[0], heat)
    np.testing.assert_array_equal(panel[::8, ::8], expected)  # 8× nearest-neighbour enlargement
    hot, cold = panel[:, :112].reshape(-1, 3).astype(int), panel[:, 112:].reshape(-1, 3).astype(int)
    assert (hot[:, 0] > hot[:, 2]).all() and (cold[:, 2] > cold[:, 0]).all()  # jet: 1 red, 0 blue
    # The gray part follows the image: brighter pixels give brighter overlay pixels where the map is flat.
    gray = image[0][:, 14:].ravel()
    assert spearmanr(gray, expected[:, 14:, 1].ravel())[0] > 0.95


def test_volume_slices_pass_through_the_map_maximum():
    image = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    heat = np.zeros((5, 6, 7), np.float32)
    heat[1, 4, 2] = 1.0
    centre, panels = volume_slices(image, heat)
    assert centre == (1, 4, 2)
    assert [p[0].shape for p in panels] == [(6, 7), (5, 7), (5, 6)]
    assert all(p[1].max() == 1.0 for p in panels)
    np.testing.assert_array_equal(panels[2][0], image[:, :, 2])
    assert volume_slices(image, np.zeros_like(heat))[0] == (2, 3, 3)  # flat map: the centre
