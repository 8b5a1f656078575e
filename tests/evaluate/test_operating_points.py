"""Thresholds chosen on validation data: target sensitivity and Youden's J, on hand cases and real scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realdata import need
from medlens.evaluate.operating_points import (OperatingPointError, operating_points, rates_at,
                                               threshold_for_sensitivity, youden_threshold)


@pytest.fixture(scope="module")
def diameter_scores(data_root):
    """A real score: the readers' nodule diameter of LIDC-IDRI nodules, label malignant (median rating 4-5)
    versus benign (1-2); split by patient into a validation and a test half."""
    table = pd.read_csv(need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv"))
    table = table[table["Malignancy_value"] != 3]
    y = (table["Malignancy_value"] >= 4).to_numpy(int)
    score = table["diameter_mm"].to_numpy(float)
    patients = table["patient_id"].to_numpy()
    in_val = np.isin(patients, np.unique(patients)[::2])
    return (y[in_val], score[in_val]), (y[~in_val], score[~in_val])


def test_target_sensitivity_hand_case():
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.5, 0.1])
    assert threshold_for_sensitivity(y, p, 0.75) == 0.7  # 3 of 4 positives at p >= 0.7; at 0.8 only 2
    assert threshold_for_sensitivity(y, p, 0.5) == 0.8
    assert threshold_for_sensitivity(y, p, 1.0) == 0.2
    assert threshold_for_sensitivity(y, np.column_stack([1 - p, p]), 0.75) == 0.7  # (N, 2) probabilities


def test_target_sensitivity_rounding_and_ties():
    y = np.ones(20, int)
    p = np.linspace(0.05, 1.0, 20)
    # 0.95 * 20 = 19 positives exactly: the 19th largest score, not the 20th (floating-point 0.95*20 > 19)
    assert threshold_for_sensitivity(y, p, 0.95) == pytest.approx(p[1])
    tied = np.array([0.6, 0.6, 0.6, 0.3])
    assert threshold_for_sensitivity(np.ones(4, int), tied, 0.5) == 0.6  # ties count together: SE 0.75


def test_youden_hand_case():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    # t = 0.7: SE 2/3, SP 1 -> J 0.667; t = 0.4: SE 1, SP 2/3 -> J 0.667; ties go to the larger threshold
    assert youden_threshold(y, p) == 0.7
    assert rates_at(y, p, 0.4) == {"sensitivity": 1.0, "specificity": pytest.approx(2 / 3)}


def test_rules_on_real_scores(diameter_scores):
    (y_val, s_val), (y_test, s_test) = diameter_scores
    assert 0 < y_val.mean() < 1 and len(y_val) > 200
    for target in (0.8, 0.9, 0.95):
        t = threshold_for_sensitivity(y_val, s_val, target)
        assert rates_at(y_val, s_val, t)["sensitivity"] >= target
        larger = s_val[s_val > t]
        if larger.size:  # the next larger candidate misses the target: t is the largest that reaches it
            assert rates_at(y_val, s_val, larger.min())["sensitivity"] < target
    # Youden: the best J over every distinct score, found by brute force
    t = youden_threshold(y_val, s_val)
    j = {c: sum(rates_at(y_val, s_val, c).values()) - 1 for c in np.unique(s_val)}
    assert sum(rates_at(y_val, s_val, t).values()) - 1 == pytest.approx(max(j.values()))
    points = operating_points(y_val, s_val, y_test, s_test, target_sensitivity=0.95)
    assert set(points) == {"target_sensitivity", "youden"}
    se95 = points["target_sensitivity"]
    assert se95["target"] == 0.95 and se95["val_sensitivity"] >= 0.95
    assert se95["sensitivity"] == rates_at(y_test, s_test, se95["threshold"])["sensitivity"]
    assert se95["specificity"] == rates_at(y_test, s_test, se95["threshold"])["specificity"]
    # a diameter rule is informative: specificity well above 0 at 95 % sensitivity, below Youden's
    assert 0.2 < se95["specificity"] < points["youden"]["specificity"]


def test_one_class_validation_is_a_clear_error_or_a_recorded_gap():
    y = np.zeros(5, int)
    p = np.linspace(0.1, 0.5, 5)
    with pytest.raises(OperatingPointError, match="no positive"):
        threshold_for_sensitivity(y, p, 0.95)
    with pytest.raises(OperatingPointError, match="both classes"):
        youden_threshold(y, p)
    with pytest.raises(OperatingPointError, match="both classes"):
        youden_threshold(np.ones(5, int), p)
    assert threshold_for_sensitivity(np.ones(5, int), p, 0.95) == 0.1  # all positive: SE defined
    points = operating_points(y, p, np.array([0, 1]), np.array([0.2, 0.8]))
    for point in points.values():
        assert np.isnan(point["threshold"]) and np.isnan(point["specificity"]) and point["error"]


def test_bad_inputs():
    with pytest.raises(OperatingPointError, match="target"):
        threshold_for_sensitivity([0, 1], [0.2, 0.8], 0.0)
    with pytest.raises(OperatingPointError, match="binary"):
        youden_threshold([0, 2], [0.2, 0.8])
    with pytest.raises(OperatingPointError, match="NaN"):
        youden_threshold([0, 1], [np.nan, 0.8])
    with pytest.raises(OperatingPointError, match="no validation samples"):
        youden_threshold([], [])
