"""Training a segmentation network from a plan: patch sampling, augmentation, the loop, the bundle.

Patches of ``plan['patch_size']`` are drawn from the prepared (normalised, resampled) cases; with
probability ``foreground_oversample`` a patch is centred on a random foreground voxel (nnU-Net's
oversampling, so that small structures such as nodules are seen). Augmentation: random mirroring on
``flip_axes``, optionally random quarter turns (``rot90``) and elastic deformation (``elastic``,
:func:`elastic_deform`), and a random intensity scale ``1 ± s`` and shift ``± t`` (in z-score units).
The loop is :class:`medlens.engine.trainer.Trainer` (AdamW, cosine learning-rate decay, bfloat16
autocast where it pays, best validation epoch kept).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, TensorDataset

from medlens.engine.trainer import History, Trainer, TrainConfig
from medlens.errors import ConfigError, UnreadableFileError
from medlens.files import write_atomically, write_text_atomically
from medlens.segment.datasets import SegCase
from medlens.segment.evaluate import mean_dice
from medlens.segment.losses import build_loss
from medlens.segment.networks import build_network
from medlens.segment.plan import load_plan, pad_to, pad_value, prepare_case, save_plan  # noqa: F401 (pad_to: re-export)


class PatchDataset(Dataset):
    """Random training patches ``(x (C, *patch), y (1, *patch))`` from prepared arrays.

    The ``n``-th draw of item ``i`` uses the generator seeded by ``(seed, i, n)``: each epoch sees new
    patches and a run is reproducible.
    """

    def __init__(self, arrays: list[tuple[np.ndarray, np.ndarray]], plan: dict[str, Any], length: int,
                 seed: int = 0):
        self.patch = tuple(int(p) for p in plan["patch_size"])
        self.arrays = [(pad_to(x, self.patch, pad_value(x)), pad_to(y, self.patch)) for x, y in arrays]
        self.fg = [np.argwhere(y[0] > 0) for _, y in self.arrays]
        self.aug = plan["augmentations"]
        self.oversample = float(plan["training"]["foreground_oversample"])
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
        flips = [a + 1 for a in self.aug.get("flip_axes", []) if rng.random() < self.aug.get("flip_prob", 0.5)]
        if flips:
            xp, yp = np.flip(xp, flips), np.flip(yp, flips)
        if self.aug.get("rot90") and xp.shape[-1] == xp.shape[-2]:
            turns = int(rng.integers(4))
            xp, yp = np.rot90(xp, turns, axes=(-2, -1)), np.rot90(yp, turns, axes=(-2, -1))
        elastic = self.aug.get("elastic")
        if elastic and rng.random() < float(elastic.get("prob", 1.0)):
            xp, yp = elastic_deform(xp, yp, float(elastic["sigma"]), int(elastic.get("grid", 3)), rng)
        xp = xp * (1 + rng.uniform(-1, 1) * self.aug.get("intensity_scale", 0.0)) \
            + rng.uniform(-1, 1) * self.aug.get("intensity_shift", 0.0)
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


def build_model(plan: dict[str, Any]) -> torch.nn.Module:
    """The plan's network, untrained."""
    net = plan["network"]
    return build_network(net["name"], plan["fingerprint"]["dims"], plan["fingerprint"]["channels"],
                         plan["dataset"]["n_classes"], net.get("channels", 16), net["depth"])


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


def train_segmenter(plan: dict[str, Any], cases: list[SegCase], val_cases: list[SegCase] | None = None,
                    progress: bool = False, num_workers: int = 0) -> tuple[torch.nn.Module, History]:
    """Train the plan's network on ``cases`` (with masks) with :class:`medlens.engine.trainer.Trainer`.

    An epoch is ``steps_per_epoch`` batches of random patches. With ``val_cases`` the model is scored
    after each epoch (foreground Dice on one foreground-centred patch per case) and the best epoch's
    weights are kept. Returns the model (eval mode) and the trainer's history; ``history.seconds``
    is the training wall time.
    """
    if not cases or any(c.mask is None for c in cases):
        raise ConfigError("train: every training case needs a mask")
    tr = plan["training"]
    seed = int(tr.get("seed", 0))
    batch = int(plan["batch_size"])
    patch = tuple(int(p) for p in plan["patch_size"])
    train_data = PatchDataset([prepare_case(plan, c) for c in cases], plan, int(tr["steps_per_epoch"]) * batch, seed)
    val_data = None
    if val_cases:
        pairs = [centre_patch(*prepare_case(plan, c), patch) for c in val_cases]
        val_data = TensorDataset(torch.from_numpy(np.stack([p[0] for p in pairs]).astype(np.float32)),
                                 torch.from_numpy(np.stack([p[1] for p in pairs])))
    config = TrainConfig(epochs=int(tr["epochs"]), batch_size=batch, lr=float(tr["lr"]),
                         weight_decay=float(tr["weight_decay"]), optimizer="adamw", scheduler="cosine",
                         patience=tr.get("patience"), max_steps=tr.get("max_steps"), amp=tr.get("amp", "auto"),
                         seed=seed, progress=progress, num_workers=num_workers)
    torch.manual_seed(seed)
    model = build_model(plan)
    trainer = Trainer(model, build_loss(plan["loss"]), config, score=dice_score(plan["dataset"]["n_classes"]))
    history = trainer.fit(train_data, val_data)
    return model.eval(), history


def save_bundle(model: torch.nn.Module, plan: dict[str, Any], out_dir: str | Path,
                history: History | None = None) -> Path:
    """Write ``plan.json``, ``model.pt`` (state dict) and ``history.json`` into ``out_dir``."""
    out = Path(out_dir)
    save_plan({k: v for k, v in plan.items() if not k.startswith("_")}, out / "plan.json")
    write_atomically(out / "model.pt", lambda tmp: torch.save(model.state_dict(), tmp))
    if history is not None:
        write_text_atomically(out / "history.json", json.dumps(asdict(history), indent=2))
    return out


def load_bundle(model_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model (eval mode) and plan from a folder written by :func:`save_bundle`."""
    model_dir = Path(model_dir)
    plan = load_plan(model_dir / "plan.json")
    weights = model_dir / "model.pt"
    if not weights.is_file():
        raise UnreadableFileError(weights, "no trained weights; run `medlens segment train` first")
    model = build_model(plan)
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise ConfigError(f"{weights}: weights do not fit the plan's network ({exc})") from exc
    return model.eval(), plan


# What a model reads from its plan: ensemble members must agree on all of it (training may differ).
MEMBER_PLAN_KEYS = ("dataset", "fingerprint", "normalization", "target_spacing", "patch_size", "network")


def load_ensemble(model_dirs: list[str | Path]) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """The models of several bundles of one plan (cross-validation folds or training seeds) and the first
    bundle's plan, whose ``inference`` settings apply to the ensemble.

    Raises :class:`medlens.errors.ConfigError` naming the bundle whose plan differs from the first in a
    key the network depends on (:data:`MEMBER_PLAN_KEYS`).
    """
    if not model_dirs:
        raise ConfigError("ensemble: no model folders given")
    models, plans = zip(*(load_bundle(d) for d in model_dirs))
    for directory, other in zip(model_dirs[1:], plans[1:]):
        differing = [k for k in MEMBER_PLAN_KEYS if other.get(k) != plans[0].get(k)]
        if differing:
            raise ConfigError(f"{directory}: its plan differs from {model_dirs[0]}'s in {', '.join(differing)}; "
                              "an ensemble needs models trained from one plan")
    return list(models), plans[0]
