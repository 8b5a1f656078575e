"""Confidence intervals and calibration on real predictions (BreastMNIST logistic regression)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from realdata import need
from medlens.errors import ConfigError
from medlens.evaluate import calibration, metrics, splits, stats


@pytest.fixture(scope="module")
def breast(data_root):
    """BreastMNIST images (all 780), 2×2 mean-pooled to 14×14 pixels to keep the fits quick, and labels."""
    archive = np.load(need(data_root, "medmnist/breastmnist.npz"))
    images = np.concatenate([archive[f"{s}_images"] for s in ("train", "val", "test")]) / 255.0
    x = images.reshape(780, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(780, -1)
    y = np.concatenate([archive[f"{s}_labels"] for s in ("train", "val", "test")]).ravel().astype(int)
    return x, y


@pytest.fixture(scope="module")
def holdout(breast):
    """Test-split labels, probabilities and logits of a logistic regression trained on the train split."""
    x, y = breast
    model = LogisticRegression(C=0.05, max_iter=3000).fit(x[:546], y[:546])
    return y[624:], model.predict_proba(x[624:]), model.decision_function(x[624:])


@pytest.fixture(scope="module")
def fold_aucs(breast):
    x, y = breast
    values = []
    for train, test in splits.kfold_splits(y, k=10, seed=0):
        model = LogisticRegression(C=0.05, max_iter=3000).fit(x[train], y[train])
        values.append(metrics.binary_metrics(y[test], model.predict_proba(x[test])[:, 1])["auc"])
    return np.array(values)


def test_summarize_matches_scipy_t_interval(fold_aucs):
    got = stats.summarize(fold_aucs)
    lo, hi = sps.t.interval(0.95, len(fold_aucs) - 1, loc=fold_aucs.mean(), scale=sps.sem(fold_aucs))
    assert got["n"] == 10 and got["n_nan"] == 0
    assert got["mean"] == pytest.approx(fold_aucs.mean())
    assert got["std"] == pytest.approx(fold_aucs.std(ddof=1))
    assert got["ci95"] == pytest.approx([lo, hi])


def test_summarize_ignores_nan_and_reports_it(fold_aucs):
    with_nan = np.append(fold_aucs, np.nan)
    got = stats.summarize(with_nan)
    assert got["n_nan"] == 1
    assert {k: v for k, v in got.items() if k != "n_nan"} == {
        k: v for k, v in stats.summarize(fold_aucs).items() if k != "n_nan"}
    single = stats.summarize([0.8, np.nan])
    assert single["mean"] == 0.8 and np.isnan(single["std"]) and single["n"] == 1


def test_delong_auc_is_the_auc_and_variance_matches_the_direct_formula(holdout):
    y, proba, _ = holdout
    s = proba[:, 1]
    auc, var = stats.delong_auc_variance(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s))
    # DeLong (1988) structural components straight from the kernel psi(x, y) = 1[x > y] + 1/2 1[x = y]
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    direct = psi.mean(1).var(ddof=1) / x.size + psi.mean(0).var(ddof=1) / z.size
    assert var == pytest.approx(direct, rel=1e-10)


def _mann_whitney_auc(y, s):
    """AUC = U / (m n), the Mann-Whitney statistic of the positives' scores (quicker than sklearn's)."""
    return sps.mannwhitneyu(s[y == 1], s[y == 0]).statistic / (np.sum(y == 1) * np.sum(y == 0))


def test_delong_ci_agrees_with_bootstrap(holdout):
    y, proba, _ = holdout
    delong = stats.delong_auc_ci(y, proba[:, 1])
    boot = stats.bootstrap_ci(_mann_whitney_auc, y, proba[:, 1], n_boot=2000, seed=0)
    auc = roc_auc_score(y, proba[:, 1])
    assert delong[0] < auc < delong[1]
    assert delong == pytest.approx(boot, abs=0.02)


def test_bootstrap_is_seeded_and_stratified(holdout):
    y, proba, _ = holdout
    counts = []

    def positives(labels, _scores):
        counts.append(int(labels.sum()))
        return float(labels.mean())

    lo, hi = stats.bootstrap_ci(positives, y, proba[:, 1], n_boot=50, seed=1)
    assert set(counts) == {int(y.sum())} and lo == hi == pytest.approx(y.mean())
    a = stats.bootstrap_ci(_mann_whitney_auc, y, proba[:, 1], n_boot=200, seed=5)
    assert a == stats.bootstrap_ci(_mann_whitney_auc, y, proba[:, 1], n_boot=200, seed=5)
    assert a != stats.bootstrap_ci(_mann_whitney_auc, y, proba[:, 1], n_boot=200, seed=6)
    assert _mann_whitney_auc(y, proba[:, 1]) == pytest.approx(roc_auc_score(y, proba[:, 1]))


def test_ece_of_perfectly_calibrated_predictions_is_near_zero(holdout):
    _, proba, _ = holdout
    p = np.tile(proba[:, 1], 200)  # the model's real scores, labels drawn from them: calibrated by design
    y = (np.random.default_rng(0).random(p.size) < p).astype(int)
    assert calibration.expected_calibration_error(y, p) < 0.01


def test_reliability_curve_matches_sklearn_and_ece_formula(holdout):
    y, proba, _ = holdout
    p = proba[:, 1]
    curve = calibration.reliability_curve(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["frequency"], prob_true)
    np.testing.assert_allclose(curve["confidence"], prob_pred)
    assert curve["count"].sum() == y.size
    bins = np.minimum((np.ceil(p * 10) - 1).clip(0), 9)  # (lo, hi] bins
    ece = sum(np.sum(bins == b) / y.size * abs(y[bins == b].mean() - p[bins == b].mean())
              for b in np.unique(bins))
    assert calibration.expected_calibration_error(y, p) == pytest.approx(ece)
    assert calibration.expected_calibration_error(y, p) > 0.02  # this model is visibly miscalibrated


def test_multiclass_ece_uses_top_label_confidence(holdout):
    y, proba, _ = holdout
    top = proba.max(1)
    correct = (proba.argmax(1) == y).astype(int)
    assert calibration.expected_calibration_error(y, proba) == pytest.approx(
        calibration.expected_calibration_error(correct, top))


def test_fit_temperature_recovers_a_known_temperature(holdout):
    _, _, decision = holdout
    rng = np.random.default_rng(0)
    base = np.tile(np.stack([np.zeros_like(decision), decision], 1), (100, 1))  # the model's real logits
    y = (rng.random(len(base)) < 1 / (1 + np.exp(-base[:, 1]))).astype(int)  # labels calibrated to them
    for true_t in (0.5, 2.5):
        fitted = calibration.fit_temperature(base * true_t, y)  # logits made T times too large
        assert fitted == pytest.approx(true_t, rel=0.05)
    probs = calibration.apply_temperature(base[:5], 1.0)
    np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(-base[:5, 1])))
    np.testing.assert_allclose(calibration.apply_temperature(base, 3.0).sum(1), 1.0)


def test_calibration_rejects_bad_input(holdout):
    y, proba, decision = holdout
    with pytest.raises(ConfigError, match="shape"):
        calibration.fit_temperature(decision, y)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        calibration.expected_calibration_error(y, decision)
    with pytest.raises(ConfigError, match="positive"):
        calibration.apply_temperature(proba, 0.0)
