"""Run a validated study from data to report.

The flow: resolve the dataset → build arrays (:mod:`medlens.data.builders`) → compute the unsupervised
features once (Gabor statistics) → split (stratified, patient-grouped k-fold or the official split) →
for every model and fold: fit on the training part with an inner validation split for model selection,
predict the held-out part → metrics per fold, summaries with 95 % confidence intervals, pooled
out-of-fold ROC → ``results.json``, ``predictions.csv``, tables, figures, ``model_card.md`` and
``report.html``.

Trust, per model and fold, all from the fold's inner validation split (never its test part):

* **calibration**: the model also predicts the validation split; with ``protocol.calibration:
  temperature`` one temperature T is fitted there (binary: on logit p, multiclass: on log p;
  :func:`medlens.evaluate.calibration.temperature_scale`) and applied to the fold's test probabilities.
  The expected calibration error (ECE, ``protocol.ece_bins`` equal-width bins, positive class for
  binary tasks) of the pooled out-of-fold test probabilities is reported before and after, with a
  bootstrap 95 % interval. Every other metric, the ROC and ``predictions.csv``'s ``<model>_p_<class>``
  columns use the raw probabilities (scaling keeps each fold's ranking, so its AUC, and the decision
  at 0.5, unchanged); the scaled ones are the ``<model>_calibrated_p_<class>`` columns.
* **operating points** (binary): thresholds chosen on the validation predictions, for
  ``protocol.target_sensitivity`` and for Youden's J (:mod:`medlens.evaluate.operating_points`), and
  the sensitivity and specificity they give on the fold's test part, summarised over folds.
* **subgroups**: where the dataset's ``meta["subgroups"]`` maps an attribute to one value per sample,
  the pooled out-of-fold metrics per subgroup (:func:`subgroup_metrics`). No builder provides one yet.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medlens.config import StudyConfig
from medlens.data import builders
from medlens.data.dataset import ArrayDataset
from medlens.data.fetch import resolve
from medlens.errors import ConfigError, MedlensError
from medlens.evaluate.calibration import expected_calibration_error, temperature_scale
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating_points import operating_points, rates_at
from medlens.evaluate.splits import inner_validation_split, kfold_splits
from medlens.evaluate.stats import bootstrap_ci, delong_auc_ci, summarize
from medlens.files import write_atomically, write_text_atomically
from medlens.models.registry import build
from medlens.progress import progress_bar

FOLD_METRICS = ("sensitivity", "specificity", "accuracy", "auc", "balanced_accuracy", "f1")
#: Bootstrap resamples of the pooled ECE's 95 % interval.
ECE_BOOTSTRAP = 500
VERSIONED_PACKAGES = ("medlens", "torch", "monai", "numpy", "scipy", "scikit-learn", "scikit-image",
                      "pydicom", "nibabel")


@dataclass
class Fold:
    """One evaluation round: indices into the dataset for training, model selection and testing."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def platform_description() -> str:
    """Operating system, CPU count and the instruction set of torch's CPU kernels (e.g. ``AVX512``).

    The kernel level is part of a result's provenance: AVX2 and AVX-512 kernels round differently, so a
    model trained with torch from the same seed and data can differ between CPUs.
    """
    import torch

    return f"{platform.platform()}; {os.cpu_count()} CPUs; torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_dataset(config: StudyConfig) -> ArrayDataset:
    """Resolve the study's files (downloading a missing set that has a verified source) and build its arrays."""
    from medlens.data.fetch import ensure_dataset

    root = ensure_dataset(config.data.name, path=config.data.path, progress=False)
    return builders.build_dataset(config.data.builder, root, **config.data.params)


def subsample(data: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """A random subset of ``n`` samples, stratified by label (and official split where there is one)."""
    if n >= len(data):
        return data
    from sklearn.model_selection import train_test_split

    strata = data.labels if data.split is None else np.char.add(data.split.astype(str), data.labels.astype(str))
    keep, _ = train_test_split(np.arange(len(data)), train_size=n, stratify=strata, random_state=seed)
    return data.subset(np.sort(keep))


def add_gabor_features(data: ArrayDataset, config: StudyConfig) -> ArrayDataset:
    """Append pooled Gabor statistics (``gabor_*``) to the dataset's features.

    2D images: the bank runs on channel 0. Volumes: on the central axial, coronal and sagittal slices
    of channel 0, inside the ``nodule_mask`` channel when ``inside_mask`` is set.
    """
    from medlens.preprocess.gabor import GaborBank

    gabor = config.features.gabor
    if gabor is None:
        return data
    bank = GaborBank(wavelengths=gabor.wavelengths, orientations=gabor.orientations,
                     gamma=gabor.gamma, bandwidth=gabor.bandwidth)
    images = data.images[:, 0]
    if data.images.ndim == 5:
        masks = None
        if gabor.inside_mask:
            channels = data.meta.get("channels", [])
            if "nodule_mask" not in channels:
                raise ConfigError("features.gabor.inside_mask: the dataset has no nodule_mask channel")
            masks = data.images[:, channels.index("nodule_mask")] > 0.5
        values = bank.features_3d(images, masks=masks)
    else:
        values = bank.features(images)
    names = bank.feature_names
    names = [n if n.startswith("gabor") else f"gabor_{n}" for n in names]
    old = data.features if data.features is not None else np.zeros((len(data), 0), np.float32)
    data.features = np.concatenate([old, values.astype(np.float32)], axis=1)
    data.meta = {**data.meta, "feature_names": list(data.meta.get("feature_names", [])) + names}
    return data


def make_folds(data: ArrayDataset, config: StudyConfig, k: int) -> list[Fold]:
    """The outer evaluation rounds of the protocol, each with its inner validation split."""
    protocol = config.protocol
    if protocol.kind == "official":
        split = data.split
        if split is None:
            raise ConfigError("protocol.kind: 'official' needs a dataset that publishes train/val/test splits")
        parts = [np.flatnonzero(split == name) for name in ("train", "val", "test")]
        return [Fold(r, *parts, seed=config.seed + r) for r in range(protocol.repeats)]
    groups = data.groups if protocol.group_by == "patient" else None
    folds = []
    for i, (train, test) in enumerate(kfold_splits(data.labels, groups=groups, k=k, seed=protocol.seed)):
        inner_train, inner_val = inner_validation_split(
            data.labels[train], None if groups is None else groups[train],
            fraction=protocol.inner_val_fraction, seed=protocol.seed + i)
        folds.append(Fold(i, train[inner_train], train[inner_val], test, seed=config.seed))
    return folds


def _model_params(model_cfg, quick: bool, seed: int) -> dict[str, Any]:
    params = dict(model_cfg.params)
    if quick:
        params.update(model_cfg.quick_params)
    params.setdefault("seed", seed)
    return params


def _predict(model, model_cfg, data: ArrayDataset, n_classes: int) -> np.ndarray:
    proba = np.asarray(model.predict_proba(data), dtype=np.float64)
    if proba.shape != (len(data), n_classes):
        raise MedlensError(f"model {model_cfg.key}: predict_proba returned shape {proba.shape}, "
                           f"expected {(len(data), n_classes)}")
    return proba


def _scores(p: np.ndarray) -> np.ndarray:
    """What the ECE reads: the positive-class column of a binary task, else the (N, K) matrix."""
    return p[:, 1] if p.shape[1] == 2 else p


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    return expected_calibration_error(y, _scores(p), n_bins)


def _ece_with_ci(y: np.ndarray, p: np.ndarray, n_bins: int, seed: int) -> tuple[float, list[float]]:
    """Pooled ECE and its percentile-bootstrap 95 % interval (:func:`medlens.evaluate.stats.bootstrap_ci`).

    The ECE is biased upward by sampling noise (|acc_b − conf_b| > 0 even for a calibrated model), and a
    resample (with duplicates) carries more of that noise, so the interval tends to sit above the estimate,
    sometimes excluding it: read it as the spread of the ECE across resamples of the test folds.
    """
    scores = _scores(p)
    ci = bootstrap_ci(lambda yy, ss: expected_calibration_error(yy, ss, n_bins), y, scores,
                      n_boot=ECE_BOOTSTRAP, seed=seed)
    return expected_calibration_error(y, scores, n_bins), [float(ci[0]), float(ci[1])]


def _summarize_operating_points(rows: list[dict], y: np.ndarray, oof: np.ndarray,
                                thresholds: np.ndarray) -> dict[str, Any]:
    """Fold summaries of each operating point, and its pooled test SE/SP (each sample at its fold's threshold)."""
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
            entry.update({m: _plain(scores[m]) for m in ("sensitivity", "specificity", "accuracy", "auc",
                                                         "balanced_accuracy")})
            entry["ece"] = _ece(y[rows], p[rows], n_bins)
            found[f"{attribute}={value}"] = entry
    return found


def evaluate_model(model_cfg, data: ArrayDataset, folds: list[Fold], config: StudyConfig,
                   quick: bool, advance) -> tuple[dict[str, Any], np.ndarray]:
    """Fit and score one model on every fold; returns its results entry and out-of-fold probabilities.

    The returned probabilities are the raw ones; the temperature-scaled ones (when
    ``protocol.calibration`` is ``temperature``) are in ``entry["_calibrated_oof"]``, and the fold of
    each tested sample in ``entry["_fold_of"]``; the caller pops both before writing ``results.json``.
    """
    labels = data.meta.get("labels")
    n_classes = data.n_classes
    protocol = config.protocol
    method, n_bins = protocol.calibration, protocol.ece_bins
    oof = np.full((len(data), n_classes), np.nan)
    oof_cal = np.full((len(data), n_classes), np.nan) if method == "temperature" else None
    fold_of = np.full(len(data), -1)
    thresholds: dict[str, np.ndarray] = {}
    op_rows: list[dict] = []
    temperatures: list[float] = []
    fold_rows, seconds, description, n_parameters = [], 0.0, model_cfg.description, None
    generator = None
    if config.augment is not None:  # loaded once, sampled per fold
        from medlens.synth.augment import augment_with_generator
        from medlens.synth.gan import GAN

        generator = GAN.load(config.augment.checkpoint)
    for fold in folds:
        model = build(model_cfg.name, **_model_params(model_cfg, quick, fold.seed))
        train = data.subset(fold.train)
        if generator is not None:
            train = augment_with_generator(train, generator, config.augment.n_per_class, seed=fold.seed)
        val = data.subset(fold.val)
        start = time.perf_counter()
        model.fit(train, val)
        seconds += time.perf_counter() - start
        y_test = data.labels[fold.test]
        proba = _predict(model, model_cfg, data.subset(fold.test), n_classes)
        oof[fold.test] = proba
        fold_of[fold.test] = fold.index
        scores = classification_metrics(y_test, proba, labels=labels, threshold=protocol.threshold)
        row = {"fold": fold.index, "n_train": len(train), "n_synthetic": int(train.meta.get("n_synthetic", 0)),
               "n_test": int(len(fold.test)), **{m: _plain(scores[m]) for m in FOLD_METRICS},
               "ece": _ece(y_test, proba, n_bins)}
        proba_val = _predict(model, model_cfg, val, n_classes) if len(fold.val) else None
        y_val = data.labels[fold.val]
        if oof_cal is not None:
            if proba_val is not None and len(np.unique(y_val)) == n_classes:
                scaled, temperature = temperature_scale(proba_val, y_val, proba)
            else:  # documented fallback: no temperature can be fitted without every class; T = 1
                scaled, temperature = proba, 1.0
                row["calibration_note"] = "validation split lacks a class: temperature left at 1"
            oof_cal[fold.test] = scaled
            temperatures.append(temperature)
            row.update(temperature=temperature, ece_calibrated=_ece(y_test, scaled, n_bins))
        if n_classes == 2:
            if proba_val is None:
                proba_val, y_val = np.empty((0, 2)), np.empty(0, int)
            points = operating_points(y_val, proba_val, y_test, proba,
                                      target_sensitivity=protocol.target_sensitivity)
            op_rows.append(points)
            for name, point in points.items():
                thresholds.setdefault(name, np.full(len(data), np.nan))[fold.test] = point["threshold"]
            row["operating_points"] = points
        fold_rows.append(row)
        n_parameters = getattr(model, "n_parameters", n_parameters)
        description = description or getattr(model, "description", "")
        advance()
    tested = ~np.isnan(oof[:, 0])
    pooled = classification_metrics(data.labels[tested], oof[tested], labels=labels,
                                    threshold=protocol.threshold)
    entry: dict[str, Any] = {
        "summary": {m: summarize([row[m] for row in fold_rows]) for m in FOLD_METRICS},
        "pooled": {m: _plain(pooled[m]) for m in (*FOLD_METRICS, "confusion")},
        "folds": fold_rows,
        "train_seconds": round(seconds, 3),
        "description": description,
        "n_parameters": n_parameters,
        "model": model_cfg.name,
        "params": _model_params(model_cfg, quick, config.seed),
    }
    if n_classes == 2:
        entry["pooled"]["auc_ci95"] = [float(v) for v in delong_auc_ci(data.labels[tested], oof[tested, 1])]
    elif "per_class" in pooled:
        entry["summary"]["per_class"] = _plain(pooled["per_class"])
    y_tested = data.labels[tested]
    ece, ece_ci = _ece_with_ci(y_tested, oof[tested], n_bins, config.seed)
    calibration: dict[str, Any] = {"method": method, "n_bins": n_bins, "ece_before": ece, "ece_before_ci95": ece_ci}
    if oof_cal is not None:
        ece_after, ece_after_ci = _ece_with_ci(y_tested, oof_cal[tested], n_bins, config.seed)
        calibration.update(ece_after=ece_after, ece_after_ci95=ece_after_ci, temperature=summarize(temperatures),
                           temperatures=[float(t) for t in temperatures])
        if n_classes == 2:  # folds scaled to one calibrated scale rank together better (per fold: unchanged)
            calibration["pooled_auc_after"] = classification_metrics(
                y_tested, oof_cal[tested], labels=labels, threshold=protocol.threshold)["auc"]
    entry["calibration"] = calibration
    if op_rows:
        entry["operating_points"] = _summarize_operating_points(op_rows, data.labels, oof, thresholds)
    subgroups = data.meta.get("subgroups")
    if subgroups:
        entry["subgroups"] = subgroup_metrics(data.labels, oof, subgroups, labels=labels,
                                              threshold=protocol.threshold, n_bins=n_bins)
    entry["_calibrated_oof"] = oof_cal
    entry["_fold_of"] = fold_of
    if model_cfg.name == "cnn":
        entry["_explain"] = explain_examples(model, data, folds[-1], oof, labels)
    return entry, oof


def explain_examples(model, data: ArrayDataset, fold: Fold, oof: np.ndarray, labels, per_class: int = 2) -> dict:
    """Grad-CAM maps of a CNN for the test images it is most sure of, per true class, in its last fold.

    For each class ``c`` the ``per_class`` test samples of true class ``c`` with the highest ``p_c`` are
    explained for class ``c`` (:func:`medlens.deploy.explain.explain`): what the network looks at when it is
    right and confident. Returns ``ids``, ``images``, ``maps`` and ``titles`` for the report.
    """
    from medlens.deploy.explain import explain

    names = labels or [str(c) for c in range(data.n_classes)]
    chosen, classes = [], []
    for c in range(data.n_classes):
        of_class = fold.test[data.labels[fold.test] == c]
        best = of_class[np.argsort(-oof[of_class, c])[:per_class]]
        chosen.extend(best.tolist())
        classes.extend([c] * len(best))
    images = data.images[chosen]
    maps = explain(model, images, "gradcam", class_index=classes) if chosen else np.empty((0,))
    ids = data.ids[chosen] if data.ids is not None else np.array(chosen).astype(str)
    titles = [f"{i}: {names[c]} (p = {oof[j, c]:.2f})" for i, c, j in zip(ids, classes, chosen)]
    return {"ids": [str(i) for i in ids], "images": images, "maps": maps, "titles": titles}


def _catalogue_provenance(name: str) -> dict[str, str]:
    """Licence, citation and upstream origin of a catalogued dataset (empty when it is not catalogued)."""
    from medlens.data import catalog

    try:
        info = catalog.get(name)
    except MedlensError:
        return {}
    return {"licence": info.licence, "citation": info.citation, "origin": info.source}


def _plain(value: Any) -> Any:
    """JSON-ready copies of numpy scalars and arrays."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """Create ``out_dir``; refuse to replace an earlier study's results unless ``overwrite``."""
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise MedlensError(f"{out_dir}: already holds a study's results.json; choose another --out "
                           "or pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def check_model_params(config: StudyConfig, models: list, quick: bool) -> None:
    """Build every model once, untrained, so a bad parameter fails before any data is read or model trained,
    with the config field named."""
    for model_cfg in models:
        index = config.models.index(model_cfg)
        try:
            build(model_cfg.name, **_model_params(model_cfg, quick, config.seed))
        except ConfigError as exc:
            raise ConfigError(f"{config.source or '<config>'}: field `models[{index}].params` "
                              f"({model_cfg.key}): {exc}") from exc


def run_study(config: StudyConfig, out_dir: Path, *, folds: int | None = None, quick: bool = False,
              quiet: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run ``config`` and write its results, tables, figures and report into ``out_dir``.

    Parameters
    ----------
    config : StudyConfig
        The validated study.
    out_dir : Path
        Output folder (created).
    folds : int, optional
        Override of ``protocol.folds`` for k-fold protocols.
    quick : bool
        Smoke run: ``config.quick`` folds, subsample and model subset, and each model's ``quick_params``.
    quiet : bool
        No progress bars.
    overwrite : bool
        Replace an earlier study's results in ``out_dir``.

    Returns
    -------
    dict
        The ``results.json`` content.
    """
    started = time.perf_counter()
    models = [m for m in config.models if not (quick and config.quick.models and m.key not in config.quick.models)]
    check_model_params(config, models, quick)
    out_dir = prepare_output(out_dir, overwrite)
    seed_everything(config.seed)
    data = load_dataset(config)
    if quick and config.quick.max_samples:
        data = subsample(data, config.quick.max_samples, config.seed)
    data = add_gabor_features(data, config)
    k = folds or (config.quick.folds if quick else config.protocol.folds)
    outer = make_folds(data, config, k)

    results_models: dict[str, Any] = {}
    oof: dict[str, dict[str, np.ndarray]] = {}
    with progress_bar(len(models) * len(outer), "study", disable=quiet) as advance_for:
        for model_cfg in models:
            entry, proba = evaluate_model(model_cfg, data, outer, config, quick, advance_for(model_cfg.key))
            calibrated, fold_of = entry.pop("_calibrated_oof"), entry.pop("_fold_of")
            explained = entry.pop("_explain", None)
            results_models[model_cfg.key] = entry
            oof[model_cfg.key] = {"y_true": data.labels, "p": proba, "fold": fold_of, "explain": explained}
            if calibrated is not None:
                oof[model_cfg.key]["p_calibrated"] = calibrated

    protocol = config.protocol.model_dump()
    protocol.update(folds=len(outer) if config.protocol.kind == "kfold" else None,
                    grouped_by="patient" if (config.protocol.group_by == "patient" and data.groups is not None)
                    else None, quick=quick)
    results = {
        "study": config.study,
        "title": config.title or config.study,
        "description": config.description,
        "task": {"kind": "binary" if data.n_classes == 2 else "multiclass", "labels": data.meta.get("labels")},
        "data": {"name": config.data.name, "n_samples": len(data),
                 "class_counts": np.bincount(data.labels, minlength=data.n_classes).tolist(),
                 "n_groups": None if data.groups is None else int(len(np.unique(data.groups))),
                 "image_shape": list(data.images.shape[1:]),
                 "n_features": 0 if data.features is None else int(data.features.shape[1]),
                 "source": data.meta.get("source"), "label_rule": data.meta.get("label_rule"),
                 **_catalogue_provenance(config.data.name)},
        "protocol": protocol,
        "models": results_models,
        "reference": config.reference.model_dump() if config.reference else None,
        "provenance": {
            "config": config.model_dump(mode="json"),
            "config_file": str(config.source) if config.source else None,
            "data_md5": data.meta.get("source_md5"),
            "versions": package_versions(),
            "seed": config.seed,
            "platform": platform_description(),
            "wall_seconds": round(time.perf_counter() - started, 2),
        },
    }
    write_outputs(results, oof, data, out_dir)
    results["provenance"]["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_text_atomically(out_dir / "results.json", json.dumps(_plain(results), indent=2))  # last: marks a finished study
    return results


def write_outputs(results: dict[str, Any], oof: dict[str, dict[str, np.ndarray]], data: ArrayDataset,
                  out_dir: Path) -> None:
    """predictions.csv, table.md/csv, figures, model_card.md and report.html (results.json is written by
    the caller).

    ``oof[key]`` holds ``y_true``, the raw out-of-fold ``p``, optionally ``p_calibrated`` (temperature
    scaled) and ``fold`` (the test fold of each sample, -1 where never tested).
    """
    from medlens.report.figures import plot_comparison, plot_confusion, plot_reliability, plot_roc
    from medlens.report.html import write_report
    from medlens.report.model_card import study_model_cards
    from medlens.report.tables import write_tables

    ids = data.ids if data.ids is not None else np.arange(len(data)).astype(str)
    frame = pd.DataFrame({"id": ids, "label": data.labels})
    if data.groups is not None:
        frame["group"] = data.groups
    folds = next((entry["fold"] for entry in oof.values() if entry.get("fold") is not None), None)
    if folds is not None:
        frame["fold"] = folds
    names = data.meta.get("labels") or [str(c) for c in range(data.n_classes)]
    for key, entry in oof.items():
        for c, name in enumerate(names):
            frame[f"{key}_p_{name}"] = entry["p"][:, c]
        if entry.get("p_calibrated") is not None:
            for c, name in enumerate(names):
                frame[f"{key}_calibrated_p_{name}"] = entry["p_calibrated"][:, c]
    write_text_atomically(out_dir / "predictions.csv", frame.to_csv(index=False))
    write_tables(results, out_dir)
    write_text_atomically(out_dir / "model_card.md", study_model_cards(results))
    calibrated = {key: {"y_true": e["y_true"], "p": e["p_calibrated"]} for key, e in oof.items()
                  if e.get("p_calibrated") is not None}
    raw_title = "Reliability before scaling" if calibrated else None
    n_bins = int((results.get("protocol") or {}).get("ece_bins") or 10)
    figures = {
        "Comparison of models (SE, SP, AR)": plot_comparison(results, out_dir / "comparison.png"),
        "ROC curves (pooled out-of-fold)": plot_roc(oof, out_dir / "roc.png"),
        "Confusion matrices (pooled)": plot_confusion(results, out_dir / "confusion.png"),
        "Reliability diagrams" + (" (raw probabilities)" if calibrated else ""):
            plot_reliability(oof, out_dir / "reliability.png", n_bins=n_bins, title=raw_title),
    }
    if calibrated:
        figures["Reliability diagrams after temperature scaling (fitted on each fold's validation split)"] = \
            plot_reliability(calibrated, out_dir / "reliability_calibrated.png", n_bins=n_bins,
                             title="Reliability after temperature scaling")
    augment = results["provenance"]["config"].get("augment")
    if augment:
        from medlens.synth.augment import synthetic_grid

        labels = ", ".join(f"row {c + 1}: {name}" for c, name in enumerate(names))
        figures[f"Synthetic training images from the GAN {augment['checkpoint']} ({labels}); "
                f"{augment['n_per_class']} per class were added to each training fold"] = \
            synthetic_grid(augment["checkpoint"], out_dir / "synthetic_samples.png")
    for key, entry in oof.items():
        if entry.get("explain") and len(entry["explain"]["ids"]):
            figures[f"Grad-CAM of {key} (last fold; the test images it is surest of, per true class)"] = \
                write_explanations(entry["explain"], out_dir / "explanations" / key)
    write_report(results, out_dir, figures={k: Path(v) for k, v in figures.items() if v})


def write_explanations(explained: dict, folder: Path) -> Path:
    """One overlay PNG per explained image in ``folder`` and their column, ``folder.png``, for the report."""
    from PIL import Image

    from medlens.deploy.explain import write_overlay

    paths = [write_overlay(image, heat, folder / f"{name}.png", title=title)
             for image, heat, name, title in zip(explained["images"], explained["maps"], explained["ids"],
                                                 explained["titles"])]
    tiles = [Image.open(p).convert("RGB") for p in paths]
    column = Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles)), "white")
    top = 0
    for tile in tiles:
        column.paste(tile, (0, top))
        top += tile.height
    return write_atomically(folder.with_suffix(".png"), lambda tmp: column.save(tmp, format="PNG"))
