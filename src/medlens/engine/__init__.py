"""The torch training engine: one loop (:class:`Trainer`), checkpoints and multi-process set-up; and
:mod:`medlens.engine.cluster` (Dask) for work split into independent tasks.

The names below are imported on first use (PEP 562), so that ``medlens.engine.cluster`` (on every Dask worker)
does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "init_distributed": "distributed",
            "is_main_process": "distributed", "wrap_ddp": "distributed", "History": "trainer",
            "TrainConfig": "trainer", "Trainer": "trainer"}

__all__ = ["History", "TrainConfig", "Trainer", "init_distributed", "is_main_process", "load_checkpoint",
           "save_checkpoint", "wrap_ddp"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medlens.engine.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medlens.engine' has no attribute {name!r}")
