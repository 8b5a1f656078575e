"""Classification and mask metrics.

Binary conventions: class 1 is the positive class and a sample is called positive when its
probability is **at least** the threshold (``p >= threshold``), the same rule as
:func:`sklearn.metrics.roc_curve`. Ratios whose denominator is zero are NaN, never 0, so that an
undefined value cannot pass for a measured one.

With the confusion counts TP, FP, TN, FN (Fawcett 2006, *An introduction to ROC analysis*,
Pattern Recognit. Lett. 27:861-874):

=====================  ===============================
sensitivity (SE, TPR)   TP / (TP + FN)
specificity (SP, TNR)   TN / (TN + FP)
accuracy (AR)           (TP + TN) / N
balanced accuracy       (SE + SP) / 2
PPV (precision)         TP / (TP + FP)
NPV                     TN / (TN + FN)
F1                      2 TP / (2 TP + FP + FN)
AUC                     area under the ROC curve = P(score of a positive > score of a negative)
=====================  ===============================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from medlens.errors import ConfigError


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _binary_inputs(y_true, p_pos) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(p_pos, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ConfigError(f"metrics: y_true has {y.size} values but p_pos has {p.size}")
    if y.size == 0:
        raise ConfigError("metrics: y_true is empty")
    if not np.isin(y, (0, 1)).all():
        raise ConfigError(f"metrics: binary y_true must hold only 0 and 1, got {np.unique(y)[:10].tolist()}")
    if not np.isfinite(p).all():
        raise ConfigError("metrics: p_pos holds NaN or infinite values")
    return y.astype(np.int64), p


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` holds a single class."""
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, score))


def binary_metrics(y_true, p_pos, threshold: float = 0.5) -> dict:
    """Confusion counts and the usual rates of a binary classifier.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (N,)
        True labels; 1 is the positive class.
    p_pos : array_like of float, shape (N,)
        Score or probability of the positive class.
    threshold : float
        A sample is predicted positive when ``p_pos >= threshold``.

    Returns
    -------
    dict
        ``sensitivity`` = TP/(TP+FN), ``specificity`` = TN/(TN+FP), ``accuracy`` = (TP+TN)/N,
        ``auc`` (threshold-free ROC AUC, NaN when ``y_true`` has one class), ``balanced_accuracy`` =
        (SE+SP)/2, ``f1`` = 2TP/(2TP+FP+FN), ``ppv`` = TP/(TP+FP), ``npv`` = TN/(TN+FN), the ``threshold``
        used and the integer counts ``tp``, ``fp``, ``tn``, ``fn``. A ratio with a zero denominator is NaN.
    """
    y, p = _binary_inputs(y_true, p_pos)
    pred = p >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    tn = int(np.sum(~pred & ~pos))
    fn = int(np.sum(~pred & pos))
    se = _ratio(tp, tp + fn)
    sp = _ratio(tn, tn + fp)
    return {
        "sensitivity": se,
        "specificity": sp,
        "accuracy": _ratio(tp + tn, y.size),
        "auc": _auc(y, p),
        "balanced_accuracy": (se + sp) / 2,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def classification_metrics(y_true, proba, labels: Sequence[str] | None = None, threshold: float = 0.5) -> dict:
    """Metrics of a K-class classifier from its ``(N, K)`` probabilities.

    Parameters
    ----------
    y_true : array_like of int, shape (N,)
        True class indices in ``0 .. K-1``.
    proba : array_like, shape (N, K)
        Class probabilities (rows need not sum exactly to 1).
    labels : list of str, optional
        Class names, used as keys of ``per_class``; default ``"0" .. "K-1"``.
    threshold : float
        Binary case only: class 1 is predicted when ``proba[:, 1] >= threshold``.

    Returns
    -------
    dict
        K == 2: :func:`binary_metrics` of ``proba[:, 1]`` (class 1 positive).
        K > 2: predictions are ``argmax`` of ``proba``. For each class c, one-vs-rest:
        SE_c = TP_c/(TP_c+FN_c), SP_c = TN_c/(TN_c+FP_c), F1_c, and AUC_c = AUC of ``proba[:, c]``
        for ``y == c`` against the rest. ``sensitivity``, ``specificity``, ``f1`` and ``auc`` are
        their unweighted (macro) means over classes (NaN entries, such as the AUC of a class absent
        from ``y_true``, are left out of the mean); ``auc`` then equals
        ``roc_auc_score(multi_class="ovr", average="macro")``. ``accuracy`` = fraction of correct
        argmax predictions; ``balanced_accuracy`` = macro sensitivity (as in scikit-learn);
        ``per_class`` = ``{label: {sensitivity, specificity, auc, f1}}``.
        Always: ``confusion``, the K×K count matrix as nested lists, rows = true class,
        columns = predicted class.
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true).reshape(-1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ConfigError(f"metrics: proba must have shape (N, K) with K >= 2, got {p.shape}")
    n, k = p.shape
    if y.size != n:
        raise ConfigError(f"metrics: y_true has {y.size} values but proba has {n} rows")
    if not np.isin(y, np.arange(k)).all():
        raise ConfigError(f"metrics: y_true must hold class indices 0..{k - 1}, got {np.unique(y)[:10].tolist()}")
    if labels is not None and len(labels) != k:
        raise ConfigError(f"metrics: {len(labels)} labels given for {k} probability columns")
    names = [str(name) for name in labels] if labels is not None else [str(c) for c in range(k)]
    y = y.astype(np.int64)

    if k == 2:
        out = binary_metrics(y, p[:, 1], threshold)
        out["confusion"] = [[out["tn"], out["fp"]], [out["fn"], out["tp"]]]
        return out

    if not np.isfinite(p).all():
        raise ConfigError("metrics: proba holds NaN or infinite values")
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    per_class = {}
    for c, name in enumerate(names):
        tp = cm[c, c]
        fn = cm[c].sum() - tp
        fp = cm[:, c].sum() - tp
        tn = n - tp - fn - fp
        per_class[name] = {
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "auc": _auc((y == c).astype(np.int64), p[:, c]),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }

    def macro(key: str) -> float:
        values = np.array([v[key] for v in per_class.values()])
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {
        "sensitivity": macro("sensitivity"),
        "specificity": macro("specificity"),
        "accuracy": _ratio(np.trace(cm), n),
        "auc": macro("auc"),
        "balanced_accuracy": macro("sensitivity"),
        "f1": macro("f1"),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def roc_points(y_true, p_pos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: ``(fpr, tpr, thresholds)`` from :func:`sklearn.metrics.roc_curve`.

    All thresholds are kept (``drop_intermediate=False``); ``thresholds`` decrease and start at
    ``inf`` (nothing called positive). Point i calls positive every sample with ``p_pos >= thresholds[i]``.
    """
    y, p = _binary_inputs(y_true, p_pos)
    if y.min() == y.max():
        raise ConfigError("metrics: the ROC curve needs both classes in y_true")
    return roc_curve(y, p, drop_intermediate=False)


def _mask_inputs(pred, true) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred)
    b = np.asarray(true)
    if a.shape != b.shape:
        raise ConfigError(f"metrics: predicted mask shape {a.shape} differs from true mask shape {b.shape}")
    if a.dtype != bool or b.dtype != bool:
        raise ConfigError(f"metrics: masks must be boolean arrays, got {a.dtype} and {b.dtype}")
    return a, b


def dice(pred, true) -> float:
    """Dice similarity coefficient of two boolean masks: 2|A ∩ B| / (|A| + |B|).

    Dice LR (1945), Ecology 26:297-302. When both masks are empty the prediction is exactly right and
    the result is defined as 1.0 (the formula would be 0/0).
    """
    a, b = _mask_inputs(pred, true)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(pred, true) -> float:
    """Intersection over union (Jaccard index) of two boolean masks: |A ∩ B| / |A ∪ B|.

    Jaccard P (1912), New Phytol. 11:37-50. Both masks empty gives 1.0 by definition (0/0 otherwise).
    """
    a, b = _mask_inputs(pred, true)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(a, b).sum()) / union
