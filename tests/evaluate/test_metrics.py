"""Metrics against scikit-learn on real predictions (BreastMNIST, LIDC nodule characteristics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, jaccard_score,
                             multilabel_confusion_matrix, precision_score, recall_score, roc_auc_score, roc_curve)
from sklearn.model_selection import GroupShuffleSplit

from realdata import need
from medlens.errors import ConfigError
from medlens.evaluate import metrics, operating_points


@pytest.fixture(scope="module")
def breast(data_root):
    """Test labels and malignant-vs-rest probabilities of a logistic regression on BreastMNIST pixels."""
    archive = np.load(need(data_root, "medmnist/breastmnist.npz"))
    x_train = archive["train_images"].reshape(len(archive["train_images"]), -1) / 255.0
    x_test = archive["test_images"].reshape(len(archive["test_images"]), -1) / 255.0
    model = LogisticRegression(C=0.05, max_iter=3000).fit(x_train, archive["train_labels"].ravel())
    return archive["test_labels"].ravel().astype(int), model.predict_proba(x_test)


@pytest.fixture(scope="module")
def lidc_three_class(data_root):
    """3 malignancy classes (ratings 1-2, 3, 4-5) of the real LIDC nodules, predicted from their other
    radiologist characteristics by a logistic regression held out by patient."""
    table = pd.read_csv(need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv"))
    columns = ["diameter_mm", "Calcification_value", "InternalStructure_value", "Lobulation_value",
               "Margin_value", "Sphericity_value", "Spiculation_value", "Subtlety_value", "Texture_value"]
    x = table[columns].to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    y = np.digitize(table["Malignancy_value"].to_numpy(), [2.5, 3.5])
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.4, random_state=0)
                       .split(x, y, table["patient_id"]))
    model = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    return y[test], model.predict_proba(x[test])


@pytest.mark.parametrize("threshold", [0.5, 0.73])
def test_binary_metrics_match_sklearn(breast, threshold):
    y, proba = breast
    p = proba[:, 1]
    pred = (p >= threshold).astype(int)
    assert 0 < pred.sum() < len(pred), "the test needs both predicted classes"
    got = metrics.binary_metrics(y, p, threshold)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (tp, fp, tn, fn)
    assert got["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert got["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["ppv"] == pytest.approx(precision_score(y, pred))
    assert got["npv"] == pytest.approx(precision_score(y, pred, pos_label=0))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p))


def test_binary_undefined_values_are_nan(breast):
    y, proba = breast
    negatives = y == 0
    got = metrics.binary_metrics(y[negatives], proba[negatives, 1])
    assert np.isnan(got["auc"]) and np.isnan(got["sensitivity"])
    assert got["specificity"] == pytest.approx(np.mean(proba[negatives, 1] < 0.5))
    assert np.isnan(metrics.binary_metrics(y, proba[:, 1], threshold=2.0)["ppv"])


def test_binary_metrics_rejects_bad_input(breast):
    y, proba = breast
    with pytest.raises(ConfigError, match="values but p_pos"):
        metrics.binary_metrics(y, proba[:-1, 1])
    with pytest.raises(ConfigError, match="only 0 and 1"):
        metrics.binary_metrics(y + 1, proba[:, 1])


def test_classification_metrics_binary_is_binary_metrics(breast):
    y, proba = breast
    got = metrics.classification_metrics(y, proba, labels=["malignant", "normal/benign"])
    assert got["confusion"] == confusion_matrix(y, proba.argmax(1), labels=[0, 1]).tolist()
    for key, value in metrics.binary_metrics(y, proba[:, 1]).items():
        assert got[key] == value


def test_multiclass_metrics_match_sklearn(lidc_three_class):
    y, proba = lidc_three_class
    names = ["benign-ish", "indeterminate", "malignant-ish"]
    pred = proba.argmax(1)
    got = metrics.classification_metrics(y, proba, labels=names)
    assert got["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert got["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    mcm = multilabel_confusion_matrix(y, pred)  # per class [[tn, fp], [fn, tp]]
    specificity = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
    assert got["specificity"] == pytest.approx(specificity.mean())
    assert got["confusion"] == confusion_matrix(y, pred).tolist()
    recalls, f1s = recall_score(y, pred, average=None), f1_score(y, pred, average=None)
    for c, name in enumerate(names):
        assert got["per_class"][name]["sensitivity"] == pytest.approx(recalls[c])
        assert got["per_class"][name]["specificity"] == pytest.approx(specificity[c])
        assert got["per_class"][name]["f1"] == pytest.approx(f1s[c])
        assert got["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y == c, proba[:, c]))


def test_multiclass_absent_class_auc_is_nan_and_left_out(lidc_three_class):
    y, proba = lidc_three_class
    keep = y != 1
    got = metrics.classification_metrics(y[keep], proba[keep])
    assert np.isnan(got["per_class"]["1"]["auc"])
    present = [roc_auc_score(y[keep] == c, proba[keep, c]) for c in (0, 2)]
    assert got["auc"] == pytest.approx(np.mean(present))


def test_classification_metrics_rejects_bad_shapes(breast):
    y, proba = breast
    with pytest.raises(ConfigError, match="shape"):
        metrics.classification_metrics(y, proba[:, 1])
    with pytest.raises(ConfigError, match="labels given"):
        metrics.classification_metrics(y, proba, labels=["a", "b", "c"])


def test_roc_points_match_sklearn(breast):
    y, proba = breast
    fpr, tpr, thr = metrics.roc_points(y, proba[:, 1])
    ref = roc_curve(y, proba[:, 1], drop_intermediate=False)
    for a, b in zip((fpr, tpr, thr), ref):
        np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_threshold_for_sensitivity_is_the_highest_that_reaches_target(breast, target):
    y, proba = breast
    p = proba[:, 1]
    t = operating_points.threshold_for_sensitivity(y, p, target)
    assert metrics.binary_metrics(y, p, t)["sensitivity"] >= target
    higher = np.unique(p[p > t])
    if higher.size:  # the next distinct score up already misses the target
        assert metrics.binary_metrics(y, p, higher[0])["sensitivity"] < target


def test_youden_threshold_maximises_j_by_brute_force(breast):
    y, proba = breast
    p = proba[:, 1]
    t = operating_points.youden_threshold(y, p)

    def j(threshold):
        m = metrics.binary_metrics(y, p, threshold)
        return m["sensitivity"] + m["specificity"] - 1

    assert j(t) == pytest.approx(max(j(c) for c in np.unique(p)))


def test_dice_and_iou_on_a_real_nodule_mask(data_root):
    nib = pytest.importorskip("nibabel")
    root = need(data_root, "lidc_idri_nodule_vois")
    image = np.asarray(nib.load(root / "image/LIDC-IDRI-0001_R_1.nii.gz").dataobj)
    true = np.asarray(nib.load(root / "nodule_mask/LIDC-IDRI-0001_R_1.nii.gz").dataobj) > 0
    pred = image > -400  # a crude HU threshold "segmentation": dense tissue in the VOI
    assert true.any() and pred.any() and (pred != true).any()
    assert metrics.dice(pred, true) == pytest.approx(f1_score(true.ravel(), pred.ravel()))
    assert metrics.iou(pred, true) == pytest.approx(jaccard_score(true.ravel(), pred.ravel()))
    assert metrics.dice(true, true) == 1.0


def test_dice_iou_edge_cases():
    empty = np.zeros((4, 5), bool)
    some = empty.copy()
    some[1, 2] = True
    assert metrics.dice(empty, empty) == 1.0 and metrics.iou(empty, empty) == 1.0
    assert metrics.dice(some, empty) == 0.0 and metrics.iou(empty, some) == 0.0
    with pytest.raises(ConfigError, match="shape"):
        metrics.dice(some, some.T)
    with pytest.raises(ConfigError, match="boolean"):
        metrics.iou(some.astype(int), some)
