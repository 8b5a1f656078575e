"""``medlens train``: fit one model of a study config on its data and write a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.files import claim_output


@reports_errors
def train(
    config: Path = typer.Argument(..., help="Study YAML file (data preparation and model parameters)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write."),
    model: str = typer.Option(None, "--model", "-m", help="Model id from the config (any model family). "
                                                          "Default: the first image network (e.g. cnn)."),
    threshold: str = typer.Option("0.5", "--threshold",
                                  help="Decision threshold on the positive-class probability: a number, 'youden' "
                                       "or 'sensitivity:0.95' (chosen on the validation predictions)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Fit a temperature on the validation predictions "
                                                              "and apply it in predict."),
    quick: bool = typer.Option(False, "--quick", help="Use the model's quick_params (short training)."),
    max_samples: int = typer.Option(None, "--max-samples", min=10, help="Train on a stratified subsample."),
    exclude_group: list[str] = typer.Option(None, "--exclude-group",
                                            help="Patient id to leave out of training (repeatable)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also export the model to model.onnx (image networks such "
                                                    "as cnn; needs medlens[onnx]), checked against PyTorch on "
                                                    "the validation images."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers", help="Record absolute paths of the data in "
                                          "the bundle's manifest (default: not)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an earlier run into --out that was killed, from "
                                "its last epoch (the result equals an uninterrupted run's)."),
) -> None:
    """Train one model of a study config on its data and write a bundle for `medlens predict`.

    Every model family of the registry can be bundled (bp, svm, logistic, twostage, cnn, cnn_lstm,
    cnn_view, ensemble). The bundle folder holds weights.safetensors (the fitted arrays), estimators/*.skops
    (fitted scikit-learn objects, read back with a list of trusted types), model_card.md, manifest.json
    (medlens version, model, parameters and capabilities, the feature steps, the study config, label names,
    threshold and how it was chosen, temperature, dataset md5, the training images' profile, package
    versions, validation figures, test metrics where the data has an official split) and checksums.sha256
    (the sha256 of every file, the manifest included). A bundle already at --out is replaced whole, only once
    the new one is complete. Examples: `medlens train configs/breastmnist_official.yaml --out bundles/breast`,
    `medlens train configs/lidc_nodules.yaml --model svm --out bundles/nodules-svm`.
    """
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle

    quiet = quiet_requested(quiet)
    study_config = load_config(config)
    with claim_output(out, kind="folder", inputs=[config]):  # checked before any data is read or model trained
        manifest = train_bundle(study_config, out, model, quick=quick, max_samples=max_samples, threshold=threshold,
                                calibrate=calibrate, quiet=quiet, exclude_groups=exclude_group, onnx=onnx,
                                resume=resume, keep_identifiers=keep_identifiers)
    metrics = manifest["metrics"]
    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"wrote bundle {out} (model {manifest['model']['id']}){': ' + summary if summary else ''}")
