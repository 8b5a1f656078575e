"""``medlens train``: fit one model of a study config on its data and write a bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors


@reports_errors
def train(
    config: Path = typer.Argument(..., help="Study YAML file (data preparation and model parameters)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write."),
    model: str = typer.Option(None, "--model", "-m", help="Model id from the config. Default: the first cnn."),
    threshold: str = typer.Option("0.5", "--threshold",
                                  help="Decision threshold on the positive-class probability: a number, 'youden' "
                                       "or 'sensitivity:0.95' (chosen on the validation predictions)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Fit a temperature on the validation predictions "
                                                              "and apply it in predict."),
    quick: bool = typer.Option(False, "--quick", help="Use the model's quick_params (short training)."),
    max_samples: int = typer.Option(None, "--max-samples", min=10, help="Train on a stratified subsample."),
    exclude_group: list[str] = typer.Option(None, "--exclude-group",
                                            help="Patient id to leave out of training (repeatable)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also export the cnn to model.onnx (needs medlens[onnx]), "
                                                    "checked against PyTorch on the validation images."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train one model of a study config on its data and write a bundle for `medlens predict`.

    The bundle folder holds weights.pt (the network's weights), state.json (input scaling),
    model_card.md and manifest.json (medlens version, model and parameters, the study config, label
    names, threshold and how it was chosen, temperature, dataset md5, package versions, validation
    figures, test metrics where the data has an official split, and the sha256 of every file). Example: `medlens train configs/breastmnist_official.yaml --out bundles/breast`.
    """
    from medlens.config import load_config
    from medlens.deploy.train import train_bundle

    quiet = quiet_requested(quiet)
    study_config = load_config(config)
    manifest = train_bundle(study_config, out, model, quick=quick, max_samples=max_samples, threshold=threshold,
                            calibrate=calibrate, quiet=quiet, exclude_groups=exclude_group, onnx=onnx)
    metrics = manifest["metrics"]
    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    console.print(f"wrote bundle {out} (model {manifest['model']['id']}){': ' + summary if summary else ''}")
