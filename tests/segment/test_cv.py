"""`segment cv`: folds, fold models, per-case metrics, and post-processing chosen on the folds (issue 28)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from realdata import need
from medlens.segment import cv as cv_module
from medlens.segment.bundle import load_ensemble
from medlens.segment.cv import cross_validate
from medlens.segment.datasets import load_folder
from medlens.segment.infer import predict_files, segment_image
from medlens.segment.io import read_image
from medlens.segment.plan import load_plan
from medlens.segment.postprocess import decide_postprocessing, mean_case_dice, postprocess
from medlens.segment.rules import make_plan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def montgomery(data_root):
    """Four normal and four tuberculosis X-rays, and a plan at 8 px trained for 20 steps (fast, imperfect)."""
    root = need(data_root, "montgomery_cxr_lung_masks")
    index = pd.read_csv(root / "index.csv")
    names = [f[:-4] for f in pd.concat([index[index.tb_label == 0].head(4), index[index.tb_label == 1].head(4)])["file"]]
    cases = load_folder(root, names=names)
    plan = make_plan(cases, root).copy_with(**{
        "target_spacing": [8.0, 8.0], "patch_size": [64, 64], "network.channels": 4, "training.epochs": 2,
        "training.steps_per_epoch": 10, "inference.tta_flips": False})
    return root, cases, plan


@pytest.fixture(scope="module")
def run(montgomery, tmp_path_factory):
    _, cases, plan = montgomery
    out = tmp_path_factory.mktemp("cv")
    return out, cross_validate(cases, plan, folds=2, out=out)


def test_folds_are_stratified_and_every_case_is_scored_once(montgomery, run):
    _, cases, _ = montgomery
    out, result = run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(c.case_id for c in cases)
    for fold in range(2):
        groups = [r["subgroup"] for r in rows if r["fold"] == str(fold)]
        assert sorted(groups) == ["normal"] * 2 + ["tuberculosis"] * 2  # stratified by the index's subgroup
        assert (out / f"fold{fold}" / "seed0" / "checksums.sha256").is_file()  # a segmenter bundle
    record = json.loads((out / "cv.json").read_text())
    assert record["protocol"]["stratified_by"] == "subgroup" and record["protocol"]["grouped_by"] == "case"
    assert [f["fold"] for f in record["folds"]] == [0, 1] and all(f["steps"] == 20 for f in record["folds"])
    dice = [float(r["dice"]) for r in rows]
    assert record["summary"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    assert 0 < record["summary"]["dice"]["mean"] < 1 and "hd95" in record["folds"][0]["summary"]


def test_postprocessing_chosen_on_the_folds_is_written_to_the_plan(run):
    out, result = run
    plan = load_plan(out / "plan.json")
    decision = plan.postprocessing.decision
    assert decision is not None and decision.n_cases == 8 and decision.folds == 2
    tried = [t.step for t in decision.trials]
    assert {"keep_component": "largest", "keep_count": 2} in tried and {"fill_holes": True} in tried
    kept = {}
    for trial in decision.trials:
        if trial.kept:
            kept.update(trial.step)
    assert {k: v for k, v in plan.postprocessing.steps().items() if k in kept} == kept
    assert decision.dice_after >= decision.dice_before
    assert decision.dice_after == pytest.approx(result.summary["dice"]["mean"])
    assert decision.dice_before == pytest.approx(result.summary_before_postprocessing["dice"]["mean"])
    for member in out.glob("fold*/seed*/plan.json"):  # every fold model predicts with the decision
        assert load_plan(member).postprocessing == plan.postprocessing


def test_cv_folder_predicts_as_the_ensemble_of_its_fold_models_with_the_chosen_postprocessing(montgomery, run,
                                                                                             tmp_path):
    root, cases, _ = montgomery
    out, _ = run
    models, plan = load_ensemble([out])
    assert len(models) == 2
    source = root / "images" / f"{cases[0].case_id}.png"
    (written,) = predict_files(models, plan, [source], tmp_path)
    raw = segment_image(models, plan, read_image(source), postprocessing=False)
    expected = postprocess(raw, plan.postprocessing.steps())
    assert np.array_equal(np.asarray(read_image(written).array[0]) > 0, expected > 0)


def test_an_interrupted_cv_resumes_from_its_fold_models(montgomery, run, monkeypatch):
    _, cases, plan = montgomery
    out, first = run

    def no_training(*args, **kwargs):
        raise AssertionError("a fold model already in the folder was trained again")

    monkeypatch.setattr(cv_module, "train_segmenter", no_training)
    again = cross_validate(cases, plan, folds=2, out=out)
    assert again.summary["dice"]["mean"] == first.summary["dice"]["mean"]
    other = plan.copy_with(**{"training.epochs": 3})
    with pytest.raises(Exception, match="another plan"):
        cross_validate(cases, other, folds=2, out=out)


def test_decision_keeps_only_the_steps_that_raise_the_mean_dice(data_root):
    folder = need(data_root, "montgomery_cxr_lung_masks")
    cases = load_folder(folder, limit=6)
    truths = {c.case_id: c.mask for c in cases}
    preds = {}
    for i, c in enumerate(cases):
        damaged = c.mask.copy()
        damaged[5:25, 5:25] = 1  # a false positive outside the lungs
        if i % 2:
            y, x = np.unravel_index(np.argmax(ndi.distance_transform_edt(c.mask)), c.mask.shape)
            damaged[y - 4:y + 4, x - 4:x + 4] = 0  # a hole deep inside a lung
        preds[c.case_id] = damaged
    candidates = [{"keep_component": "largest", "keep_count": 2}, {"keep_component": "central"},
                  {"min_component_size": 10}, {"fill_holes": True}]
    chosen, record = decide_postprocessing(preds, truths, 2, candidates)
    assert chosen == {"min_component_size": 0, "keep_component": "largest", "keep_count": 2, "fill_holes": True}
    assert [t["kept"] for t in record["trials"]] == [True, False, False, True]
    assert record["dice_after"] == pytest.approx(1.0) and record["dice_before"] < 1.0
    assert record["dice_before"] == pytest.approx(mean_case_dice(preds, truths, 2))
    # a step that changes nothing is not kept: it does not raise the mean Dice
    clean, record = decide_postprocessing(truths, truths, 2, [{"fill_holes": True}])
    assert clean["fill_holes"] is False and record["trials"][0]["kept"] is False
    assert ndi.label(cases[0].mask, np.ones((3, 3)))[1] == 2
