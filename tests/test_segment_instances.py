"""Instance pipeline on the real DSB 2018 nuclei labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import need
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
        lab = instances_from_foreground(target > 0, interior=target == 1, min_size=1)
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


def test_measurements(dsb_labels):
    _, inst = dsb_labels[0]
    lab = instances_from_foreground(inst > 0, method="components", min_size=1)
    intensity = np.random.default_rng(0).random(inst.shape)
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
                                 "--mask-mode", "instance", "--no-overlays", "-q"])
    assert r.exit_code == 0, r.output
    import json

    summary = json.loads((tmp_path / "rep" / "metrics.json").read_text())["summary"]
    assert summary["dice"]["mean"] == 1.0
    assert summary["ap"]["mean"] > 0.98 and summary["count_error"] < 0.02
