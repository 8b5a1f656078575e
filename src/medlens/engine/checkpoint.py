"""Save and restore a module's weights, its optimiser state and the epoch, as one torch file.

Files are read back with ``torch.load(weights_only=True)``, which unpickles only tensors and plain
containers, so a checkpoint from elsewhere cannot run code when loaded. ``meta`` must therefore hold
only plain values (str, int, float, bool, None, lists and dicts of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlens.engine.distributed import unwrap
from medlens.errors import MissingPathError, UnreadableFileError
from medlens.files import write_atomically


def save_checkpoint(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    epoch: int = 0, meta: dict[str, Any] | None = None) -> Path:
    """Write ``module``'s state dict (unwrapped from DDP), the optimiser state, ``epoch`` and ``meta``.

    The file is written next to its target and renamed into place, so a crash never leaves half a file.
    """
    payload = {
        "model": unwrap(module).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "epoch": int(epoch),
        "meta": dict(meta or {}),
    }
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load the weights at ``path`` into ``module`` (and the optimiser state into ``optimizer``).

    Returns
    -------
    dict
        ``{"epoch": int, "meta": dict}`` as saved.

    Raises
    ------
    MissingPathError
        ``path`` does not exist.
    UnreadableFileError
        The file is not a medlens checkpoint or its weights do not fit ``module``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(path, "checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise UnreadableFileError(path, f"not a readable torch checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise UnreadableFileError(path, "not a medlens checkpoint: no 'model' entry")
    try:
        unwrap(module).load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise UnreadableFileError(path, f"weights do not fit this model: {exc}") from exc
    if optimizer is not None and payload.get("optimizer") is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return {"epoch": int(payload.get("epoch", 0)), "meta": payload.get("meta", {})}
