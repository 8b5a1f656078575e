"""The study runs end to end on the real LIDC-IDRI nodules (quick mode) and its numbers mean something."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from medlens.config import default_config_path, load_config, parse_config
from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, MedlensError
from medlens.evaluate.calibration import expected_calibration_error
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.protocol import make_folds
from medlens.study import evaluate_model, load_dataset, run_study

from realdata import REPO

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def config(data_root):
    return load_config(default_config_path())


@pytest.fixture(scope="module")
def data(config):
    return load_dataset(config)


@pytest.fixture(scope="module")
def quick_run(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    results = run_study(config, out, quick=True, quiet=True)
    return out, results


def test_quick_study_writes_every_output(quick_run):
    out, results = quick_run
    for name in ("results.json", "predictions.csv", "table.md", "table.csv", "comparison.png", "roc.png",
                 "reliability.png", "reliability_calibrated.png", "model_card.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"] == "lidc-nodules"
    assert saved["task"] == {"kind": "binary", "labels": ["benign", "malignant"]}
    assert saved["protocol"]["grouped_by"] == "patient"
    assert set(saved["models"]) == {"size_reference", "bp", "svm", "twostage", "bp_radiomics", "cnn3d"}
    provenance = saved["provenance"]
    assert provenance["data_md5"] and provenance["versions"]["torch"] and provenance["wall_seconds"] > 0
    assert "torch CPU kernels " in provenance["platform"]
    html = (out / "report.html").read_text()
    # self-contained: nothing is fetched (the data's origin is named as text in the model card)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert html.count('src="data:image/png;base64,') == 6 and "after temperature scaling" in html
    assert "Grad-CAM of cnn3d" in html  # the only CNN explains its surest test images, two per class
    overlays = sorted((out / "explanations" / "cnn3d").glob("*.png"))
    assert len(overlays) == 4 and (out / "explanations" / "cnn3d.png").is_file()
    assert "<h2>Model card</h2>" in html and "Research use only" in html
    card = (out / "model_card.md").read_text()
    assert card.count("### Intended use") == 6 and "Research use only" in card
    for key in saved["models"]:
        assert f": {key}\n" in card
    assert "CC BY 3.0" in card and provenance["data_md5"] in card and "ECE before scaling" in card
    assert "| target_sensitivity | 0.950 |" in card
    table = (out / "table.md").read_text()
    assert "| ECE after temperature scaling |" in table and "| SP at SE≥0.95 threshold (val) |" in table
    assert "| balanced accuracy |" in table


def test_outputs_name_no_absolute_path_of_the_users_data_or_config(quick_run, data_root):
    """Paths are relative to the data root or the working folder (``--keep-identifiers`` keeps them whole)."""
    out, results = quick_run
    assert results["data"]["source"] == "lidc_idri_nodule_vois"
    for name in ("results.json", "report.html", "model_card.md", "table.md", "predictions.csv"):
        text = (out / name).read_text()
        assert str(data_root) not in text and str(REPO) not in text, name


def test_quick_study_beats_a_trivial_baseline(quick_run):
    _, results = quick_run
    for key, entry in results["models"].items():
        assert len(entry["folds"]) == 3
        summary = entry["summary"]
        # A constant or random classifier has AUC 0.5 and balanced accuracy 0.5.
        assert summary["auc"]["mean"] > 0.75, key
        assert summary["balanced_accuracy"]["mean"] > 0.6, key
        lo, hi = summary["auc"]["ci95"]
        assert lo <= summary["auc"]["mean"] <= hi


def test_calibration_and_operating_points_are_chosen_on_validation(quick_run):
    """Recomputed from predictions.csv: ECE before/after, per-fold AUC unchanged by temperature scaling,
    thresholds reaching the target sensitivity on validation, and the test SE/SP they give."""
    out, results = quick_run
    frame = pd.read_csv(out / "predictions.csv")
    y, fold = frame["label"].to_numpy(), frame["fold"].to_numpy()
    tested = fold >= 0
    for key, entry in results["models"].items():
        raw = frame[f"{key}_p_malignant"].to_numpy()
        scaled = frame[f"{key}_calibrated_p_malignant"].to_numpy()
        calibration = entry["calibration"]
        assert calibration["method"] == "temperature" and calibration["n_bins"] == 10
        assert calibration["ece_before"] == pytest.approx(expected_calibration_error(y[tested], raw[tested]))
        assert calibration["ece_after"] == pytest.approx(expected_calibration_error(y[tested], scaled[tested]))
        assert len(calibration["temperatures"]) == 3 and all(0.05 <= t <= 20 for t in calibration["temperatures"])
        assert calibration["pooled_auc_after"] == pytest.approx(roc_auc_score(y[tested], scaled[tested]))
        for row, temperature in zip(entry["folds"], calibration["temperatures"]):
            rows = fold == row["fold"]
            assert row["temperature"] == temperature
            # scaling is p -> sigmoid(logit(p) / T): monotone, so the fold's AUC is unchanged
            assert np.allclose(scaled[rows], expit(logit(np.clip(raw[rows], 1e-12, 1 - 1e-12)) / temperature))
            assert roc_auc_score(y[rows], scaled[rows]) == pytest.approx(roc_auc_score(y[rows], raw[rows]), abs=1e-9)
            assert row["auc"] == pytest.approx(roc_auc_score(y[rows], raw[rows]))
            for name, point in row["operating_points"].items():
                if name == "target_sensitivity":
                    assert point["target"] == 0.95 and point["val_sensitivity"] >= 0.95
                called = raw[rows] >= point["threshold"]
                assert point["sensitivity"] == pytest.approx(called[y[rows] == 1].mean())
                assert point["specificity"] == pytest.approx((~called[y[rows] == 0]).mean())
        for name, point in entry["operating_points"].items():
            folds = [row["operating_points"][name]["specificity"] for row in entry["folds"]]
            assert point["specificity"]["mean"] == pytest.approx(np.mean(folds))
            assert point["n_folds_without_threshold"] == 0


def test_calibration_none_and_the_subgroup_hook(config, data):
    """``protocol.calibration: none`` reports the raw ECE only; a dataset's ``meta["subgroups"]`` (here nodule
    size, a real per-nodule attribute, < 10 mm versus >= 10 mm) gets per-subgroup pooled metrics."""
    plain = config.model_copy(update={"protocol": config.protocol.model_copy(update={"calibration": "none"})})
    model_cfg = next(m for m in config.models if m.key == "size_reference")
    diameter = data.features[:, data.meta["feature_names"].index("diameter_mm")]
    size = np.where(diameter >= 10, ">=10 mm", "<10 mm")
    with_groups = ArrayDataset(images=data.images, labels=data.labels, groups=data.groups, features=data.features,
                               ids=data.ids, meta={**data.meta, "subgroups": {"size": size}})
    folds = make_folds(with_groups, plain.protocol, k=3, seed=plain.seed)
    entry, runs = evaluate_model(model_cfg, with_groups, folds, plain, False, lambda: None)
    oof = runs[0].oof
    assert runs[0].oof_calibrated is None and (runs[0].fold_of >= 0).all()
    assert entry["calibration"]["method"] == "none" and "ece_after" not in entry["calibration"]
    assert entry["calibration"]["ece_before"] == pytest.approx(expected_calibration_error(data.labels, oof[:, 1]))
    assert "temperature" not in entry["folds"][0] and set(entry["operating_points"]) == {"target_sensitivity",
                                                                                         "youden"}
    groups = entry["subgroups"]
    assert set(groups) == {"size=<10 mm", "size=>=10 mm"}
    assert sum(g["n"] for g in groups.values()) == len(data)
    small = size == "<10 mm"
    expected = classification_metrics(data.labels[small], oof[small], labels=data.meta["labels"])
    assert groups["size=<10 mm"]["sensitivity"] == pytest.approx(expected["sensitivity"])
    assert groups["size=<10 mm"]["auc"] == pytest.approx(expected["auc"])


def test_folds_never_share_a_patient(config, data):
    assert len(data) == 630 and data.n_classes == 2
    assert data.images.shape[1:] == (2, 32, 32, 32)
    tested = np.zeros(len(data), int)
    for fold in make_folds(data, config.protocol, k=10, seed=config.seed):
        train_patients = set(data.groups[fold.train]) | set(data.groups[fold.val])
        assert not train_patients & set(data.groups[fold.test])
        assert not set(data.groups[fold.train]) & set(data.groups[fold.val])
        tested[fold.test] += 1
    assert (tested == 1).all()


def test_results_are_not_overwritten(quick_run, config):
    out, _ = quick_run
    with pytest.raises(MedlensError, match="--overwrite"):
        run_study(config, out, quick=True, quiet=True)


def test_pooled_operating_point_rates_use_each_folds_threshold(quick_run):
    import pandas as pd

    out, results = quick_run
    frame = pd.read_csv(out / "predictions.csv")
    entry = results["models"]["bp_radiomics"]
    thresholds = {row["fold"]: row["operating_points"]["youden"]["threshold"] for row in entry["folds"]}
    tested = frame[frame["fold"] >= 0]
    called = tested["bp_radiomics_p_malignant"].to_numpy() >= tested["fold"].map(thresholds).to_numpy()
    truth = tested["label"].to_numpy() == 1
    point = entry["operating_points"]["youden"]
    assert point["pooled_sensitivity"] == pytest.approx(called[truth].mean())
    assert point["pooled_specificity"] == pytest.approx((~called[~truth]).mean())


def test_bad_model_parameter_fails_before_any_training(config, tmp_path):
    bad = config.model_copy(deep=True)
    last = bad.models[-1]
    last.params = {**last.params, "no_such_parameter": 1}
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=rf"models\[{len(bad.models) - 1}\]\.params.*{last.key}"):
        run_study(bad, out, quick=True, quiet=True)
    assert not out.exists()  # nothing read, trained or written


def test_a_model_trained_with_several_seeds_reports_their_mean_and_spread(config, data, tmp_path):
    """``seeds: 2``: each seed is cross-validated on the same folds; the table's figures are the seeds' mean,
    with the spread over seeds beside them, and predictions.csv keeps every seed's probabilities."""
    entry_cfg = next(m for m in config.models if m.key == "bp").model_copy(update={"seeds": 2})
    two = config.model_copy(update={"models": [entry_cfg], "quick": config.quick.model_copy(update={"models": None})})
    results = run_study(two, tmp_path / "seeds", quick=True, quiet=True)
    entry = results["models"]["bp"]
    assert entry["training_seeds"] == [0, 1]
    frame = pd.read_csv(tmp_path / "seeds" / "predictions.csv")
    first, second = frame["bp_p_malignant"].to_numpy(), frame["bp_seed1_p_malignant"].to_numpy()
    assert not np.allclose(first, second)  # another seed, another network
    auc = entry["summary"]["auc"]
    per_seed = []
    for p in (first, second):
        aucs = [roc_auc_score(frame["label"][frame["fold"] == f], p[frame["fold"] == f]) for f in range(3)]
        per_seed.append(np.mean(aucs))
    assert auc["seed_means"] == pytest.approx(per_seed)
    assert auc["mean"] == pytest.approx(np.mean(per_seed))
    assert auc["seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    table = (tmp_path / "seeds" / "table.md").read_text()
    assert "seeds s.d." in table
    bins = entry["calibration"]["n_bins"]
    spread = np.std([expected_calibration_error(frame["label"], p, bins) for p in (first, second)], ddof=1)
    assert entry["calibration"]["seed_std"]["ece_before"] == pytest.approx(spread)
    ece_row = next(line for line in table.splitlines() if line.startswith("| ECE, "))
    assert f"seeds s.d. {spread:.3f} (2)" in ece_row  # the calibration's spread over seeds, not only the AUC's


def test_a_study_killed_during_training_resumes_to_the_same_results(config, tmp_path):
    """SIGKILL a real `medlens study` process while its CNN trains its second fold; `--resume` keeps the
    finished folds, continues the interrupted training from its last epoch, and writes the predictions an
    uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    raw = config.model_dump(mode="json", exclude={"source"})
    raw["models"] = [m for m in raw["models"] if m["id"] in ("size_reference", "cnn3d")]
    raw["quick"] = {"folds": 3, "max_samples": 120, "models": None}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    cli = "import sys; from medlens.cli import app; sys.argv[0] = 'medlens'; app()"
    env = {**os.environ, "MEDLENS_QUIET": "1"}

    def study(out, *extra):
        return [sys.executable, "-c", cli, "study", str(path), "--quick", "--out", str(out), *extra]

    subprocess.run(study(tmp_path / "whole"), env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    child = subprocess.Popen(study(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / ".resume" / "cnn3d" / "seed0" / "fold1" / "fit0.pt"
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "the study never reached the CNN's second fold"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert not (killed / "results.json").exists()
    assert (killed / ".resume" / "size_reference" / "seed0" / "fold2.json").is_file()  # finished before the CNN
    refused = subprocess.run(study(killed), env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # never silently started over
    subprocess.run(study(killed, "--resume"), env=env, check=True, capture_output=True)
    whole = pd.read_csv(tmp_path / "whole" / "predictions.csv")
    resumed = pd.read_csv(killed / "predictions.csv")
    pd.testing.assert_frame_equal(resumed, whole)
    assert not (killed / ".resume").exists()
    assert len(list((killed / "explanations" / "cnn3d").glob("*.png"))) == 4  # the last fold's CNN, restored


def test_a_study_on_a_local_dask_cluster_gives_the_sequential_predictions(config, tmp_path):
    """`--workers 2`: every fold × model runs as a Dask task on a local cluster (one thread per worker) and
    records where it ran; the predictions equal a sequential run's with one torch thread (torch's kernels
    round differently with other thread counts, and a small network's training amplifies that)."""
    import torch

    raw = config.model_dump(mode="json", exclude={"source"})
    raw["models"] = [m for m in raw["models"] if m["id"] in ("size_reference", "cnn3d")]
    raw["quick"] = {"folds": 3, "max_samples": 120, "models": None}
    small = parse_config(raw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_study(small, tmp_path / "sequential", quick=True, quiet=True)
    finally:
        torch.set_num_threads(threads)
    results = run_study(small, tmp_path / "dask", quick=True, quiet=True, workers=2)
    executed = results["provenance"]["executed"]
    assert executed["kind"] == "dask" and executed["workers"] == 2
    assert set(executed["threads"].values()) == {1}
    assert len(executed["tasks"]) == 2 * 3 and set(executed["tasks"].values()) <= set(executed["threads"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "sequential" / "predictions.csv"))
    assert "Where each task ran" in (tmp_path / "dask" / "report.html").read_text()
