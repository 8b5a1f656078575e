"""``medlens features extract | probe``: image features to a table, and how well probes classify them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from medlens.commands._common import console, reports_errors
from medlens.errors import ConfigError
from medlens.files import claim_output

app = typer.Typer(help="Extract features (Gabor, CNN maps, autoencoder codes, transfer CNN) and probe them.",
                  no_args_is_help=True)


@app.command("extract")
@reports_errors
def extract(
    archive: Path = typer.Argument(..., help="A MedMNIST .npz archive (e.g. breastmnist.npz)."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature table to write (.npz)."),
    method: str = typer.Option("gabor", help="gabor | cnn | transfer | ae"),
    pretrain: Path = typer.Option(None, help="Source MedMNIST .npz for transfer/ae (train split)."),
    fit_split: str = typer.Option("train", help="Split the extractor is fitted on (labels used by cnn only)."),
    splits: str = typer.Option("val,test", help="Comma-separated splits whose features are written."),
    epochs: int = typer.Option(10, min=1, help="Training epochs of the cnn/transfer/ae networks."),
    seed: int = typer.Option(0),
) -> None:
    """Fit an extractor on one split and write features, labels and ids of the others to an npz.

    Fitting on a split that is not written keeps labels of the probed rows out of supervised
    extractors (``cnn``); ``gabor`` learns nothing and ``transfer``/``ae`` no target labels.
    --out is checked before any work (never an input, a folder or a device) and locked while it is written."""
    with claim_output(out, kind="file", inputs=[archive] + ([pretrain] if pretrain else [])):
        _extract(archive, out, method, pretrain, fit_split, splits, epochs, seed)


def _extract(archive: Path, out: Path, method: str, pretrain: Path | None, fit_split: str, splits: str,
             epochs: int, seed: int) -> None:
    from medlens import __version__
    from medlens.data.builders import medmnist
    from medlens.data.dataset import ArrayDataset
    from medlens.features.extractors import EXTRACTORS, make_extractor
    from medlens.features.store import save_features

    data = medmnist(archive)
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    unknown = sorted(set(wanted + [fit_split]) - set(np.unique(data.split)))
    if unknown:
        raise ConfigError(f"{archive}: unknown split(s) {unknown}; the archive has train, val and test")
    params: dict = {}
    _, trains, takes_pretrain = EXTRACTORS.get(method, (None, False, None))
    if trains:
        params["epochs"] = epochs
        params["seed"] = seed
    if takes_pretrain and pretrain is not None:
        source = medmnist(pretrain)
        keep = source.split == "train"
        params["pretrain"] = (ArrayDataset(images=source.images[keep], labels=source.labels[keep])
                              if takes_pretrain == "dataset" else source.images[keep])
    extractor = make_extractor(method, **params)
    fit = data.split == fit_split
    extractor.fit(data.images[fit], data.labels[fit])
    rows = np.isin(data.split, wanted)
    features = extractor.transform(data.images[rows])
    meta = {"method": extractor.name, "dataset": data.meta.get("dataset"), "source": str(archive),
            "source_md5": data.meta.get("source_md5"), "fit_split": fit_split, "splits": wanted,
            "pretrain": None if pretrain is None else str(pretrain), "labels": data.meta.get("labels"),
            "seed": seed, "medlens_version": __version__}
    save_features(out, features, data.labels[rows], data.ids[rows], extractor.feature_names, meta)
    console.print(f"wrote {features.shape[0]}×{features.shape[1]} {extractor.name} features to {out}")


@app.command("probe")
@reports_errors
def probe(
    table: Path = typer.Argument(..., help="Feature table from `medlens features extract`."),
    probes: str = typer.Option("logistic,svm", help="Comma-separated probes: logistic, svm."),
    folds: int = typer.Option(5, "--folds", "-k", min=2),
    seed: int = typer.Option(0),
) -> None:
    """Score the features with logistic-regression and SVM probes under stratified k-fold CV."""
    from medlens.features.probe import probe_cv
    from medlens.features.store import load_features

    data = load_features(table)
    names = data["meta"].get("labels")
    typer.echo("| probe | AUC (95% CI) | accuracy (95% CI) |\n|---|---|---|")
    for name in [p.strip() for p in probes.split(",") if p.strip()]:
        result = probe_cv(data["features"], data["labels"], probe=name, k=folds, seed=seed, names=names)
        auc, acc = result["summary"]["auc"], result["summary"]["accuracy"]
        typer.echo(f"| {name} | {auc['mean']:.3f} ({auc['ci95'][0]:.3f}–{auc['ci95'][1]:.3f}) | "
                   f"{acc['mean']:.3f} ({acc['ci95'][0]:.3f}–{acc['ci95'][1]:.3f}) |")
