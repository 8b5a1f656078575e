"""``medlens synth``: train a conditional GAN on a MedMNIST-style archive and sample labelled images.

A training config is a small YAML file::

    data: /work/shared/data/medmnist/breastmnist.npz   # a MedMNIST .npz (train_images, train_labels, ...)
    split: train                                        # which split to learn from
    fraction: 1.0                                       # stratified share of it (seed: gan.seed)
    out: runs/gan_breastmnist                           # checkpoint folder (--out overrides)
    gan:                                                # medlens.synth.gan.GANConfig fields
      kind: wgan-gp                                     # or dcgan
      image_size: 28                                    # or 64
      steps: 4000
      seed: 0
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.config import read_yaml, reject_non_finite
from medlens.errors import ConfigError, MissingPathError
from medlens.files import claim_output, resume_folder, write_atomically

app = typer.Typer(help="Conditional GANs (DCGAN, WGAN-GP): train on labelled 2D images, sample by label.",
                  no_args_is_help=True)


class SynthConfig(BaseModel):
    """``medlens synth train`` configuration."""

    model_config = ConfigDict(extra="forbid")
    data: Path
    split: str = "train"
    fraction: float = Field(1.0, gt=0, le=1)
    out: Path | None = None
    gan: dict[str, Any] = Field(default_factory=dict)


def load_config(path: Path) -> SynthConfig:
    """The validated :class:`SynthConfig` in YAML file ``path``."""
    if not path.is_file():
        raise MissingPathError(path, "synth config file")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a synth config must be a YAML mapping, got {type(raw).__name__}")
    reject_non_finite(raw, str(path))
    try:
        return SynthConfig(**raw)
    except (ValidationError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def train_from_config(config: SynthConfig, out: Path | None = None, progress: bool = True,
                      resume: bool = False) -> Path:
    """Train the GAN that ``config`` describes; returns its bundle folder (weights, manifest, samples.png).

    The training state is kept beside the folder every 100 steps (:func:`medlens.files.resume_folder`); with
    ``resume`` a killed training continues from it.
    """
    from sklearn.model_selection import train_test_split

    from medlens.data.readers.medmnist import load_medmnist
    from medlens.report.provenance import shown_path
    from medlens.synth.gan import GAN, GANConfig, save_grid

    folder = out or config.out
    if folder is None:
        raise ConfigError("out: no output folder; set `out:` in the config or pass --out")
    images, labels = load_medmnist(config.data, config.split)
    labels = labels.reshape(len(labels), -1)[:, 0].astype(np.int64)
    images = images.astype(np.float32) / 255.0  # MedMNIST images are uint8
    if images.ndim != 4:
        raise ConfigError(f"{config.data}: synth trains on 2D images (N, C, H, W); got shape {images.shape}")
    gan_params = {"channels": images.shape[1], "n_classes": int(labels.max()) + 1, **config.gan}
    try:
        gan_config = GANConfig(**gan_params)
    except TypeError as exc:
        raise ConfigError(f"gan: {exc}") from exc
    if config.fraction < 1:
        keep, _ = train_test_split(np.arange(len(labels)), train_size=config.fraction, stratify=labels,
                                   random_state=gan_config.seed)
        images, labels = images[keep], labels[keep]
    progress_folder = resume_folder(folder, resume)
    gan = GAN(gan_config)
    gan.fit(images, labels, progress=progress, checkpoint=progress_folder / "gan.pt")
    folder = gan.save(folder, extra={"data": shown_path(config.data), "split": config.split, "fraction": config.fraction,
                                     "n_train": int(len(labels))})
    save_grid(gan.sample(8 * gan_config.n_classes, seed=0)[0], folder / "samples.png", columns=8)
    shutil.rmtree(progress_folder, ignore_errors=True)
    return folder


@app.command("train")
@reports_errors
def train(config: Path = typer.Argument(..., help="YAML training config (keys listed above)."),
          out: Path | None = typer.Option(None, "--out", help="Checkpoint folder (overrides `out:`)."),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
          resume: bool = typer.Option(False, "--resume", help="Continue an earlier training into the same folder "
                                      "that was killed (from its last 100-step checkpoint).")) -> None:
    """Train a conditional DCGAN or WGAN-GP; writes weights, manifest.json and a samples.png grid.

    CONFIG keys: `data` (MedMNIST .npz), `split` (train), `fraction` (stratified share, 1.0), `out`
    (folder), `gan` (kind: dcgan | wgan-gp, image_size: 28 | 64, steps, batch_size, width, latent_dim,
    lr, n_critic, gp_weight, real_label, seed). The defaults (wgan-gp, width 16, 4000 steps) are the
    setting that augmented BreastMNIST best in benchmarks/results/sequence_synth.md.
    """
    settings = load_config(config)
    target = out or settings.out
    if target is None:
        raise ConfigError(f"{config}: out: no output folder; set `out:` in the config or pass --out")
    with claim_output(target, kind="folder", inputs=[config, settings.data]):
        folder = train_from_config(settings, target, progress=not quiet_requested(quiet), resume=resume)
    console.print(f"GAN written to {folder}")


@app.command("sample")
@reports_errors
def sample(model: Path = typer.Argument(..., help="GAN folder written by `medlens synth train`."),
           n: int = typer.Option(16, "--n", min=1, help="Number of images."),
           label: int | None = typer.Option(None, "--label", help="Class index; default: classes in turn."),
           out: Path = typer.Option(..., "--out", help="Output folder."),
           fmt: str = typer.Option("png", "--format", help="png (one file per image) or npz (images + labels)."),
           seed: int = typer.Option(0, "--seed", help="Noise seed; same seed, same images.")) -> None:
    """Draw labelled images from a trained GAN: PNG files `<i>_<label>.png` or one `samples.npz`."""
    from medlens.data.readers.pictures import write_png
    from medlens.synth.gan import GAN

    if fmt not in ("png", "npz"):
        raise ConfigError(f"--format: unknown {fmt!r}; use png or npz")
    with claim_output(out, kind="folder", inputs=[model]):
        gan = GAN.load(model)
        images, labels = gan.sample(n, label=label, seed=seed)
        if fmt == "npz":
            write_atomically(out / "samples.npz", lambda tmp: np.savez_compressed(
                tmp, images=images, labels=labels, label_names=np.array(gan.labels)))
        else:
            for i, (image, y) in enumerate(zip(images, labels)):
                write_png((np.clip(image[0], 0, 1) * 255).round().astype(np.uint8),
                          out / f"{i:05d}_{gan.labels[y]}.png")
    console.print(f"{n} image(s) written to {out}")
