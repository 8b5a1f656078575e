"""Synthetic images: conditional GANs (:mod:`~medlens.synth.gan`), their quality (FID/KID with an
in-domain extractor, copy check; :mod:`~medlens.synth.quality`) and dataset augmentation
(:mod:`~medlens.synth.augment`)."""

from medlens.synth.augment import augment_with_generator
from medlens.synth.gan import GAN, GANConfig, save_grid

__all__ = ["GAN", "GANConfig", "augment_with_generator", "save_grid"]
