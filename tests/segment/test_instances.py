"""Instance pipeline on the real DSB 2018 nuclei labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realdata import need
from medlens.errors import ConfigError
from medlens.segment.datasets import mask_to_target
from medlens.segment.instances import (aggregated_jaccard, instances_from_foreground, match_instances,
                                       measure_instances)


@pytest.fixture(scope="module")
def dsb_labels(data_root):
    folder = need(data_root, "nuclei_dsb2018_stage1_subset/labels")
    files = sorted(folder.glob("*.png"))[:12]
    return [(f, np.asarray(Image.open(f)).astype(np.int64)) for f in files]


def test_gt_against_itself_scores_one(dsb_labels):
    for _, inst in dsb_labels:
        m = match_instances(inst, inst, 0.5)
        assert m["ap"] == 1.0 and m["fp"] == 0 and m["fn"] == 0
        assert m["n_true"] == len(np.unique(inst)) - 1
        assert aggregated_jaccard(inst, inst) == pytest.approx(1.0)


def test_watershed_from_gt_interior_recovers_counts(dsb_labels):
    true_n, pred_n, aps = 0, 0, []
    for path, inst in dsb_labels:
        target, _ = mask_to_target(inst, "instance", 3, path)
        lab = instances_from_foreground(target > 0, interior=target == 1, markers="components", min_size=1)
        m = match_instances(inst, lab, 0.5)
        true_n, pred_n = true_n + m["n_true"], pred_n + m["n_pred"]
        aps.append(m["ap"])
    assert abs(pred_n - true_n) / true_n < 0.05
    assert np.mean(aps) > 0.95


def test_components_merge_touching_nuclei(dsb_labels):
    # connected components of the bare foreground cannot split touching nuclei: fewer objects
    total_true = total_cc = 0
    for _, inst in dsb_labels:
        total_true += len(np.unique(inst)) - 1
        total_cc += int(instances_from_foreground(inst > 0, method="components", min_size=1).max())
    assert total_cc < total_true


def test_hmaxima_markers_split_touching_nuclei_of_the_bare_foreground(dsb_labels):
    # no interior map at all: the h-maxima of the smoothed distance map recover touching nuclei that
    # connected components merge and that distance-map peaks over-split
    aps = {"components": [], "peaks": [], "hmaxima": [], "relative": []}
    for _, inst in dsb_labels:
        fg = inst > 0
        labs = {"components": instances_from_foreground(fg, method="components", min_size=1),
                "peaks": instances_from_foreground(fg, markers="components", min_size=1),
                "hmaxima": instances_from_foreground(fg, markers="hmaxima", h=2.0, smooth=1.0, min_size=1),
                "relative": instances_from_foreground(fg, markers="hmaxima_relative", h=0.1, min_size=1)}
        for name, lab in labs.items():
            aps[name].append(match_instances(inst, lab, 0.5)["ap"])
    mean = {k: float(np.mean(v)) for k, v in aps.items()}
    assert min(mean["hmaxima"], mean["relative"]) > max(mean["components"], mean["peaks"]) + 0.05, mean


def test_nucleus_without_interior_marker_is_kept(dsb_labels):
    path, inst = dsb_labels[0]
    target, _ = mask_to_target(inst, "instance", 3, path)
    lost = inst == np.unique(inst)[1]
    target[lost & (target == 1)] = 2  # the network saw only boundary in this nucleus
    for markers in ("components", "hmaxima", "hmaxima_relative"):
        lab = instances_from_foreground(target > 0, interior=target == 1, markers=markers, min_size=1)
        assert (lab[lost] > 0).all()
        assert match_instances(inst, lab, 0.5)["n_pred"] >= len(np.unique(inst)) - 1 - 1


def test_unknown_markers_is_a_config_error(dsb_labels):
    with pytest.raises(ConfigError, match="markers"):
        instances_from_foreground(dsb_labels[0][1] > 0, markers="peaks")


def test_write_instances_label_image_and_table(data_root, tmp_path):
    from medlens.segment.infer import write_instances
    from medlens.segment.io import read_image

    root = need(data_root, "nuclei_dsb2018_stage1_subset")
    path = sorted((root / "labels").glob("*.png"))[0]
    inst = np.asarray(Image.open(path)).astype(np.int64)
    target, _ = mask_to_target(inst, "instance", 3, path)  # a perfect 3-class prediction
    image = read_image(root / "images" / path.name)
    png, csv = write_instances(target, image, tmp_path, "case")
    with Image.open(png) as im:
        labels = np.asarray(im)
    assert labels.shape == inst.shape and labels.dtype == np.uint16
    assert match_instances(inst, labels, 0.5)["ap"] > 0.85  # h-maxima split a few elongated nuclei
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == labels.max() and table["area"].sum() == (labels > 0).sum()
    assert list(table.columns) == ["label", "area", "centroid-0", "centroid-1", "mean_intensity"]


def test_measurements(dsb_labels):
    path, inst = dsb_labels[0]
    lab = instances_from_foreground(inst > 0, method="components", min_size=1)
    with Image.open(path.parent.parent / "images" / path.name) as im:  # the nuclei's own image
        intensity = np.asarray(im.convert("L"), dtype=np.float64)
    table = measure_instances(lab, intensity)
    assert len(table["label"]) == lab.max()
    assert table["area"].sum() == (inst > 0).sum()
    k = 0
    region = lab == table["label"][k]
    assert table["mean_intensity"][k] == pytest.approx(intensity[region].mean())
    assert table["centroid-0"][k] == pytest.approx(np.nonzero(region)[0].mean())


def test_matching_counts_on_shifted_labels(dsb_labels):
    _, inst = dsb_labels[0]
    shifted = np.roll(inst, 40, axis=1)  # most nuclei no longer overlap their own position
    m = match_instances(inst, shifted, 0.5)
    assert m["tp"] + m["fn"] == m["n_true"] and m["tp"] + m["fp"] == m["n_pred"]
    assert m["ap"] < 0.5
    assert aggregated_jaccard(inst, shifted) < 0.5
    empty = match_instances(inst, np.zeros_like(inst))
    assert empty["ap"] == 0.0 and empty["fn"] == empty["n_true"]


def test_evaluate_command_scores_instances(data_root, tmp_path):
    from typer.testing import CliRunner

    from medlens.commands.segment import app
    from medlens.segment.io import read_image, write_mask

    root = need(data_root, "nuclei_dsb2018_stage1_subset")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    pred_dir = tmp_path / "pred"
    for p in sorted((root / "labels").glob("*.png"))[:3]:
        (data / "images" / p.name).write_bytes((root / "images" / p.name).read_bytes())
        (data / "labels" / p.name).write_bytes(p.read_bytes())
        inst = np.asarray(Image.open(p)).astype(np.int64)
        target, _ = mask_to_target(inst, "instance", 3, p)  # a perfect 3-class prediction
        write_mask(target, read_image(root / "images" / p.name), pred_dir / p.name, n_classes=3)
    r = CliRunner().invoke(app, ["evaluate", str(pred_dir), str(data), "--out", str(tmp_path / "rep"),
                                 "--mask-mode", "instance", "--markers", "components", "--no-overlays", "-q"])
    assert r.exit_code == 0, r.output
    import json

    summary = json.loads((tmp_path / "rep" / "metrics.json").read_text())["summary"]
    assert summary["dice"]["mean"] == 1.0
    assert summary["ap"]["mean"] > 0.98 and summary["count_error"] < 0.02


def test_predict_files_writes_instances_for_an_instance_plan(data_root, tmp_path):
    import torch

    from medlens.segment.datasets import load_folder
    from medlens.segment.infer import predict_files
    from medlens.segment.bundle import build_model
    from medlens.segment.rules import make_plan

    root = need(data_root, "nuclei_dsb2018_stage1_subset")
    cases = load_folder(root, "instance", n_classes=3, limit=2)
    plan = make_plan(cases, root, "instance", 3)
    assert plan.inference.instances.markers == "hmaxima_relative"
    plan = plan.copy_with(**{"network.channels": 4, "inference.tta_flips": False})
    torch.manual_seed(0)
    model = build_model(plan).eval()  # untrained: files and geometry only
    src = sorted((root / "images").glob("*.png"))[0]
    written = predict_files(model, plan, [src], tmp_path)
    assert [p.name for p in written] == [src.name, f"{src.stem}_instances.png", f"{src.stem}_instances.csv"]
    with Image.open(src) as im, Image.open(written[1]) as lab:
        assert lab.size == im.size and np.asarray(lab).dtype == np.uint16


def test_median_diameter_follows_scale_and_spacing(dsb_labels):
    from medlens.segment.instances import median_diameter

    for path, inst in dsb_labels[:4]:
        target, _ = mask_to_target(inst, "instance", 3, path)
        d = median_diameter(target == 1)
        twice = np.kron(target == 1, np.ones((2, 2), bool))  # every pixel becomes 2 × 2
        assert median_diameter(twice) == pytest.approx(2 * d, rel=1e-6)
        assert median_diameter(twice, spacing=(0.5, 0.5)) == pytest.approx(d, rel=1e-6)
    assert np.isnan(median_diameter(np.zeros((8, 8), bool)))


def test_rescale_factor_moves_the_diameter_to_the_nearer_bound(dsb_labels):
    from medlens.segment.instances import median_diameter, rescale_factor

    path, inst = dsb_labels[0]
    interior = mask_to_target(inst, "instance", 3, path)[0] == 1
    d = median_diameter(interior)
    assert rescale_factor(interior, (1.0, 1.0), [d / 2, d * 2]) == 1.0
    assert rescale_factor(interior, (1.0, 1.0), None) == 1.0
    for bounds, target in (([d / 4, d / 2], d / 2), ([2 * d, 3 * d], 2 * d)):
        f = rescale_factor(interior, (1.0, 1.0), bounds)
        assert median_diameter(interior, (f, f)) == pytest.approx(target)


def test_instance_plan_records_the_training_diameter_range(data_root):
    from medlens.segment.datasets import load_folder
    from medlens.segment.instances import median_diameter
    from medlens.segment.rules import make_plan

    root = need(data_root, "nuclei_dsb2018_stage1_subset")
    cases = load_folder(root, "instance", n_classes=3, limit=6)
    lo, hi = make_plan(cases, root, "instance", 3).inference.instances.diameter_range
    per_image = [median_diameter(c.mask == 1) for c in cases]
    assert (lo, hi) == pytest.approx((min(per_image), np.percentile(per_image, 90)))
    assert 3 < lo < hi < 200  # nuclei are a few to a few tens of pixels across


def test_segment_image_predicts_out_of_range_objects_again_at_a_rescaled_size(data_root, monkeypatch):
    import torch

    import medlens.segment.infer as infer
    from medlens.segment.datasets import load_folder
    from medlens.segment.instances import median_diameter
    from medlens.segment.bundle import build_model
    from medlens.segment.rules import make_plan

    root = need(data_root, "nuclei_dsb2018_stage1_subset")
    cases = load_folder(root, "instance", n_classes=3, limit=2)
    plan = make_plan(cases, root, "instance", 3).copy_with(**{"network.channels": 4, "inference.tta_flips": False})
    torch.manual_seed(0)
    model = build_model(plan).eval()  # untrained: the second pass and the geometry are what is tested
    image = cases[0].image
    first = infer.segment_image(model, plan.copy_with(**{"inference.instances.diameter_range": None}), image)
    d = median_diameter(first == 1)
    assert np.isfinite(d)
    shapes = []
    predict = infer.predict_probabilities
    monkeypatch.setattr(infer, "predict_probabilities",
                        lambda m, p, x, tta=None: shapes.append(x.shape[1:]) or predict(m, p, x, tta))
    plan = plan.copy_with(**{"inference.instances.diameter_range": [d / 4, d / 2]})  # objects 2× the largest trained
    mask = infer.segment_image(model, plan, image)
    assert mask.shape == image.shape
    assert shapes[0] == image.shape
    assert shapes[1] == pytest.approx(tuple(s / 2 for s in image.shape), abs=1)
