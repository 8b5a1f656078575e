"""``medlens denoise train | apply``: denoising autoencoders for CT, X-ray and ultrasound images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.errors import ConfigError, GeometryError
from medlens.files import claim_output

app = typer.Typer(help="Train a denoising autoencoder on clean images and apply it to DICOM, NIfTI or PNG files.",
                  no_args_is_help=True)


@app.command("train")
@reports_errors
def train(
    inputs: list[Path] = typer.Argument(..., help="Clean training images: DICOM series folders, NIfTI files, "
                                        "pictures, or a MedMNIST .npz (its train split)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (manifest.json + weights.safetensors)."),
    modality: str = typer.Option(None, help="Modality code (CT, DX, US, ...) when the files do not record it."),
    noise: str = typer.Option(None, help="gaussian | poisson_ct | speckle. Default: by modality "
                              "(CT → poisson_ct, US → speckle, else gaussian)."),
    sigma: float = typer.Option(None, help="Gaussian σ in image units. Default: 10% of the window."),
    dose: float = typer.Option(0.25, help="poisson_ct dose factor (fraction of full dose)."),
    looks: float = typer.Option(4.0, help="speckle looks L (variance 1/L)."),
    dims: int = typer.Option(2, "--dims", help="2 (slices) or 3 (volumes)."),
    patch: int = typer.Option(None, help="Train on random patches of this side (needed for mixed sizes)."),
    samples_per_epoch: int = typer.Option(None, help="Patches per epoch (default: one per image)."),
    loss: str = typer.Option("mse", help="mse | mse+ssim"),
    epochs: int = typer.Option(20, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a convolutional denoising autoencoder: noise is added to the clean inputs on the fly
    (seeded) and the network learns to remove it (MSE, optionally + SSIM loss)."""
    with claim_output(out, kind="folder", inputs=inputs):
        _train(inputs, out, modality, noise, sigma, dose, looks, dims, patch, samples_per_epoch, loss, epochs,
               batch_size, lr, seed, quiet)


def _train(inputs, out, modality, noise, sigma, dose, looks, dims, patch, samples_per_epoch, loss, epochs,
           batch_size, lr, seed, quiet) -> None:
    from medlens.enhance.autoencoder import Denoiser
    from medlens.enhance.noise import MODALITY_NOISE
    from medlens.enhance.sources import default_window, load_images

    images, found = load_images(inputs, spatial_dims=dims)
    modality = (modality or found).upper()
    window = default_window(images, modality)
    if len({im.shape for im in images}) > 1 and patch is None:
        raise GeometryError(f"{inputs[0]}: training images have different shapes "
                            f"{sorted({im.shape for im in images})[:3]}; give --patch")
    name = noise or MODALITY_NOISE.get(modality, "gaussian")
    params = {"gaussian": {"sigma": sigma if sigma is not None else 0.1 * (window[1] - window[0])},
              "poisson_ct": {"dose": dose}, "speckle": {"looks": looks}}
    if name not in params:
        raise ConfigError(f"--noise: unknown {name!r}; use gaussian, poisson_ct or speckle")
    model = Denoiser(spatial_dims=dims, in_channels=images[0].shape[0], modality=modality, window=window,
                     noise=name, noise_params=params[name], patch=patch, samples_per_epoch=samples_per_epoch,
                     loss=loss, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                     progress=not quiet_requested(quiet))
    stack = np.stack(images) if patch is None else _padded_stack(images)
    history = model.fit(stack)
    model.save(out)
    typer.echo(f"trained on {len(images)} {modality} images ({name} noise), final loss "
               f"{history.train_loss[-1]:.5f}; wrote {out}")


def _padded_stack(images: list[np.ndarray]) -> np.ndarray:
    """Images of different sizes, edge-padded to a common size (patches are cut from them)."""
    shape = np.max([im.shape for im in images], axis=0)
    return np.stack([np.pad(im, [(0, int(t) - s) for s, t in zip(im.shape, shape)], mode="edge") for im in images])


@app.command("apply")
@reports_errors
def apply(
    model_dir: Path = typer.Argument(..., help="Model folder written by `medlens denoise train`."),
    inputs: list[Path] = typer.Argument(..., help="DICOM files or series folders, NIfTI files, pictures."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (never an input's folder)."),
    modality: str = typer.Option(None, help="Modality of NIfTI/picture inputs, checked against the model."),
) -> None:
    """Denoise files. DICOM output is a new derived series (new series and instance UIDs, same patient and
    study, HU kept through the rescale tags); inputs are never overwritten."""
    from medlens.enhance.apply import denoise_paths
    from medlens.enhance.autoencoder import Denoiser

    with claim_output(out, kind="folder", inputs=[model_dir, *inputs]):
        model = Denoiser.load(model_dir)
        written = denoise_paths(model, inputs, out, modality=modality)
    console.print(f"wrote {len(written)} file(s) to {out}")
