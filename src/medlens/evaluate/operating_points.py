"""Operating points: decision thresholds chosen on validation data, applied to test data.

A binary classifier's probability ``p`` becomes a decision by a threshold ``t``: positive when
``p >= t`` (the convention of :mod:`medlens.evaluate.metrics` and :func:`sklearn.metrics.roc_curve`).
The threshold is a choice the data does not make for us; it must be made on data the model will not be
scored on (the inner validation split of a fold), then carried to the test data unchanged, so the
sensitivity and specificity it yields there are honest estimates.

Two rules:

* **target sensitivity** (screening: miss few cancers): the largest ``t`` with validation
  sensitivity SE(t) = #{positives with p >= t} / #positives ≥ target. With the positives' scores in
  descending order ``s_(1) >= s_(2) >= ...`` this is ``t = s_(k)``, ``k = ceil(target · n_pos)``.
  The largest such ``t`` keeps the most specificity the target allows.
* **Youden's J** (Youden 1950, *Index for rating diagnostic tests*, Cancer 3:32-35): the ``t``
  maximising J(t) = SE(t) + SP(t) − 1 over the validation scores, i.e. the ROC point farthest above
  the chance diagonal; ties go to the largest threshold.

Both need a validation set with both classes where the rule needs them (positives for the target
sensitivity, both classes for J); otherwise :class:`OperatingPointError` is raised: the study then
records that fold's operating point as missing (NaN), it never invents one.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_curve

from medlens.errors import ConfigError


class OperatingPointError(ConfigError):
    """A threshold cannot be chosen on the given data (e.g. the validation set holds one class)."""


def _inputs(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).reshape(-1)
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    p = p.reshape(-1)
    if y.shape != p.shape:
        raise OperatingPointError(f"operating point: y has {y.size} values but p has {p.size}")
    if y.size == 0:
        raise OperatingPointError("operating point: no validation samples to choose a threshold on")
    if not np.isin(y, (0, 1)).all():
        raise OperatingPointError("operating point: y must hold 0 (negative) and 1 (positive); "
                                  "operating points are defined for binary tasks")
    if not np.isfinite(p).all():
        raise OperatingPointError("operating point: p holds NaN or infinite values")
    return y.astype(np.int64), p


def threshold_for_sensitivity(y, p, target: float = 0.95) -> float:
    """The largest threshold whose sensitivity on ``(y, p)`` is at least ``target``.

    Parameters
    ----------
    y : array_like of {0, 1}, shape (N,)
        Validation labels; 1 is the positive class.
    p : array_like, shape (N,) or (N, 2)
        Positive-class probability (or the two-column probabilities).
    target : float
        Required sensitivity, in (0, 1].

    Returns
    -------
    float
        ``t = s_(k)``, the k-th largest positive score with ``k = ceil(target · n_pos)``; predicting
        ``p >= t`` gives SE ≥ target on these data, and any larger threshold gives less.

    Raises
    ------
    OperatingPointError
        No positive sample (sensitivity undefined), or ``target`` outside (0, 1].
    """
    if not 0 < target <= 1:
        raise OperatingPointError(f"operating point: target sensitivity must lie in (0, 1], got {target}")
    y, p = _inputs(y, p)
    positives = np.sort(p[y == 1])[::-1]
    if positives.size == 0:
        raise OperatingPointError("operating point: the validation set holds no positive sample, so no "
                                  "threshold can reach a target sensitivity")
    # ceil with a tolerance, so that target = 0.95 and n_pos = 20 gives k = 19, not 20 by rounding error
    k = max(1, math.ceil(target * positives.size - 1e-9))
    return float(positives[k - 1])


def youden_threshold(y, p) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity − 1 on ``(y, p)``.

    Candidates are the distinct scores (:func:`sklearn.metrics.roc_curve`, thresholds in decreasing
    order, ``p >= t`` positive); among maximisers the largest threshold is returned.

    Raises
    ------
    OperatingPointError
        When ``y`` holds a single class (J is undefined).
    """
    y, p = _inputs(y, p)
    if y.min() == y.max():
        raise OperatingPointError("operating point: Youden's J needs both classes in the validation set, "
                                  f"got only class {int(y[0])}")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    j = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)  # the first threshold is +inf (all negative)
    # ties (up to rounding: 1 − 1/3 and 2/3 differ in the last bit) go to the largest threshold
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[0])
    return float(thresholds[best])


def rates_at(y, p, threshold) -> dict[str, float]:
    """Sensitivity and specificity of ``p >= threshold`` on ``(y, p)``; NaN where a class is absent.

    ``threshold`` is one number, or one per sample (pooled folds, each at its own fold's threshold)."""
    y, p = _inputs(y, p)
    predicted = p >= threshold
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    se = float((predicted & (y == 1)).sum() / n_pos) if n_pos else float("nan")
    sp = float((~predicted & (y == 0)).sum() / n_neg) if n_neg else float("nan")
    return {"sensitivity": se, "specificity": sp}


def operating_points(y_val, p_val, y_test, p_test, target_sensitivity: float = 0.95) -> dict[str, dict]:
    """Thresholds chosen on validation predictions and the rates they give on test predictions.

    Returns
    -------
    dict
        ``{"target_sensitivity": {...}, "youden": {...}}``, each with ``threshold`` (NaN when it could
        not be chosen; then ``error`` says why), ``val_sensitivity``/``val_specificity`` and the test
        ``sensitivity``/``specificity``; the first also holds ``target``.
    """
    found: dict[str, dict] = {}
    for name, rule in (("target_sensitivity", lambda y, p: threshold_for_sensitivity(y, p, target_sensitivity)),
                       ("youden", youden_threshold)):
        entry: dict = {"target": target_sensitivity} if name == "target_sensitivity" else {}
        try:
            t = rule(y_val, p_val)
        except OperatingPointError as exc:
            nan = float("nan")
            entry.update(threshold=nan, val_sensitivity=nan, val_specificity=nan, sensitivity=nan,
                         specificity=nan, error=str(exc))
        else:
            val = rates_at(y_val, p_val, t)
            entry.update(threshold=t, val_sensitivity=val["sensitivity"], val_specificity=val["specificity"],
                         **rates_at(y_test, p_test, t))
        found[name] = entry
    return found
