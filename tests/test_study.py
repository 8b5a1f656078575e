"""The study runs end to end on the real LIDC-IDRI nodules (quick mode) and its numbers mean something."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.config import default_config_path, load_config
from medlens.errors import MedlensError
from medlens.study import load_dataset, make_folds, run_study

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def config(data_root):
    return load_config(default_config_path())


@pytest.fixture(scope="module")
def quick_run(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    results = run_study(config, out, quick=True, quiet=True)
    return out, results


def test_quick_study_writes_every_output(quick_run):
    out, results = quick_run
    for name in ("results.json", "predictions.csv", "table.md", "table.csv", "comparison.png", "roc.png",
                 "report.html"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"] == "lidc-nodules"
    assert saved["task"] == {"kind": "binary", "labels": ["benign", "malignant"]}
    assert saved["protocol"]["grouped_by"] == "patient"
    assert set(saved["models"]) == {"size_reference", "bp", "svm", "twostage", "bp_radiomics", "cnn3d"}
    provenance = saved["provenance"]
    assert provenance["data_md5"] and provenance["versions"]["torch"] and provenance["wall_seconds"] > 0
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html.replace("https://doi.org", "")


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


def test_folds_never_share_a_patient(config):
    data = load_dataset(config)
    assert len(data) == 630 and data.n_classes == 2
    assert data.images.shape[1:] == (2, 32, 32, 32)
    tested = np.zeros(len(data), int)
    for fold in make_folds(data, config, k=10):
        train_patients = set(data.groups[fold.train]) | set(data.groups[fold.val])
        assert not train_patients & set(data.groups[fold.test])
        assert not set(data.groups[fold.train]) & set(data.groups[fold.val])
        tested[fold.test] += 1
    assert (tested == 1).all()


def test_results_are_not_overwritten(quick_run, config):
    out, _ = quick_run
    with pytest.raises(MedlensError, match="--overwrite"):
        run_study(config, out, quick=True, quiet=True)
