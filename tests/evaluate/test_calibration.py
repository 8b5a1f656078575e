"""Temperature scaling of probabilities on real predictions: it recovers a known distortion, lowers the ECE
and never changes a binary ranking (AUC) or the decisions at 0.5 / argmax."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from realdata import need
from medlens.errors import ConfigError
from medlens.evaluate.calibration import (apply_temperature, expected_calibration_error, probability_logits,
                                          temperature_scale)


@pytest.fixture(scope="module")
def lidc_split(data_root):
    """LIDC-IDRI nodules: the readers' ratings as features, malignancy (median rating) as label;
    patients split three ways into train / validation / test."""
    table = pd.read_csv(need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv"))
    columns = ["diameter_mm", "Lobulation_value", "Margin_value", "Sphericity_value", "Spiculation_value",
               "Subtlety_value", "Texture_value"]
    x = table[columns].to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    rating = table["Malignancy_value"].to_numpy()
    part = np.unique(table["patient_id"], return_inverse=True)[1] % 3
    return x, rating, part


def _binary(lidc_split):
    x, rating, part = lidc_split
    keep = rating != 3
    x, y, part = x[keep], (rating[keep] >= 4).astype(int), part[keep]
    model = LogisticRegression(max_iter=2000).fit(x[part == 0], y[part == 0])
    logit = model.decision_function(x)
    return y, logit, part


def test_binary_logits_round_trip():
    p1 = np.array([1e-9, 0.2, 0.5, 0.8, 1 - 1e-9])
    z = probability_logits(np.column_stack([1 - p1, p1]))
    assert np.allclose(z[:, 0], 0) and np.allclose(z[:, 1], np.log(p1 / (1 - p1)))
    assert np.allclose(softmax(z, axis=1)[:, 1], p1)
    with pytest.raises(ConfigError, match="shape"):
        probability_logits(p1)


def test_temperature_recovers_a_known_overconfidence(lidc_split):
    """Probabilities made over-confident by multiplying a real model's logits by 3: the temperature fitted on
    the validation third is close to 3, the test ECE falls, and the test AUC is exactly the same."""
    y, logit, part = _binary(lidc_split)
    p = expit(3.0 * logit)
    two = lambda q: np.column_stack([1 - q, q])  # noqa: E731
    scaled, temperature = temperature_scale(two(p[part == 1]), y[part == 1], two(p[part == 2]))
    assert 2.0 < temperature < 4.5
    y_test, before = y[part == 2], p[part == 2]
    assert expected_calibration_error(y_test, scaled[:, 1]) < expected_calibration_error(y_test, before) - 0.02
    assert roc_auc_score(y_test, scaled[:, 1]) == pytest.approx(roc_auc_score(y_test, before), abs=1e-12)
    assert ((scaled[:, 1] >= 0.5) == (before >= 0.5)).all()
    assert np.allclose(scaled.sum(axis=1), 1)
    # an under-confident model (logits / 3) gets a temperature below 1
    soft = expit(logit / 3.0)
    _, t_soft = temperature_scale(two(soft[part == 1]), y[part == 1], two(soft[part == 2]))
    assert 0.15 < t_soft < 0.6


def test_multiclass_temperature_keeps_argmax(lidc_split):
    """Multiclass scaling works on log p; it keeps every argmax (a per-class one-vs-rest AUC may move, since
    softmax(z / T)_k is not a monotone function of p_k alone)."""
    x, rating, part = lidc_split
    y = np.digitize(rating, [2.5, 3.5])  # low / indeterminate / high
    model = LogisticRegression(max_iter=2000).fit(x[part == 0], y[part == 0])
    p = softmax(4.0 * model.decision_function(x), axis=1)  # sharpened: over-confident
    scaled, temperature = temperature_scale(p[part == 1], y[part == 1], p[part == 2])
    assert temperature > 1.5
    before = p[part == 2]
    assert (scaled.argmax(1) == before.argmax(1)).all()
    assert np.allclose(scaled, apply_temperature(np.log(np.clip(before, 1e-12, None)), temperature))
    assert expected_calibration_error(y[part == 2], scaled) < expected_calibration_error(y[part == 2], before)
