"""Dice, IoU, HD95 and pixel error on real lung masks, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from realdata import need
from medlens.errors import GeometryError
from medlens.evaluate import metrics
from medlens.segment.evaluate import case_metrics, mean_dice, overlay, summarize_cases


@pytest.fixture(scope="module")
def lung_masks(data_root):
    folder = need(data_root, "montgomery_cxr_lung_masks/masks")
    return [np.asarray(Image.open(p)) >= 128 for p in sorted(folder.glob("*.png"))[:3]]


def _hd95_scipy(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile surface distance with edges = mask minus its erosion."""
    ea, eb = a ^ ndi.binary_erosion(a), b ^ ndi.binary_erosion(b)
    da = ndi.distance_transform_edt(~eb, sampling=spacing)[ea]
    db = ndi.distance_transform_edt(~ea, sampling=spacing)[eb]
    return max(np.percentile(da, 95), np.percentile(db, 95))


def test_metrics_agree_with_independent_formulas(lung_masks):
    for true in lung_masks:
        pred = ndi.binary_dilation(np.roll(true, 7, axis=0), iterations=3)
        m = case_metrics(pred.astype(int), true.astype(int), 2, spacing=(0.7, 0.5))
        inter, s = np.logical_and(pred, true).sum(), pred.sum() + true.sum()
        assert m["dice"] == pytest.approx(2 * inter / s, rel=1e-6)
        assert m["iou"] == pytest.approx(inter / np.logical_or(pred, true).sum(), rel=1e-6)
        assert m["pixel_error"] == pytest.approx(np.mean(pred != true))
        assert m["hd95"] == pytest.approx(_hd95_scipy(pred, true, (0.7, 0.5)), rel=0.02)
        assert mean_dice(pred.astype(int), true.astype(int)) == pytest.approx(m["dice"], rel=1e-6)
        assert metrics.dice(pred, true) == pytest.approx(m["dice"], rel=1e-6)
        assert metrics.iou(pred, true) == pytest.approx(m["iou"], rel=1e-6)


def test_perfect_and_empty_conventions(lung_masks):
    true = lung_masks[0].astype(int)
    m = case_metrics(true, true)
    assert m == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "pixel_error": 0.0}
    empty = np.zeros_like(true)
    assert case_metrics(empty, empty)["dice"] == 1.0
    m = case_metrics(empty, true)
    assert m["dice"] == 0.0 and np.isnan(m["hd95"])
    s = summarize_cases([case_metrics(true, true), m])
    assert s["hd95"]["n"] == 1 and s["dice"]["mean"] == 0.5
    with pytest.raises(GeometryError):
        case_metrics(true[:10], true)


def test_overlay_png(lung_masks, tmp_path, data_root):
    image = np.asarray(Image.open(need(data_root, "montgomery_cxr_lung_masks/images/MCUCXR_0001_0.png")))
    true = lung_masks[0]
    pred = ndi.binary_erosion(true, iterations=5)
    path = overlay(image[None].astype(np.float32), pred, true, tmp_path / "o.png")
    rgb = np.asarray(Image.open(path))
    assert rgb.shape == (512, 512, 3)
    red = (rgb == (255, 0, 0)).all(axis=2)
    green = (rgb == (0, 255, 0)).all(axis=2)
    assert red.sum() > 500 and green.sum() > 500
    assert true[green].all() and pred[red].all()


def test_montgomery_evaluation_reports_normal_and_tb_subgroups(data_root, tmp_path):
    """Montgomery's index.csv labels each X-ray normal or TB: the evaluation is summarised per subgroup."""
    import pandas as pd

    from medlens.segment.datasets import load_folder
    from medlens.segment.evaluate import evaluate_cases

    folder = need(data_root, "montgomery_cxr_lung_masks")
    index = pd.read_csv(folder / "index.csv")
    names = [f[:-4] for f in pd.concat([index[index.tb_label == 0].head(3), index[index.tb_label == 1].head(2)])["file"]]
    cases = load_folder(folder, names=names)
    assert sorted(c.meta["subgroup"] for c in cases) == ["normal"] * 3 + ["tuberculosis"] * 2
    # predictions: each true lung mask eroded by a number of pixels that grows with the case, so scores differ
    preds = {c.case_id: ndi.binary_erosion(c.mask, iterations=2 + 4 * i).astype(np.int64) for i, c in enumerate(cases)}
    result = evaluate_cases(preds, cases)
    groups = result["subgroups"]
    assert set(groups) == {"normal", "tuberculosis"} and groups["normal"]["n"] == 3 and groups["tuberculosis"]["n"] == 2
    for name, group in groups.items():
        dice = [row["dice"] for row in result["cases"] if row["subgroup"] == name]
        assert group["dice"]["mean"] == pytest.approx(np.mean(dice))
    assert groups["normal"]["dice"]["mean"] != groups["tuberculosis"]["dice"]["mean"]
    from medlens.segment.evaluate import evaluation_card

    card = evaluation_card(result, folder, tmp_path / "preds")
    assert "## Subgroups" in card and "tuberculosis" in card and "Research use only" in card


def test_postprocess_restores_a_damaged_real_lung_mask(lung_masks):
    from medlens.segment.postprocess import keep_component, postprocess

    truth = (lung_masks[0] > 0).astype(np.int64)
    assert ndi.label(truth, np.ones((3, 3)))[1] == 2  # two lung fields
    damaged = truth.copy()
    damaged[5:15, 5:15] = 1  # a false-positive blob outside the lungs
    ys, xs = np.argwhere(truth).mean(axis=0).astype(int)
    cols = np.nonzero(truth[ys])[0]
    hole_x = cols[len(cols) // 4]  # inside the first lung field met along the centre row
    damaged[ys - 4:ys + 4, hole_x - 4:hole_x + 4] = 0  # a hole, as an opacity can make
    assert not np.array_equal(damaged, truth)
    restored = postprocess(damaged, {"keep_component": "largest", "keep_count": 2, "fill_holes": True})
    assert np.array_equal(restored, truth)
    one = keep_component(damaged, "largest")  # the default count keeps a single lung
    assert ndi.label(one, np.ones((3, 3)))[1] == 1 and one.sum() < truth.sum()
    assert postprocess(damaged, {}) is damaged


@pytest.fixture(scope="module")
def membranes(data_root):
    folder = need(data_root, "isbi2012_membrane/train/label")
    return [np.asarray(Image.open(p)) >= 128 for p in sorted(folder.glob("*.png"))[:3]]  # 255: cell interior


def test_isbi_pixel_error_is_one_minus_the_pooled_fscore(membranes):
    from sklearn.metrics import f1_score

    from medlens.segment.evaluate import ISBI_THRESHOLDS, fscore_pixel_error

    # a foreground probability: the real label blurred, so thresholds trade membrane for interior
    probs = [ndi.gaussian_filter(t.astype(float), 1.5) * 0.9 + 0.05 for t in membranes]
    pooled_true = np.concatenate([t.ravel() for t in membranes])
    pooled_prob = np.concatenate([p.ravel() for p in probs])
    at_half = fscore_pixel_error(probs, membranes)
    assert at_half["error"] == pytest.approx(1 - f1_score(pooled_true, pooled_prob > 0.5))
    swept = fscore_pixel_error(probs, membranes, ISBI_THRESHOLDS)
    best = max(f1_score(pooled_true, pooled_prob > th) for th in ISBI_THRESHOLDS)
    assert swept["error"] == pytest.approx(1 - best) and swept["error"] <= at_half["error"]
    assert fscore_pixel_error(membranes, membranes)["error"] == 0.0
    # the challenge's error is not the share of wrong pixels: membranes are a minority class
    wrong = np.mean(pooled_true != (pooled_prob > 0.5))
    assert at_half["error"] < wrong


def test_binary_evaluation_reports_the_isbi_pixel_error(membranes):
    from medlens.image import MedImage
    from medlens.segment.datasets import SegCase
    from medlens.segment.evaluate import evaluate_cases

    cases = [SegCase(MedImage(t[None].astype(np.float32), (1.0, 1.0)), t.astype(np.int64), f"c{i}", f"c{i}")
             for i, t in enumerate(membranes)]
    preds = {c.case_id: ndi.binary_erosion(c.mask, iterations=2).astype(np.int64) for c in cases}
    result = evaluate_cases(preds, cases)
    pooled = metrics.dice(np.concatenate([p.ravel() > 0 for p in preds.values()]),
                          np.concatenate([t.ravel() for t in membranes]))
    assert result["summary"]["pixel_error_fscore"] == pytest.approx(1 - pooled)


def test_drop_small_components_removes_specks_and_keeps_the_lungs(lung_masks):
    from medlens.segment.postprocess import drop_small_components, postprocess

    true = lung_masks[0].astype(np.int64)
    specks = true.copy()
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, true.shape[0] - 3, 20), rng.integers(0, true.shape[1] - 3, 20)
    for y, x in zip(ys, xs):
        if not true[y:y + 3, x:x + 3].any():
            specks[y:y + 2, x:x + 2] = 1  # a 4-pixel speck away from the lungs
    assert (specks != true).sum() > 0
    np.testing.assert_array_equal(drop_small_components(specks, 5), true)
    np.testing.assert_array_equal(drop_small_components(specks, 4), specks)  # 4-pixel specks stay at 4
    np.testing.assert_array_equal(postprocess(specks, {"min_component_size": 5}), true)
    np.testing.assert_array_equal(postprocess(specks, {}), specks)
