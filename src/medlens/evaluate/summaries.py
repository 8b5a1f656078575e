"""From a model's cross-validation to the figures a study reports.

* **over folds**: each fold metric's mean, standard deviation and t-based 95 % interval
  (:func:`~medlens.evaluate.stats.summarize`);
* **pooled**: the metrics of all out-of-fold predictions together, with DeLong's 95 % interval of the
  binary AUC (:func:`~medlens.evaluate.stats.delong_auc_ci`);
* **calibration**: the expected calibration error (ECE) of the pooled out-of-fold probabilities before and
  after temperature scaling, each with a percentile-bootstrap 95 % interval (:func:`ece_with_ci`), and the
  fitted temperatures;
* **operating points** (binary): each threshold rule summarised over folds, and its pooled test SE/SP with
  every sample judged at its own fold's threshold (:func:`operating_point_summary`);
* **subgroups**: pooled metrics within each subgroup the dataset defines (:func:`subgroup_metrics`);
* **over training seeds** (:func:`average_over_seeds`): a model cross-validated once per seed reports the
  mean over seeds, and the seeds' spread beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.evaluate.calibration import expected_calibration_error
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating_points import rates_at
from medlens.evaluate.protocol import FOLD_METRICS, CrossValidation, calibration_scores, ece
from medlens.evaluate.stats import bootstrap_ci, delong_auc_ci, summarize
from medlens.files import json_ready

#: Bootstrap resamples of the pooled ECE's 95 % interval.
ECE_BOOTSTRAP = 500


def ece_with_ci(y: np.ndarray, p: np.ndarray, n_bins: int, seed: int) -> tuple[float, list[float]]:
    """Pooled ECE and its percentile-bootstrap 95 % interval (:func:`medlens.evaluate.stats.bootstrap_ci`).

    The ECE is biased upward by sampling noise (|acc_b − conf_b| > 0 even for a calibrated model), and a
    resample (with duplicates) carries more of that noise, so the interval tends to sit above the estimate,
    sometimes excluding it: read it as the spread of the ECE across resamples of the test folds.
    """
    scores = calibration_scores(p)
    ci = bootstrap_ci(lambda yy, ss: expected_calibration_error(yy, ss, n_bins), y, scores,
                      n_boot=ECE_BOOTSTRAP, seed=seed)
    return expected_calibration_error(y, scores, n_bins), [float(ci[0]), float(ci[1])]


def operating_point_summary(rows: list[dict], y: np.ndarray, oof: np.ndarray,
                            thresholds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fold summaries of each operating point, and its pooled test SE/SP (each sample at its fold's threshold).

    Parameters
    ----------
    rows : list of dict
        Per fold, operating point name → ``{"threshold", "sensitivity", "specificity", "val_sensitivity",
        "val_specificity"[, "target"][, "error"]}`` (:func:`~medlens.evaluate.operating_points.operating_points`).
    y, oof : ndarray
        Labels and out-of-fold probabilities of every sample.
    thresholds : dict
        Operating point name → each sample's fold threshold (NaN where untested or undefined).
    """
    summary: dict[str, Any] = {}
    for name in rows[0]:
        entries = [row[name] for row in rows]
        point: dict[str, Any] = {}
        if "target" in entries[0]:
            point["target"] = entries[0]["target"]
        for key in ("threshold", "sensitivity", "specificity", "val_sensitivity", "val_specificity"):
            point[key] = summarize([e[key] for e in entries])
        t = thresholds[name]
        tested = ~np.isnan(t)
        if tested.any():  # each sample against its own fold's threshold
            pooled = rates_at(y[tested], oof[tested, 1], t[tested])
            point["pooled_sensitivity"], point["pooled_specificity"] = pooled["sensitivity"], pooled["specificity"]
        errors = sorted({e["error"] for e in entries if "error" in e})
        point["n_folds_without_threshold"] = sum("error" in e for e in entries)
        if errors:
            point["errors"] = errors
        summary[name] = point
    return summary


def subgroup_metrics(y: np.ndarray, p: np.ndarray, subgroups: dict[str, Any], labels=None,
                     threshold: float = 0.5, n_bins: int = 10, min_samples: int = 1) -> dict[str, dict]:
    """Pooled out-of-fold metrics within each subgroup of the samples.

    Parameters
    ----------
    y : ndarray, shape (N,)
    p : ndarray, shape (N, K)
        Out-of-fold probabilities; rows holding NaN (never tested) are left out.
    subgroups : dict
        attribute → (N,) values, one per sample (e.g. ``{"sex": [...]}``); None values are left out.
    labels : list of str, optional
    threshold, n_bins : as in the study's protocol.
    min_samples : int
        Subgroups with fewer tested samples are skipped.

    Returns
    -------
    dict
        ``"attribute=value"`` → ``{"n", "sensitivity", "specificity", "accuracy", "auc",
        "balanced_accuracy", "ece"}`` (NaN where undefined, e.g. the AUC of a one-class subgroup).
    """
    tested = ~np.isnan(p).any(axis=1)
    found: dict[str, dict] = {}
    for attribute, values in subgroups.items():
        values = np.asarray(values, dtype=object)
        if values.shape != (len(y),):
            raise ConfigError(f"dataset meta subgroups[{attribute!r}]: {values.shape[0]} values for "
                              f"{len(y)} samples; give one value per sample")
        for value in sorted({v for v in values if v is not None}, key=str):
            rows = tested & (values == value)
            if rows.sum() < max(1, min_samples):
                continue
            scores = classification_metrics(y[rows], p[rows], labels=labels, threshold=threshold)
            entry = {"n": int(rows.sum())}
            entry.update({m: json_ready(scores[m]) for m in ("sensitivity", "specificity", "accuracy", "auc",
                                                             "balanced_accuracy")})
            entry["ece"] = ece(y[rows], p[rows], n_bins)
            found[f"{attribute}={value}"] = entry
    return found


def summarize_cross_validation(cv: CrossValidation, y: np.ndarray, protocol, *, labels=None,
                               subgroups: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The figures of one model's cross-validation, as ``results.json`` records them per model.

    Returns ``summary`` (each fold metric over folds; ``per_class`` for multiclass tasks), ``pooled``
    (out-of-fold metrics, confusion matrix, binary ``auc_ci95``), ``folds`` (the per-fold rows),
    ``calibration``, and, where they apply, ``operating_points`` and ``subgroups``.
    """
    n_classes = cv.oof.shape[1]
    n_bins = protocol.ece_bins
    rows = [result.row for result in cv.folds]
    tested = ~np.isnan(cv.oof[:, 0])
    y_tested, p_tested = y[tested], cv.oof[tested]
    pooled = classification_metrics(y_tested, p_tested, labels=labels, threshold=protocol.threshold)
    entry: dict[str, Any] = {
        "summary": {m: summarize([row[m] for row in rows]) for m in FOLD_METRICS},
        "pooled": {m: json_ready(pooled[m]) for m in (*FOLD_METRICS, "confusion")},
        "folds": json_ready(rows),
    }
    if n_classes == 2:
        entry["pooled"]["auc_ci95"] = [float(v) for v in delong_auc_ci(y_tested, p_tested[:, 1])]
    elif "per_class" in pooled:
        entry["summary"]["per_class"] = json_ready(pooled["per_class"])
    before, before_ci = ece_with_ci(y_tested, p_tested, n_bins, seed)
    calibration: dict[str, Any] = {"method": protocol.calibration, "n_bins": n_bins, "ece_before": before,
                                   "ece_before_ci95": before_ci}
    if cv.oof_calibrated is not None:
        temperatures = [result.temperature for result in cv.folds]
        after, after_ci = ece_with_ci(y_tested, cv.oof_calibrated[tested], n_bins, seed)
        calibration.update(ece_after=after, ece_after_ci95=after_ci, temperature=summarize(temperatures),
                           temperatures=[float(t) for t in temperatures])
        if n_classes == 2:  # folds scaled to one calibrated scale rank together better (per fold: unchanged)
            calibration["pooled_auc_after"] = classification_metrics(
                y_tested, cv.oof_calibrated[tested], labels=labels, threshold=protocol.threshold)["auc"]
    entry["calibration"] = calibration
    points = [result.operating_points for result in cv.folds if result.operating_points is not None]
    if points:
        entry["operating_points"] = operating_point_summary(points, y, cv.oof, cv.thresholds)
    if subgroups:
        entry["subgroups"] = subgroup_metrics(y, cv.oof, subgroups, labels=labels, threshold=protocol.threshold,
                                              n_bins=n_bins)
    return entry


def average_over_seeds(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from the entries of the same model cross-validated with different training seeds.

    With ``m_{s,f}`` the metric of seed s on fold f (same folds for every seed):

    * ``summary[metric]`` summarises the seed-averaged fold values ``m̄_f = 1/S Σ_s m_{s,f}`` over folds
      (its mean is the mean over seeds of each seed's fold mean), plus ``seed_std``, the standard deviation
      over seeds of the fold means ``1/F Σ_f m_{s,f}`` (ddof = 1), and ``seed_means``, those S means;
    * ``pooled[metric]`` and the calibration's ``ece_before`` / ``ece_after`` are the mean over seeds of the
      pooled figures, their spread under ``pooled["seed_std"]`` and ``calibration["seed_std"]``;
    * the per-fold rows, confusion matrix, intervals, operating points and subgroups are the first seed's
      (``seeds_note`` says so).
    """
    first = entries[0]
    combined = {**first, "summary": dict(first["summary"]), "pooled": dict(first["pooled"]),
                "calibration": dict(first["calibration"])}
    for metric in FOLD_METRICS:
        per_fold = np.array([[row[metric] for row in entry["folds"]] for entry in entries], dtype=np.float64)
        means = np.nanmean(per_fold, axis=1)
        combined["summary"][metric] = {**summarize(np.nanmean(per_fold, axis=0)),
                                       "seed_std": float(np.std(means, ddof=1)),
                                       "seed_means": [float(m) for m in means]}
    combined["pooled"]["seed_std"] = {}
    for metric in FOLD_METRICS:
        values = np.array([entry["pooled"][metric] for entry in entries], dtype=np.float64)
        combined["pooled"][metric] = float(values.mean())
        combined["pooled"]["seed_std"][metric] = float(values.std(ddof=1))
    combined["calibration"]["seed_std"] = {}
    for key in ("ece_before", "ece_after"):
        if key in first["calibration"]:
            values = np.array([entry["calibration"][key] for entry in entries], dtype=np.float64)
            combined["calibration"][key] = float(values.mean())
            combined["calibration"]["seed_std"][key] = float(values.std(ddof=1))
    combined["seeds_note"] = (f"figures are means over {len(entries)} training seeds (seed_std: their spread); "
                              "per-fold rows, confusion matrix, intervals, operating points and subgroups "
                              "are the first seed's")
    return combined
