"""``medlens train``: fit one model of a study config on its data and write a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.config import StudyConfig
from medlens.errors import ConfigError


def choose_model(config: StudyConfig, model_id: str | None):
    """The config entry ``model_id``, or by default the first ``cnn`` entry (else the first entry)."""
    if model_id is not None:
        for entry in config.models:
            if entry.key == model_id:
                return entry
        raise ConfigError(f"--model: no model with id {model_id!r}; the config has "
                          f"{', '.join(m.key for m in config.models)}")
    return next((m for m in config.models if m.name == "cnn"), config.models[0])


def train_bundle(config: StudyConfig, out: Path, model_id: str | None = None, *, quick: bool = False,
                 max_samples: int | None = None, threshold: float = 0.5, quiet: bool = False,
                 exclude_groups: list[str] | None = None) -> dict[str, Any]:
    """Train one model of ``config`` and write its bundle into ``out``.

    With the dataset's official split the model trains on ``train``, stops early on ``val`` and is
    scored on ``test`` (the figures go into the manifest's ``metrics``). Without one it trains on all
    samples with an inner, patient-grouped validation split for early stopping, and no metrics are
    recorded (nothing is left over to score honestly). ``exclude_groups`` (patient ids) are left out
    of training entirely, e.g. to test the bundle on a patient it has never seen; they are listed in
    the manifest.

    Returns
    -------
    dict
        The bundle manifest.
    """
    from medlens.bundle import load_bundle, save_bundle
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.splits import inner_validation_split
    from medlens.models.registry import build
    from medlens.study import _model_params, _plain, add_gabor_features, load_dataset, seed_everything, subsample

    entry = choose_model(config, model_id)
    seed_everything(config.seed)
    data = load_dataset(config)
    if exclude_groups:
        data = _without_groups(data, exclude_groups)
    if max_samples:
        data = subsample(data, max_samples, config.seed)
    if entry.name != "cnn":
        data = add_gabor_features(data, config)
    params = _model_params(entry, quick, config.seed)
    if quiet and entry.name == "cnn":
        params["progress"] = False
    model = build(entry.name, **params)
    metrics: dict[str, Any] = {}
    if data.split is not None and {"train", "val", "test"} <= set(np.unique(data.split)):
        parts = {name: np.flatnonzero(data.split == name) for name in ("train", "val", "test")}
        model.fit(data.subset(parts["train"]), data.subset(parts["val"]))
        test = data.subset(parts["test"])
        scores = classification_metrics(test.labels, model.predict_proba(test), labels=data.meta.get("labels"),
                                        threshold=threshold)
        metrics = {"split": "official test", "n": int(len(test)),
                   **{k: _plain(scores[k]) for k in ("auc", "accuracy", "sensitivity", "specificity")
                      if k in scores}}
    else:
        inner, held = inner_validation_split(data.labels, data.groups, fraction=config.protocol.inner_val_fraction,
                                             seed=config.seed)
        model.fit(data.subset(inner), data.subset(held))
    meta = {**data.meta, "excluded_groups": sorted(exclude_groups or [])}
    save_bundle(model, config, meta, out, metrics=metrics, threshold=threshold, model_id=entry.key,
                image_shape=tuple(data.images.shape[1:]))
    return load_bundle(out).manifest


def _without_groups(data, groups: list[str]):
    """``data`` less the samples of ``groups``; every group must exist (a typo would silently train on it)."""
    if data.groups is None:
        raise ConfigError("--exclude-group: this dataset has no patient groups")
    missing = sorted(set(groups) - set(np.unique(data.groups).tolist()))
    if missing:
        raise ConfigError(f"--exclude-group: no samples of {', '.join(missing)} in the dataset")
    return data.subset(np.flatnonzero(~np.isin(data.groups, groups)))


@reports_errors
def train(
    config: Path = typer.Argument(..., help="Study YAML file (data preparation and model parameters)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write."),
    model: str = typer.Option(None, "--model", "-m", help="Model id from the config. Default: the first cnn."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0,
                                    help="Decision threshold on the positive-class probability."),
    quick: bool = typer.Option(False, "--quick", help="Use the model's quick_params (short training)."),
    max_samples: int = typer.Option(None, "--max-samples", min=10, help="Train on a stratified subsample."),
    exclude_group: list[str] = typer.Option(None, "--exclude-group",
                                            help="Patient id to leave out of training (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train one model of a study config on its data and write a bundle for `medlens predict`.

    The bundle folder holds weights.pt (the network's weights), state.json (input scaling) and
    manifest.json (medlens version, model and parameters, the study config, label names, threshold,
    dataset md5, package versions, test metrics where the data has an official split, and the sha256
    of every file). Example: `medlens train configs/breastmnist_official.yaml --out bundles/breast`.
    """
    from medlens.config import load_config

    quiet = quiet_requested(quiet)
    study_config = load_config(config)
    manifest = train_bundle(study_config, out, model, quick=quick, max_samples=max_samples, threshold=threshold,
                            quiet=quiet, exclude_groups=exclude_group)
    metrics = manifest["metrics"]
    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"wrote bundle {out} (model {manifest['model']['id']}){': ' + summary if summary else ''}")
