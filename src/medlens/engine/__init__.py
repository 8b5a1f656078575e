"""The torch training engine: one loop (:class:`Trainer`), checkpoints and multi-process set-up."""

from medlens.engine.checkpoint import load_checkpoint, save_checkpoint
from medlens.engine.distributed import init_distributed, is_main_process, wrap_ddp
from medlens.engine.trainer import History, TrainConfig, Trainer

__all__ = ["History", "TrainConfig", "Trainer", "init_distributed", "is_main_process", "load_checkpoint",
           "save_checkpoint", "wrap_ddp"]
