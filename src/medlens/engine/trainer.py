"""One training loop for every torch model in medlens.

:class:`Trainer` fits a ``torch.nn.Module`` on a dataset of ``(input, target)`` items: seeded
shuffling (or class-balanced sampling), optional batch augmentation, Adam/AdamW/SGD, cosine or
plateau schedules, an exponential moving average of the weights, early stopping on a validation score
with the best weights kept in memory (and optionally on disk), bfloat16 autocast and channels-last
memory format where they pay, a rich progress bar, and DistributedDataParallel when started by
``torchrun`` with more than one process. A step whose gradient is not finite is skipped (under autocast,
training continues in float32; in float32 it is an error), so a diverging batch never turns the weights
into NaN. On Linux with glibc, training first sets the allocator to keep freed memory for reuse
(:mod:`medlens.engine.memory`), which saves about 40 % of a small 3D CNN's epoch time on the CPU.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler,
                              SequentialSampler, TensorDataset, WeightedRandomSampler)

from medlens.engine.checkpoint import save_checkpoint
from medlens.engine.distributed import (all_reduce_sum, broadcast_buffers, broadcast_floats,
                                        device_for_rank, init_distributed, is_distributed,
                                        is_main_process, unwrap, wrap_ddp)
from medlens.engine.memory import keep_freed_memory
from medlens.errors import ConfigError, ModelError, UnreadableFileError
from medlens.files import write_atomically
from medlens.progress import progress_disabled

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_SCHEDULERS = (None, "cosine", "plateau")
_AMP = ("auto", "bf16", "off")
_SAMPLERS = (None, "balanced")


@dataclass
class TrainConfig:
    """How :class:`Trainer` trains.

    ``amp="auto"`` turns on bfloat16 autocast for networks with convolutions (CPU and CUDA);
    ``channels_last="auto"`` stores 2D convolution networks without transposed convolutions
    channels-last (measured in ``benchmarks/speed/bench_trainer.py``; see ``benchmarks/results/models.md``).
    ``checkpoint`` names a file where rank 0 also writes the best weights as they improve.
    ``progress`` shows a rich progress bar on rank 0 unless ``MEDLENS_QUIET=1``.
    ``sampler="balanced"`` draws each epoch's training samples with replacement, sample i with
    probability ∝ 1 / n_{y_i} (:class:`torch.utils.data.WeightedRandomSampler`), so every class is drawn
    equally often in expectation; ``None`` shuffles (each sample once per epoch).
    ``ema`` (a decay β in (0, 1)) keeps an exponential moving average of the weights and buffers,
    θ̄ ← β_t θ̄ + (1 − β_t) θ after optimiser step t + 1 (θ̄ starts as the weights after the first step),
    with the warm-up β_t = min(β, 1 − (1 + t)^(−3/4)) (:func:`ema_decay`); validation, early stopping, the
    checkpoint and the weights kept at the end then use the average instead of the raw weights.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    scheduler: str | None = None
    patience: int | None = 10
    max_steps: int | None = None
    amp: str = "auto"
    channels_last: str | bool = "auto"
    grad_clip: float | None = None
    seed: int = 0
    progress: bool = True
    num_workers: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    sampler: str | None = None
    ema: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"train.optimizer: unknown {self.optimizer!r}; use one of {', '.join(_OPTIMIZERS)}")
        if self.scheduler not in _SCHEDULERS:
            raise ConfigError(f"train.scheduler: unknown {self.scheduler!r}; use None, 'cosine' or 'plateau'")
        if self.amp not in _AMP:
            raise ConfigError(f"train.amp: unknown {self.amp!r}; use 'auto', 'bf16' or 'off'")
        if self.sampler not in _SAMPLERS:
            raise ConfigError(f"train.sampler: unknown {self.sampler!r}; use None or 'balanced'")
        if self.channels_last not in ("auto", True, False):
            raise ConfigError(f"train.channels_last: {self.channels_last!r}; use 'auto', True or False")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name}: must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be positive, got {self.lr}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"train.ema: the decay must lie in (0, 1), got {self.ema}")


@dataclass
class History:
    """What happened in :meth:`Trainer.fit`.

    ``train_loss``, ``val_loss``, ``val_score`` and ``epoch_seconds`` have one entry per epoch run
    (the validation lists stay empty without a validation set); ``best_epoch`` is the 0-based epoch
    whose weights were kept, ``seconds`` the total wall time and ``steps`` the optimiser steps taken.
    ``skipped_steps`` counts batches whose gradient was not finite (no optimiser step), and
    ``autocast_off_at_step`` is the step at which bfloat16 autocast was turned off because of one.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    steps: int = 0
    skipped_steps: int = 0
    autocast_off_at_step: int | None = None


def ema_decay(beta: float, step: int) -> float:
    """The decay of the weight average's update number ``step`` (1, 2, …): β_t = min(β, 1 − (1 + t)^(−3/4)).

    The warm-up (K. Crowson's, as in diffusers' ``EMAModel`` with γ = 1, power 3/4, the setting for runs of
    fewer than about 10⁵ steps) keeps the first, nearly untrained weights from dominating the average of a
    short run: after 9 steps they weigh 0.66 in the average with a fixed β = 0.95 and 0.04 with the warm-up,
    whose decay reaches 0.95 at update 54 (step 55).
    """
    return min(beta, 1.0 - (1.0 + step) ** -0.75)


def _ema_update(beta: float):
    """An ``AveragedModel`` ``multi_avg_fn``: θ̄ ← β_t θ̄ + (1 − β_t) θ, β_t = :func:`ema_decay`."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        decay = ema_decay(beta, int(n_averaged))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - decay)
        for a, c in zip(averaged, current):  # integer buffers (BatchNorm's batch count) follow the weights
            if not a.is_floating_point():
                a.copy_(c)

    return update


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_resume_folders: list[list] = []


@contextmanager
def resumable(folder: str | Path | None) -> Iterator[None]:
    """Within the block, every :meth:`Trainer.fit` keeps a resume checkpoint in ``folder`` (``fit<k>.pt`` for
    the k-th fit of the block, in order) and, when that file is already there, continues from it.

    A checkpoint is written after every epoch and when the fit ends. It holds what the next epoch depends on:
    the weights, the optimiser, the learning-rate scheduler, the weight average, the best weights and score
    so far, the early-stopping count, the history, whether autocast is still on, and the random states
    (Python's, numpy's and torch's global generators and the sampler's own). A fit killed during an epoch
    therefore resumes at the start of that epoch and ends with the weights an uninterrupted fit would have;
    a finished fit returns its final weights at once. ``folder`` None: no checkpoints (a plain block).
    """
    if folder is None:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    _resume_folders.append([Path(folder), 0])
    try:
        yield
    finally:
        _resume_folders.pop()


def _next_resume_checkpoint() -> Path | None:
    if not _resume_folders or is_distributed():
        return None
    entry = _resume_folders[-1]
    entry[1] += 1
    return entry[0] / f"fit{entry[1] - 1}.pt"


def _random_states(sampler) -> dict:
    generator = getattr(sampler, "generator", None)
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()),
                                                   *numpy_state[2:]],
            "torch": torch.get_rng_state(), "sampler": None if generator is None else generator.get_state()}


def _restore_random_states(states: dict, sampler) -> None:
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    generator = getattr(sampler, "generator", None)
    if generator is not None and states["sampler"] is not None:
        generator.set_state(states["sampler"])


class _TensorBatches(Dataset):
    """A :class:`TensorDataset` indexed by whole batches: one gather per batch instead of a collate."""

    def __init__(self, data: TensorDataset):
        self.tensors = data.tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: list[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(index)
        return tuple(t[index] for t in self.tensors)


class Trainer:
    """Train ``module`` with ``loss``; select the epoch by ``score`` on a validation set.

    Parameters
    ----------
    module : torch.nn.Module
        The network; it is moved to the training device.
    loss : callable
        ``loss(outputs, targets) -> scalar Tensor``; outputs are cast to float32 first.
    config : TrainConfig
    score : callable, optional
        ``score(outputs, targets) -> float`` on the whole validation set, higher is better; the
        default is the negative validation loss.
    augment : callable, optional
        ``augment(inputs) -> inputs`` applied to each training batch on the device (random flips...).

    Attributes
    ----------
    device : torch.device
        ``config.device``; ``"auto"`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    autocast_dtype : torch.dtype or None
        bfloat16 when autocast is on (``amp="bf16"``, or ``"auto"`` and the network has convolutions).
    memory_format : torch.memory_format or None
        The channels-last format used for the network and its inputs, when on.
    history : History or None
        The last :meth:`fit`'s record. Validation outputs reach ``score`` as float32 CPU tensors.
    """

    def __init__(self, module: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], config: TrainConfig,
                 score: Callable[[Tensor, Tensor], float] | None = None,
                 augment: Callable[[Tensor], Tensor] | None = None):
        self.module = module
        self.loss = loss
        self.config = config
        self.score = score
        self.augment = augment
        self.device = device_for_rank(config.device)
        self.history: History | None = None
        self.autocast_dtype = self._choose_autocast()
        self.memory_format = self._choose_memory_format()
        self._placed = False

    # -- what pays on this module -------------------------------------------------------------------
    def _has(self, kinds: tuple[type, ...]) -> bool:
        return any(isinstance(m, kinds) for m in self.module.modules())

    def _choose_autocast(self) -> torch.dtype | None:
        """bfloat16 when autocast is on, else None."""
        amp = self.config.amp
        if amp == "off":
            return None
        if amp == "auto":
            if not self._has((torch.nn.modules.conv._ConvNd,)):
                return None
            if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                return None
        return torch.bfloat16

    def _choose_memory_format(self) -> torch.memory_format | None:
        """``channels_last`` (2D) or ``channels_last_3d`` (3D) when on, else None."""
        setting = self.config.channels_last
        if setting is False:
            return None
        conv2d, conv3d = self._has((torch.nn.Conv2d,)), self._has((torch.nn.Conv3d,))
        if setting == "auto" and (not conv2d or self._has((torch.nn.ConvTranspose2d,))):
            return None
        if conv2d:
            return torch.channels_last
        return torch.channels_last_3d if conv3d else None

    def _place(self) -> None:
        if self._placed:
            return
        self.module.to(self.device)
        if self.memory_format is not None:
            self.module.to(memory_format=self.memory_format)
        self._placed = True

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        fmt = self.memory_format
        if fmt is not None and x.dim() == (4 if fmt is torch.channels_last else 5):
            x = x.contiguous(memory_format=fmt)
        return x

    def _autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    # -- data ---------------------------------------------------------------------------------------
    @staticmethod
    def balanced_weights(labels) -> Tensor:
        """Per-sample weights 1 / n_{y_i} (n_c: samples of class c), so each class has total weight 1."""
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() == 0:
            raise ConfigError("train.sampler: 'balanced' needs at least one labelled training sample")
        counts = torch.bincount(labels).double()
        return (1.0 / counts[labels]).double()

    def _sample_labels(self, data: Dataset, labels) -> Tensor:
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1)
        elif isinstance(data, TensorDataset) and len(data.tensors) > 1 and data.tensors[1].dim() == 1 \
                and not data.tensors[1].is_floating_point():
            labels = data.tensors[1]
        else:
            raise ConfigError("train.sampler: 'balanced' needs class labels: pass fit(..., labels=...) or a "
                              "TensorDataset whose second tensor holds integer class indices")
        if len(labels) != len(data):
            raise ConfigError(f"train.sampler: {len(labels)} labels for {len(data)} training samples")
        return labels

    def _loader(self, data: Dataset, batch_size: int, train: bool, labels=None) -> tuple[DataLoader, object]:
        if train and self.config.sampler == "balanced":
            if is_distributed():
                raise ConfigError("train.sampler: 'balanced' is not supported under torchrun with several "
                                  "processes; use class weights or a focal loss there")
            sampler = WeightedRandomSampler(self.balanced_weights(self._sample_labels(data, labels)),
                                            num_samples=len(data), replacement=True,
                                            generator=torch.Generator().manual_seed(self.config.seed))
        elif train and is_distributed():
            sampler = DistributedSampler(data, shuffle=True, seed=self.config.seed)
        elif train:
            sampler = RandomSampler(data, generator=torch.Generator().manual_seed(self.config.seed))
        else:
            sampler = SequentialSampler(data)
        # A last batch of one sample breaks BatchNorm in training mode; drop it then.
        drop_last = train and len(sampler) % batch_size == 1 and len(sampler) > 1
        batches = BatchSampler(sampler, batch_size, drop_last)
        if isinstance(data, TensorDataset):
            loader = DataLoader(_TensorBatches(data), sampler=batches, batch_size=None,
                                num_workers=self.config.num_workers)
        else:
            loader = DataLoader(data, batch_sampler=batches, num_workers=self.config.num_workers)
        return loader, sampler

    # -- training -----------------------------------------------------------------------------------
    def _optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
        if cfg.optimizer == "sgd":
            kwargs.update(momentum=0.9, nesterov=True)
        return _OPTIMIZERS[cfg.optimizer](module.parameters(), **kwargs)

    def _scheduler(self, optimizer: torch.optim.Optimizer):
        cfg = self.config
        if cfg.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                              patience=max(1, (cfg.patience or 10) // 2))
        return None

    def _progress(self) -> Progress | None:
        if progress_disabled(not self.config.progress) or not is_main_process():
            return None
        return Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True),
                        transient=True)

    def fit(self, train: Dataset, val: Dataset | None = None, labels=None) -> History:
        """Train on ``train``; with ``val``, keep the weights of the epoch with the best score.

        ``labels`` (class index per training sample) feed ``sampler="balanced"``; without them the
        second tensor of a :class:`TensorDataset` is used when it holds integer classes.

        Early stopping ends training after ``patience`` epochs without a better validation score.
        Without ``val`` the weights of the last epoch are kept. Under ``torchrun`` every rank calls
        ``fit`` with the same data; each trains on its :class:`DistributedSampler` share, gradients are
        averaged by DDP, and all ranks end with the same weights.

        Returns
        -------
        History
        """
        cfg = self.config
        keep_freed_memory()
        init_distributed()
        seed_everything(cfg.seed)
        self._place()
        module = self.module
        model = wrap_ddp(module)
        average = (AveragedModel(module, multi_avg_fn=_ema_update(cfg.ema), use_buffers=True)
                   if cfg.ema is not None else None)
        kept = average.module if average is not None else module  # the weights validated and kept
        optimizer = self._optimizer(model)
        scheduler = self._scheduler(optimizer)
        loader, sampler = self._loader(train, cfg.batch_size, train=True, labels=labels)
        history = History()
        best_score, best_state, bad_epochs, first_epoch = -math.inf, None, 0, 0
        checkpoint = _next_resume_checkpoint()
        if checkpoint is not None and checkpoint.is_file():
            saved = self._read_resume(checkpoint)
            history = History(**saved["history"])
            _restore_random_states(saved["random"], sampler)
            if saved["finished"]:
                module.load_state_dict(saved["module"])
                self.history = history
                return history
            module.load_state_dict(saved["module"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            if average is not None:
                average.load_state_dict(saved["average"])
            best_score, best_state, bad_epochs = saved["best_score"], saved["best_state"], saved["bad_epochs"]
            self.autocast_dtype = torch.bfloat16 if saved["autocast"] else None
            first_epoch = saved["epoch"] + 1 if not saved["stop"] else cfg.epochs
        start = time.perf_counter() - history.seconds
        progress = self._progress()
        task = progress.add_task("", total=cfg.epochs, completed=first_epoch) if progress else None
        if progress:
            progress.start()
        try:
            for epoch in range(first_epoch, cfg.epochs):
                epoch_start = time.perf_counter()
                if isinstance(sampler, DistributedSampler):
                    sampler.set_epoch(epoch)
                loss_sum, count = self._train_epoch(model, loader, optimizer, history, average)
                loss_sum, count = all_reduce_sum([loss_sum, count], self.device)
                broadcast_buffers(module)
                if average is not None:  # its BatchNorm statistics average each rank's own batches
                    broadcast_buffers(average.module)
                history.train_loss.append(loss_sum / max(count, 1))
                if val is not None:
                    outputs, targets = self._outputs(val, module=kept)
                    val_loss = float(self.loss(outputs.to(self.device), targets.to(self.device)))
                    score = self.score(outputs, targets) if self.score else -val_loss
                    val_loss, score = broadcast_floats([val_loss, float(score)], self.device)
                    history.val_loss.append(val_loss)
                    history.val_score.append(score)
                else:
                    score = -history.train_loss[-1]
                history.epoch_seconds.append(time.perf_counter() - epoch_start)
                if score > best_score or val is None:
                    best_score, bad_epochs, history.best_epoch = score, 0, epoch
                    if val is not None:
                        best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
                    if cfg.checkpoint and is_main_process():
                        save_checkpoint(cfg.checkpoint, kept, optimizer, epoch, {"score": float(score)})
                else:
                    bad_epochs += 1
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(score)
                elif scheduler is not None:
                    scheduler.step()
                if progress:
                    shown = f"loss {history.train_loss[-1]:.4f}" + (f" val {score:.4f}" if val is not None else "")
                    progress.update(task, advance=1, description=shown)
                stop = ((val is not None and cfg.patience is not None and bad_epochs >= cfg.patience)
                        or (cfg.max_steps is not None and history.steps >= cfg.max_steps))
                if checkpoint is not None:
                    history.seconds = time.perf_counter() - start
                    self._write_resume(checkpoint, module, history, sampler, finished=False, epoch=epoch, stop=stop,
                                       optimizer=optimizer, scheduler=scheduler, average=average,
                                       best=(best_score, best_state, bad_epochs))
                if stop:
                    break
        finally:
            if progress:
                progress.stop()
        if best_state is None and average is not None:
            best_state = average.module.state_dict()
        if best_state is not None:
            module.load_state_dict(best_state)
        history.seconds = time.perf_counter() - start
        if checkpoint is not None:
            self._write_resume(checkpoint, module, history, sampler, finished=True)
        self.history = history
        return history

    # -- resume -------------------------------------------------------------------------------------
    def _write_resume(self, path: Path, module: torch.nn.Module, history: History, sampler, *, finished: bool,
                      epoch: int = -1, stop: bool = False, optimizer=None, scheduler=None, average=None,
                      best: tuple = (-math.inf, None, 0)) -> None:
        """The resume checkpoint of :func:`resumable` (read back with ``torch.load(weights_only=True)``)."""
        payload = {"finished": finished, "epoch": epoch, "stop": stop, "module": module.state_dict(),
                   "history": asdict(history), "random": _random_states(sampler),
                   "autocast": self.autocast_dtype is not None}
        if not finished:
            payload.update(optimizer=optimizer.state_dict(),
                           scheduler=None if scheduler is None else scheduler.state_dict(),
                           average=None if average is None else average.state_dict(),
                           best_score=float(best[0]), best_state=best[1], bad_epochs=int(best[2]))
        write_atomically(path, lambda tmp: torch.save(payload, tmp))

    @staticmethod
    def _read_resume(path: Path) -> dict:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
            raise UnreadableFileError(path, f"not a readable resume checkpoint ({exc}); delete it to train "
                                            "this model from the start") from exc

    def _train_epoch(self, model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     history: History, average: AveragedModel | None) -> tuple[float, int]:
        cfg = self.config
        model.train()
        loss_sum, count = 0.0, 0
        for x, y in loader:
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x)
            with self._autocast():
                out = model(x)
            loss = self.loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf if cfg.grad_clip is None
                                                  else cfg.grad_clip)
            if not torch.isfinite(norm):  # after DDP's all-reduce every rank sees the same norm
                optimizer.zero_grad(set_to_none=True)
                self._non_finite_step(history)
                continue
            optimizer.step()
            if average is not None:
                average.update_parameters(unwrap(model))
            history.steps += 1
            loss_sum += float(loss.detach()) * len(y)
            count += len(y)
            if cfg.max_steps is not None and history.steps >= cfg.max_steps:
                break
        return loss_sum, count

    def _non_finite_step(self, history: History) -> None:
        """A batch gave a NaN or infinite gradient: its step is skipped, so the weights stay finite. Under
        bfloat16 autocast, autocast is turned off for the rest of training (seen with 3D FCN-8s and PSP
        networks on LIDC VOIs, whose float32 training stays finite); in float32 it is an error."""
        history.skipped_steps += 1
        if self.autocast_dtype is None:
            raise ModelError(f"train: non-finite gradient at optimiser step {history.steps} in float32; lower "
                             "the learning rate, set grad_clip, or check the inputs for NaN/inf")
        self.autocast_dtype = None
        history.autocast_off_at_step = history.steps
        warnings.warn(f"train: bfloat16 autocast gave a non-finite gradient at optimiser step {history.steps}; "
                      "that batch was skipped and training continues in float32", RuntimeWarning, stacklevel=2)

    # -- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _outputs(self, data: Dataset, batch_size: int | None = None,
                 module: torch.nn.Module | None = None) -> tuple[Tensor, Tensor | None]:
        self._place()
        module = unwrap(self.module) if module is None else module
        was_training = module.training
        module.eval()
        loader, _ = self._loader(data, batch_size or self.config.batch_size, train=False)
        outputs, targets = [], []
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            with self._autocast():
                outputs.append(module(self._to_device(x)).float().cpu())
            if isinstance(batch, (tuple, list)) and len(batch) > 1:
                targets.append(torch.as_tensor(batch[1]))
        module.train(was_training)
        return torch.cat(outputs), (torch.cat(targets) if targets else None)

    def predict(self, inputs: Tensor | Dataset, batch_size: int | None = None) -> Tensor:
        """Raw outputs for ``inputs`` (a tensor of inputs, or a dataset whose items are
        ``(input, target)`` or inputs), in eval mode without gradients, as float32 on the CPU."""
        data = TensorDataset(inputs) if isinstance(inputs, Tensor) else inputs
        return self._outputs(data, batch_size)[0]
