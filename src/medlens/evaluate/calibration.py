"""Calibration: reliability curve, expected calibration error, temperature scaling.

Two readings of "confidence" are supported:

* **binary**, ``p`` of shape (N,): the probability of the positive class, compared with the observed
  fraction of positives in each bin (the usual reliability diagram of a risk score, the same as
  :func:`sklearn.calibration.calibration_curve`);
* **multiclass**, ``p`` of shape (N, K): the top-label confidence ``max_k p_k``, compared with the
  fraction of correct argmax predictions (Guo et al. 2017).

Bins are equal-width on [0, 1]: ``n_bins`` bins with edges ``linspace(0, 1, n_bins + 1)``; a value on an
inner edge goes to the lower bin (bins are (lo, hi], the first is [0, hi]), as in scikit-learn.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from medlens.errors import ConfigError


def _confidence_and_hit(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(p, dtype=np.float64)
    if p.shape[0] != y.size:
        raise ConfigError(f"calibration: y_true has {y.size} values but p has {p.shape[0]} rows")
    if p.ndim == 1:
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("calibration: with a 1-D p (positive class) y_true must hold 0 and 1")
        conf, hit = p, (y == 1).astype(np.float64)
    elif p.ndim == 2:
        conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    else:
        raise ConfigError(f"calibration: p must have shape (N,) or (N, K), got {p.shape}")
    if conf.size == 0 or (conf < 0).any() or (conf > 1).any() or not np.isfinite(conf).all():
        raise ConfigError("calibration: probabilities must be finite values in [0, 1] (and at least one)")
    return conf, hit


def reliability_curve(y_true, p, n_bins: int = 10) -> dict:
    """Mean confidence and observed frequency per equal-width bin.

    Parameters
    ----------
    y_true : array_like, shape (N,)
    p : array_like, shape (N,) for the positive-class probability of a binary task, or (N, K)
        for top-label confidence (see the module docstring).
    n_bins : int

    Returns
    -------
    dict
        ``edges`` (n_bins + 1,), and for each **non-empty** bin: ``confidence`` (mean predicted
        probability), ``frequency`` (observed positive rate, or accuracy for (N, K)) and ``count``.
    """
    if n_bins < 1:
        raise ConfigError(f"calibration: n_bins must be at least 1, got {n_bins}")
    conf, hit = _confidence_and_hit(y_true, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(bins, minlength=n_bins)
    keep = count > 0
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(bins, weights=hit, minlength=n_bins)
    return {
        "edges": edges,
        "confidence": conf_sum[keep] / count[keep],
        "frequency": hit_sum[keep] / count[keep],
        "count": count[keep],
    }


def expected_calibration_error(y_true, p, n_bins: int = 10) -> float:
    """ECE = Σ_b |B_b| / N · |acc_b − conf_b| over equal-width bins.

    Naeini MP, Cooper G, Hauskrecht M (2015), AAAI; Guo C et al. (2017), *On calibration of modern
    neural networks*, ICML. For a 1-D ``p`` (binary task) ``conf_b`` is the mean positive-class
    probability and ``acc_b`` the fraction of positives in bin b; for (N, K) ``p`` they are the mean
    top-label confidence and the accuracy of the argmax predictions in the bin.
    """
    curve = reliability_curve(y_true, p, n_bins)
    weights = curve["count"] / curve["count"].sum()
    return float(np.sum(weights * np.abs(curve["frequency"] - curve["confidence"])))


def _logits_and_labels(logits, y) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ConfigError(f"calibration: logits must have shape (N, K) with K >= 2, got {z.shape} "
                          "(a binary logit t is the pair [0, t])")
    if labels.size != z.shape[0]:
        raise ConfigError(f"calibration: y has {labels.size} values but logits has {z.shape[0]} rows")
    if labels.size and ((labels < 0).any() or (labels >= z.shape[1]).any()):
        raise ConfigError(f"calibration: y must hold class indices 0..{z.shape[1] - 1}")
    return z, labels


def fit_temperature(logits, y, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)``.

    Temperature scaling (Guo et al. 2017): one scalar T > 0 fitted on held-out data; T > 1 softens an
    over-confident model, T < 1 sharpens an under-confident one, and the argmax never changes.
    NLL(T) = −(1/N) Σ_i log softmax(z_i / T)_{y_i}, minimised over log T by bounded Brent search
    (:func:`scipy.optimize.minimize_scalar`) within ``bounds``.

    Parameters
    ----------
    logits : array_like, shape (N, K)
        Unnormalised scores (a binary logit t is the pair [0, t]).
    y : array_like of int, shape (N,)
    """
    z, labels = _logits_and_labels(logits, y)
    if labels.size == 0:
        raise ConfigError("calibration: cannot fit a temperature on zero samples")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ConfigError(f"calibration: temperature bounds must satisfy 0 < lo < hi, got {bounds}")
    rows = np.arange(labels.size)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, labels].mean())

    result = minimize_scalar(nll, bounds=(np.log(lo), np.log(hi)), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``, shape (N, K)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ConfigError(f"calibration: logits must have shape (N, K), got {z.shape}")
    if not temperature > 0:
        raise ConfigError(f"calibration: temperature must be positive, got {temperature}")
    return softmax(z / temperature, axis=1)


def probability_logits(p, eps: float = 1e-12) -> np.ndarray:
    """Logits recovered from probabilities, in the (N, K) form :func:`fit_temperature` takes.

    Binary (K = 2): the pair ``[0, t]`` with t = logit(p₁) = log(p₁ / (1 − p₁)), p₁ clipped to
    [eps, 1 − eps], so that ``softmax([0, t] / T)₁ = σ(t / T)`` (binary temperature scaling of the
    positive-class score). Multiclass: ``log p`` (p clipped below at eps); softmax(log p) = p, and any
    constant per row cancels in the softmax.

    Parameters
    ----------
    p : array_like, shape (N, K)
        Class probabilities, rows summing to 1.
    eps : float
        Clipping bound; the default keeps every probability float64 can tell from 0 and 1 apart.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ConfigError(f"calibration: probabilities must have shape (N, K) with K >= 2, got {p.shape}")
    if not np.isfinite(p).all():
        raise ConfigError("calibration: probabilities hold NaN or infinite values")
    if p.shape[1] == 2:
        p1 = np.clip(p[:, 1], eps, 1.0 - eps)
        return np.column_stack([np.zeros(len(p)), np.log(p1) - np.log1p(-p1)])
    return np.log(np.clip(p, eps, None))


def temperature_scale(p_val, y_val, p_test, bounds: tuple[float, float] = (0.05, 20.0)) -> tuple[np.ndarray, float]:
    """Fit a temperature on validation probabilities and apply it to test probabilities.

    T = argmin_T NLL(softmax(z_val / T), y_val) with z = :func:`probability_logits` (binary: logit p,
    multiclass: log p); returns ``softmax(z_test / T)`` and T. Guo C, Pleiss G, Sun Y, Weinberger KQ
    (2017), *On calibration of modern neural networks*, ICML. Every argmax is unchanged. For a binary
    task p₁ ↦ σ(logit(p₁) / T) is increasing, so the test AUC and the decision at p = 0.5 are unchanged
    too; only the confidence moves. (For K > 2 a one-vs-rest AUC may move: softmax(z / T)_k depends on
    all of z, not on p_k alone.)

    Parameters
    ----------
    p_val : array_like, shape (N_val, K)
    y_val : array_like of int, shape (N_val,)
    p_test : array_like, shape (N_test, K)
    bounds : (float, float)
        Search interval of T.

    Returns
    -------
    (ndarray, float)
        Scaled test probabilities (N_test, K) and the temperature.
    """
    temperature = fit_temperature(probability_logits(p_val), y_val, bounds=bounds)
    return apply_temperature(probability_logits(p_test), temperature), temperature
