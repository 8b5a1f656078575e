"""Multi-process training under ``torchrun``: process-group set-up and rank helpers.

``torchrun --nproc_per_node=N script.py`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's environment. :func:`init_distributed`
reads them and joins the process group (gloo on CPU, nccl on CUDA); a single process (no
``WORLD_SIZE`` or ``WORLD_SIZE=1``) needs nothing and runs unchanged.
"""

from __future__ import annotations

import atexit
import functools
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    """Number of training processes: the process group's size, else ``WORLD_SIZE`` (default 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, default 0)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True when more than one process trains together."""
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, the process that shows progress and writes files."""
    return rank() == 0


def device_for_rank(device: str = "auto") -> torch.device:
    """The device this process trains on.

    ``"auto"`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; any other value is taken
    as a torch device string.
    """
    if device == "auto":
        return torch.device(f"cuda:{local_rank()}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` described in the environment.

    Parameters
    ----------
    backend : str, optional
        ``"gloo"`` or ``"nccl"``; by default nccl when CUDA is available, else gloo.

    Returns
    -------
    bool
        True when training is distributed (``WORLD_SIZE`` > 1); calling it again is harmless.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
        atexit.register(_leave_process_group)
    return True


def _leave_process_group() -> None:
    """Destroy the process groups before the interpreter tears down: gloo's threads left running at exit
    can abort the process ("terminate called without an active exception") after its work is done."""
    _ddp_group.cache_clear()
    if dist.is_initialized():
        dist.destroy_process_group()


@functools.cache
def _ddp_group() -> dist.ProcessGroup:
    """The process group DDP communicates over: one of its own, created once, beside the default group.

    DDP's reducer keeps its process group alive after ``destroy_process_group`` (torch 2.13), and with it
    the group's gloo worker threads. A worker that drops a finished collective's tensor after the
    interpreter has begun shutting down needs the GIL to free the tensor's Python object, cannot take it
    and aborts the process ("terminate called without an active exception"). DDP's own collectives run
    on tensors made in C++ (flattened buckets), which need no GIL; the collectives on Python tensors
    (:func:`all_reduce_sum`, :func:`broadcast_floats`, :func:`broadcast_buffers`) stay on the default
    group, whose threads ``destroy_process_group`` joins at exit.
    """
    return dist.new_group()


def wrap_ddp(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in :class:`DistributedDataParallel` when distributed, else unchanged.

    DDP broadcasts rank 0's parameters and buffers when it wraps, so every rank starts from the same
    weights, and averages gradients over ranks in ``backward``.
    """
    if not is_distributed():
        return module
    param = next(module.parameters())
    device_ids = [param.device.index] if param.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, process_group=_ddp_group())


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward pass, so after the last training step every
    rank holds running statistics from its own batch; evaluation and the saved weights need one copy.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in unwrap(module).buffers():
        dist.broadcast(buffer.data, src=src)


def broadcast_floats(values: list[float], device: torch.device, src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank, so that decisions (early stopping) agree everywhere."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=src)
    return tensor.tolist()
