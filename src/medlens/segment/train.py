"""Training a segmentation network from a plan: patch sampling, augmentation, the loop.

Patches of ``plan.patch_size`` are drawn from the prepared (normalised, resampled) cases; with
probability ``foreground_oversample`` a patch is centred on a random foreground voxel (nnU-Net's
oversampling, so that small structures such as nodules are seen). Augmentation: random mirroring on
``flip_axes``, optionally random quarter turns (``rot90``) and elastic deformation (``elastic``,
:func:`elastic_deform`), and a random intensity scale ``1 ± s`` and shift ``± t`` (in z-score units).
The loop is :class:`medlens.engine.trainer.Trainer` (AdamW, cosine learning-rate decay, bfloat16
autocast where it pays, best validation epoch kept).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, TensorDataset

from medlens.engine.trainer import History, Trainer, TrainConfig
from medlens.errors import ConfigError
from medlens.segment.bundle import build_model
from medlens.segment.datasets import SegCase
from medlens.segment.evaluate import mean_dice
from medlens.segment.losses import build_loss
from medlens.segment.plan import SegmentationPlan
from medlens.segment.prepare import pad_to, pad_value, prepare_case


class PatchDataset(Dataset):
    """Random training patches ``(x (C, *patch), y (1, *patch))`` from prepared arrays.

    The ``n``-th draw of item ``i`` uses the generator seeded by ``(seed, i, n)``: each epoch sees new
    patches and a run is reproducible.
    """

    def __init__(self, arrays: list[tuple[np.ndarray, np.ndarray]], plan: SegmentationPlan, length: int,
                 seed: int = 0):
        self.patch = plan.patch
        self.arrays = [(pad_to(x, self.patch, pad_value(x)), pad_to(y, self.patch)) for x, y in arrays]
        self.fg = [np.argwhere(y[0] > 0) for _, y in self.arrays]
        self.aug = plan.augmentations
        self.oversample = float(plan.training.foreground_oversample)
        self.length, self.seed = length, seed
        self.draws = np.zeros(length, dtype=np.int64)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, i, int(self.draws[i])))
        self.draws[i] += 1
        k = int(rng.integers(len(self.arrays)))
        x, y = self.arrays[k]
        shape = np.array(x.shape[1:])
        size = np.array(self.patch)
        if len(self.fg[k]) and rng.random() < self.oversample:
            centre = self.fg[k][rng.integers(len(self.fg[k]))]
            start = np.clip(centre - size // 2, 0, shape - size)
        else:
            start = np.array([rng.integers(0, n - s + 1) for n, s in zip(shape, size)])
        sl = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, size))
        xp, yp = x[sl], y[sl]
        flips = [a + 1 for a in self.aug.flip_axes if rng.random() < self.aug.flip_prob]
        if flips:
            xp, yp = np.flip(xp, flips), np.flip(yp, flips)
        if self.aug.rot90 and xp.shape[-1] == xp.shape[-2]:
            turns = int(rng.integers(4))
            xp, yp = np.rot90(xp, turns, axes=(-2, -1)), np.rot90(yp, turns, axes=(-2, -1))
        elastic = self.aug.elastic
        if elastic and rng.random() < elastic.prob:
            xp, yp = elastic_deform(xp, yp, elastic.sigma, elastic.grid, rng)
        xp = xp * (1 + rng.uniform(-1, 1) * self.aug.intensity_scale) \
            + rng.uniform(-1, 1) * self.aug.intensity_shift
        return torch.from_numpy(np.ascontiguousarray(xp, dtype=np.float32)), \
            torch.from_numpy(np.ascontiguousarray(yp))


def elastic_deform(x: np.ndarray, y: np.ndarray, sigma: float, grid: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random elastic deformation of an image ``(C, *S)`` and its label map ``(1, *S)``.

    As in the U-Net paper (Ronneberger et al., MICCAI 2015, §3.1): displacement vectors drawn from
    N(0, σ²) pixels on a coarse ``grid`` × ... grid, upsampled to per-pixel displacements by cubic
    interpolation; the image is resampled linearly, the labels by nearest neighbour (no new classes),
    edges replicated.
    """
    shape = x.shape[1:]
    coarse = rng.normal(0.0, sigma, size=(len(shape),) + (grid,) * len(shape))
    zoom = [s / grid for s in shape]
    field = np.stack([ndimage.zoom(c, zoom, order=3)[tuple(slice(0, s) for s in shape)] for c in coarse])
    coords = np.indices(shape, dtype=np.float32) + field.astype(np.float32)
    x_out = np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in x])
    y_out = np.stack([ndimage.map_coordinates(c, coords, order=0, mode="nearest") for c in y])
    return x_out.astype(x.dtype, copy=False), y_out.astype(y.dtype, copy=False)


def centre_patch(x: np.ndarray, y: np.ndarray, patch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The ``patch``-sized window of a prepared case centred on its foreground (or its middle)."""
    x, y = pad_to(x, patch, pad_value(x)), pad_to(y, patch)
    fg = np.argwhere(y[0] > 0)
    centre = fg.mean(axis=0).astype(int) if len(fg) else np.array(y.shape[1:]) // 2
    start = np.clip(centre - np.array(patch) // 2, 0, np.array(y.shape[1:]) - np.array(patch))
    sl = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, patch))
    return x[sl], y[sl]


def dice_score(n_classes: int):
    """``score(logits, targets)``: foreground Dice per patch, averaged (for epoch selection)."""

    def score(logits: torch.Tensor, targets: torch.Tensor) -> float:
        pred = logits.argmax(dim=1).numpy()
        return float(np.mean([mean_dice(p, t[0].numpy(), n_classes) for p, t in zip(pred, targets)]))

    return score


def train_segmenter(plan: SegmentationPlan, cases: list[SegCase], val_cases: list[SegCase] | None = None,
                    progress: bool = False, num_workers: int = 0) -> tuple[torch.nn.Module, History]:
    """Train the plan's network on ``cases`` (with masks) with :class:`medlens.engine.trainer.Trainer`.

    An epoch is ``steps_per_epoch`` batches of random patches. With ``val_cases`` the model is scored
    after each epoch (foreground Dice on one foreground-centred patch per case) and the best epoch's
    weights are kept. Returns the model (eval mode) and the trainer's history; ``history.seconds``
    is the training wall time.
    """
    if not cases or any(c.mask is None for c in cases):
        raise ConfigError("train: every training case needs a mask")
    tr = plan.training
    seed, batch, patch = tr.seed, plan.batch_size, plan.patch
    train_data = PatchDataset([prepare_case(plan, c) for c in cases], plan, tr.steps_per_epoch * batch, seed)
    val_data = None
    if val_cases:
        pairs = [centre_patch(*prepare_case(plan, c), patch) for c in val_cases]
        val_data = TensorDataset(torch.from_numpy(np.stack([p[0] for p in pairs]).astype(np.float32)),
                                 torch.from_numpy(np.stack([p[1] for p in pairs])))
    config = TrainConfig(epochs=tr.epochs, batch_size=batch, lr=tr.lr, weight_decay=tr.weight_decay,
                         optimizer="adamw", scheduler="cosine", patience=tr.patience, max_steps=tr.max_steps,
                         amp=tr.amp, seed=seed, progress=progress, num_workers=num_workers)
    torch.manual_seed(seed)
    model = build_model(plan)
    trainer = Trainer(model, build_loss(plan.loss), config, score=dice_score(plan.n_classes))
    history = trainer.fit(train_data, val_data)
    return model.eval(), history
