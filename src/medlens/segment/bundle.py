"""A trained segmenter on disk: the one place that writes and reads it.

A segmenter folder holds ``plan.json`` (the validated plan, :mod:`medlens.segment.plan`), ``model.pt``
(the network's ``state_dict``, read back with ``torch.load(weights_only=True)``: nothing in it is
executed) and ``history.json`` (the trainer's history). The folder of ``medlens segment cv`` holds one
such folder per fold and seed (``fold0/seed0``, ...) and ``cv.json``; :func:`segmenter_folders` finds
them, so a cross-validation folder predicts as the ensemble of its fold models, as nnU-Net does.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from medlens.engine.trainer import History
from medlens.errors import ConfigError, UnreadableFileError
from medlens.files import write_atomically, write_text_atomically
from medlens.segment.plan import PLAN_FILE, SegmentationPlan, load_plan, save_plan

WEIGHTS = "model.pt"
HISTORY = "history.json"
CV_RECORD = "cv.json"

# What a model reads from its plan: ensemble members must agree on all of it (training may differ).
MEMBER_PLAN_KEYS = ("dataset", "fingerprint", "normalization", "target_spacing", "patch_size", "network")


def build_model(plan: SegmentationPlan) -> torch.nn.Module:
    """The plan's network, untrained."""
    from medlens.segment.networks import build_network

    return build_network(plan.network.name, plan.dims, plan.fingerprint.channels, plan.n_classes,
                         plan.network.channels, plan.network.depth)


def save_segmenter(model: torch.nn.Module, plan: SegmentationPlan, out_dir: str | Path,
                   history: History | None = None) -> Path:
    """Write ``plan.json``, ``model.pt`` (state dict) and ``history.json`` into ``out_dir``."""
    out = Path(out_dir)
    save_plan(plan, out / PLAN_FILE)
    write_atomically(out / WEIGHTS, lambda tmp: torch.save(model.state_dict(), tmp))
    if history is not None:
        write_text_atomically(out / HISTORY, json.dumps(asdict(history), indent=2))
    return out


def load_history(model_dir: str | Path) -> History | None:
    """The training history saved beside a segmenter, or ``None``."""
    path = Path(model_dir) / HISTORY
    return History(**json.loads(path.read_text())) if path.is_file() else None


def load_segmenter(model_dir: str | Path) -> tuple[torch.nn.Module, SegmentationPlan]:
    """The trained model (eval mode) and plan from a folder written by :func:`save_segmenter`."""
    model_dir = Path(model_dir)
    plan = load_plan(model_dir / PLAN_FILE)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise UnreadableFileError(weights, "no trained weights; run `medlens segment train` first")
    model = build_model(plan)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle payload or a damaged file: refused, never executed
        raise UnreadableFileError(weights, f"not a plain state dict of tensors ({exc})") from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{weights}: weights do not fit the plan's network ({exc})") from exc
    return model.eval(), plan


def segmenter_folders(path: str | Path) -> list[Path]:
    """The segmenter folders a path names: itself, or every fold/seed model of a ``segment cv`` folder."""
    path = Path(path)
    if (path / CV_RECORD).is_file() and not (path / WEIGHTS).is_file():
        found = sorted(p.parent for p in path.glob(f"fold*/seed*/{WEIGHTS}"))
        if not found:
            raise UnreadableFileError(path, "a cross-validation folder without fold models")
        return found
    return [path]


def load_ensemble(model_dirs: list[str | Path]) -> tuple[list[torch.nn.Module], SegmentationPlan]:
    """The models of several segmenters of one plan (cross-validation folds or training seeds; a ``segment
    cv`` folder stands for all its fold models) and the first one's plan, whose inference and
    post-processing settings apply to the ensemble.

    Raises :class:`medlens.errors.ConfigError` naming the folder whose plan differs from the first in a
    key the network depends on (:data:`MEMBER_PLAN_KEYS`).
    """
    folders = [f for d in model_dirs for f in segmenter_folders(d)]
    if not folders:
        raise ConfigError("ensemble: no model folders given")
    models, plans = zip(*(load_segmenter(d) for d in folders))
    first = plans[0].to_dict()
    for directory, other in zip(folders[1:], plans[1:]):
        other = other.to_dict()
        differing = [k for k in MEMBER_PLAN_KEYS if other.get(k) != first.get(k)]
        if differing:
            raise ConfigError(f"{directory}: its plan differs from {folders[0]}'s in {', '.join(differing)}; "
                              "an ensemble needs models trained from one plan")
    return list(models), plans[0]
