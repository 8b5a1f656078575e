"""Run a validated study from data to report.

The flow: resolve the dataset → build arrays (:mod:`medlens.data.builders`) → compute the unsupervised
features once (Gabor statistics) → split (stratified, patient-grouped k-fold or the official split) →
for every model and fold: fit on the training part with an inner validation split for model selection,
predict the held-out part → metrics per fold, summaries with 95 % confidence intervals, pooled
out-of-fold ROC → ``results.json``, ``predictions.csv``, tables, figures and ``report.html``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
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
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.splits import inner_validation_split, kfold_splits
from medlens.evaluate.stats import delong_auc_ci, summarize
from medlens.models.registry import build
from medlens.progress import progress_bar

FOLD_METRICS = ("sensitivity", "specificity", "accuracy", "auc", "balanced_accuracy", "f1")
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


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_dataset(config: StudyConfig) -> ArrayDataset:
    """Resolve the study's files and build its arrays."""
    root = resolve(config.data.name, path=config.data.path, download=False, progress=False)
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


def evaluate_model(model_cfg, data: ArrayDataset, folds: list[Fold], config: StudyConfig,
                   quick: bool, advance) -> tuple[dict[str, Any], np.ndarray]:
    """Fit and score one model on every fold; returns its results entry and out-of-fold probabilities."""
    labels = data.meta.get("labels")
    n_classes = data.n_classes
    oof = np.full((len(data), n_classes), np.nan)
    fold_rows, seconds, description, n_parameters = [], 0.0, model_cfg.description, None
    for fold in folds:
        model = build(model_cfg.name, **_model_params(model_cfg, quick, fold.seed))
        train = data.subset(fold.train)
        if config.augment is not None:
            from medlens.synth.augment import augment_with_generator

            train = augment_with_generator(train, config.augment.checkpoint, config.augment.n_per_class,
                                           seed=fold.seed)
        start = time.perf_counter()
        model.fit(train, data.subset(fold.val))
        seconds += time.perf_counter() - start
        proba = np.asarray(model.predict_proba(data.subset(fold.test)), dtype=np.float64)
        if proba.shape != (len(fold.test), n_classes):
            raise MedlensError(f"model {model_cfg.key}: predict_proba returned shape {proba.shape}, "
                               f"expected {(len(fold.test), n_classes)}")
        oof[fold.test] = proba
        scores = classification_metrics(data.labels[fold.test], proba, labels=labels,
                                        threshold=config.protocol.threshold)
        fold_rows.append({"fold": fold.index, "n_test": int(len(fold.test)),
                          **{m: _plain(scores[m]) for m in FOLD_METRICS}})
        n_parameters = getattr(model, "n_parameters", n_parameters)
        description = description or getattr(model, "description", "")
        advance()
    tested = ~np.isnan(oof[:, 0])
    pooled = classification_metrics(data.labels[tested], oof[tested], labels=labels,
                                    threshold=config.protocol.threshold)
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
    return entry, oof


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


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


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
    out_dir = prepare_output(out_dir, overwrite)
    seed_everything(config.seed)
    data = load_dataset(config)
    if quick and config.quick.max_samples:
        data = subsample(data, config.quick.max_samples, config.seed)
    data = add_gabor_features(data, config)
    k = folds or (config.quick.folds if quick else config.protocol.folds)
    outer = make_folds(data, config, k)
    models = [m for m in config.models if not (quick and config.quick.models and m.key not in config.quick.models)]

    results_models: dict[str, Any] = {}
    oof: dict[str, dict[str, np.ndarray]] = {}
    with progress_bar(len(models) * len(outer), "study", disable=quiet) as advance_for:
        for model_cfg in models:
            entry, proba = evaluate_model(model_cfg, data, outer, config, quick, advance_for(model_cfg.key))
            results_models[model_cfg.key] = entry
            oof[model_cfg.key] = {"y_true": data.labels, "p": proba}

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
                 "source": data.meta.get("source"), "label_rule": data.meta.get("label_rule")},
        "protocol": protocol,
        "models": results_models,
        "reference": config.reference.model_dump() if config.reference else None,
        "provenance": {
            "config": config.model_dump(mode="json"),
            "config_file": str(config.source) if config.source else None,
            "data_md5": data.meta.get("source_md5"),
            "versions": package_versions(),
            "seed": config.seed,
            "platform": f"{platform.platform()}; {os.cpu_count()} CPUs",
            "wall_seconds": round(time.perf_counter() - started, 2),
        },
    }
    write_outputs(results, oof, data, out_dir)
    results["provenance"]["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_atomic(out_dir / "results.json", json.dumps(_plain(results), indent=2))  # last: marks a finished study
    return results


def write_outputs(results: dict[str, Any], oof: dict[str, dict[str, np.ndarray]], data: ArrayDataset,
                  out_dir: Path) -> None:
    """predictions.csv, table.md/csv, figures and report.html (results.json is written by the caller)."""
    from medlens.report.figures import plot_comparison, plot_confusion, plot_reliability, plot_roc
    from medlens.report.html import write_report
    from medlens.report.tables import write_tables

    ids = data.ids if data.ids is not None else np.arange(len(data)).astype(str)
    frame = pd.DataFrame({"id": ids, "label": data.labels})
    if data.groups is not None:
        frame["group"] = data.groups
    names = data.meta.get("labels") or [str(c) for c in range(data.n_classes)]
    for key, entry in oof.items():
        for c, name in enumerate(names):
            frame[f"{key}_p_{name}"] = entry["p"][:, c]
    write_atomic(out_dir / "predictions.csv", frame.to_csv(index=False))
    write_tables(results, out_dir)
    figures = {
        "Comparison of models (SE, SP, AR)": plot_comparison(results, out_dir / "comparison.png"),
        "ROC curves (pooled out-of-fold)": plot_roc(oof, out_dir / "roc.png"),
        "Confusion matrices (pooled)": plot_confusion(results, out_dir / "confusion.png"),
        "Reliability diagrams": plot_reliability(oof, out_dir / "reliability.png"),
    }
    write_report(results, out_dir, figures={k: Path(v) for k, v in figures.items() if v})
