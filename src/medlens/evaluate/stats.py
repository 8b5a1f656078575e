"""Confidence intervals: over folds (Student t), by bootstrap, and DeLong's for an AUC."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from medlens.errors import ConfigError


def summarize(values) -> dict:
    """Mean, standard deviation, 95% Student-t interval and median of per-fold (or per-case) values.

    CI95 = mean ± t_{0.975, n−1} · s / √n, with s the sample standard deviation (ddof = 1) and n the
    number of finite values. Values that are not finite (a fold where a metric is undefined, such as
    the AUC of a fold with one class, or the HD95 of a case whose prediction is empty) are **left
    out**; how many is reported as ``n_nan``. With n < 2 the standard deviation and the interval are NaN.

    Returns
    -------
    dict
        ``{"mean", "std", "ci95": [lo, hi], "median", "n", "n_nan"}`` with plain Python floats and ints.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    nan = float("nan")
    mean = float(finite.mean()) if n else nan
    median = float(np.median(finite)) if n else nan
    if n < 2:
        return {"mean": mean, "std": nan, "ci95": [nan, nan], "median": median, "n": n, "n_nan": int(v.size - n)}
    std = float(finite.std(ddof=1))
    half = float(sps.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "median": median, "n": n,
            "n_nan": int(v.size - n)}


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], y_true, scores, n_boot: int = 2000,
                 seed: int = 0, alpha: float = 0.05, stratified: bool = True) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric_fn(y_true, scores)``.

    Draws ``n_boot`` resamples of the N samples with replacement (Efron & Tibshirani 1993, *An
    Introduction to the Bootstrap*, ch. 13). ``stratified=True`` resamples within each class, keeping
    the class counts, so every resample has every class (needed for an AUC). The interval is the
    (alpha/2, 1 − alpha/2) percentiles of the finite resampled values.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(y_true, scores) -> float``, e.g. :func:`sklearn.metrics.roc_auc_score`.
    y_true : array_like, shape (N,)
    scores : array_like, shape (N,) or (N, K)
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores)
    if s.shape[0] != y.size:
        raise ConfigError(f"stats: y_true has {y.size} values but scores has {s.shape[0]} rows")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ConfigError(f"stats: need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(y.size)]
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(members, size=members.size, replace=True) for members in strata])
        values[b] = metric_fn(y[idx], s[idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def delong_auc_variance(y_true, scores) -> tuple[float, float]:
    """AUC and its DeLong variance, by the fast midrank algorithm.

    DeLong ER, DeLong DM, Clarke-Pearson DL (1988), Biometrics 44:837-845; computed as in Sun X, Xu W
    (2014), *Fast implementation of DeLong's algorithm*, IEEE Signal Process. Lett. 21:1389-1393.
    With m positives X and n negatives Y, midranks T_Z over all samples and T_X, T_Y within each class:

    AUC = (Σ_i T_Z(X_i) − m(m+1)/2) / (m n),
    V10_i = (T_Z(X_i) − T_X(X_i)) / n,   V01_j = 1 − (T_Z(Y_j) − T_Y(Y_j)) / m,
    Var(AUC) = S10 / m + S01 / n,  S10, S01 the sample variances (ddof 1) of V10 and V01.

    Returns ``(auc, variance)``; both NaN when a class is missing, the variance NaN when a class has
    one sample.
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size != s.size:
        raise ConfigError(f"stats: y_true has {y.size} values but scores has {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError("stats: DeLong's AUC needs binary y_true of 0 and 1")
    x, z = s[y == 1], s[y == 0]
    m, n = x.size, z.size
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    tz = sps.rankdata(np.concatenate([x, z]))  # midranks: ties get their average rank
    tx, ty = sps.rankdata(x), sps.rankdata(z)
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    if m < 2 or n < 2:
        return float(auc), float("nan")
    return float(auc), float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def delong_auc_ci(y_true, scores, alpha: float = 0.05) -> tuple[float, float]:
    """DeLong confidence interval of a single AUC: AUC ± z_{1−alpha/2} · SE (z = 1.96 for 95%).

    SE is the square root of :func:`delong_auc_variance`. The interval is clipped to [0, 1].
    """
    auc, var = delong_auc_variance(y_true, scores)
    half = float(sps.norm.ppf(1 - alpha / 2)) * np.sqrt(var)
    return float(np.clip(auc - half, 0.0, 1.0)), float(np.clip(auc + half, 0.0, 1.0))
