"""A trained segmenter on disk: a ``segmenter`` bundle of the one bundle format (:mod:`medlens.deploy.bundle`),
and the one place that writes and reads it.

A segmenter bundle holds ``plan.json`` (the validated plan, :mod:`medlens.segment.plan`: an edited plan
changes the masks, so it is covered by the bundle's integrity record like every other file),
``weights.safetensors`` (the network's weights: nothing in it is executed), a manifest (the training history,
the plan's dataset id) and ``checksums.sha256``. The folder of ``medlens segment cv`` holds one such bundle per
fold and seed (``fold0/seed0``, ...) and ``cv.json``; :func:`segmenter_folders` finds them, so a
cross-validation folder predicts as the ensemble of its fold models, as nnU-Net does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from medlens.deploy.bundle import CHECKSUMS, WEIGHTS, BundleReader, load_bundle, register_kind, write_arrays, \
    write_bundle, write_json
from medlens.engine.trainer import History
from medlens.errors import ConfigError, UnreadableFileError
from medlens.segment.plan import PLAN_FILE, SegmentationPlan, load_plan

CV_RECORD = "cv.json"

# What a model reads from its plan: ensemble members must agree on all of it (training may differ).
MEMBER_PLAN_KEYS = ("dataset", "fingerprint", "normalization", "target_spacing", "patch_size", "network")


def build_model(plan: SegmentationPlan) -> torch.nn.Module:
    """The plan's network, untrained."""
    from medlens.segment.networks import build_network

    return build_network(plan.network.name, plan.dims, plan.fingerprint.channels, plan.n_classes,
                         plan.network.channels, plan.network.depth)


@dataclass
class SegmenterBundle:
    """A loaded segmenter: the trained network (eval mode), its plan and training history."""

    model: torch.nn.Module
    plan: SegmentationPlan
    history: History | None
    manifest: dict
    path: Path


def save_segmenter(model: torch.nn.Module, plan: SegmentationPlan, out_dir: str | Path,
                   history: History | None = None) -> Path:
    """Write a ``segmenter`` bundle at ``out_dir`` (replacing one there as a whole): the plan, the weights and the
    training history."""
    arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    manifest = {"history": None if history is None else asdict(history),
                "plan": {"dataset_id": plan.dataset.dataset_id, "network": plan.network.name, "dims": plan.dims,
                         "n_classes": plan.n_classes}}
    return write_bundle(out_dir, "segmenter", manifest, {PLAN_FILE: write_json(plan.to_dict()),
                                                          WEIGHTS: write_arrays(arrays)})


@register_kind("segmenter")
def read_segmenter(reader: BundleReader) -> SegmenterBundle:
    """Rebuild a trained segmenter from a checked ``segmenter`` bundle."""
    plan = load_plan(reader.path(PLAN_FILE))
    model = build_model(plan)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in reader.arrays(WEIGHTS).items()})
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{reader.path(WEIGHTS)}: weights do not fit the plan's network ({exc})") from exc
    history = reader.manifest.get("history")
    return SegmenterBundle(model.eval(), plan, None if history is None else History(**history), reader.manifest,
                           reader.folder)


def load_history(model_dir: str | Path) -> History | None:
    """The training history recorded in a segmenter bundle, or ``None``."""
    return load_bundle(model_dir, kind="segmenter").history


def load_segmenter(model_dir: str | Path) -> tuple[torch.nn.Module, SegmentationPlan]:
    """The trained model (eval mode) and plan of a bundle written by :func:`save_segmenter`."""
    loaded = load_bundle(model_dir, kind="segmenter")
    return loaded.model, loaded.plan


def segmenter_folders(path: str | Path) -> list[Path]:
    """The segmenter folders a path names: itself, or every fold/seed model of a ``segment cv`` folder."""
    path = Path(path)
    if (path / CV_RECORD).is_file() and not (path / CHECKSUMS).is_file():
        found = sorted(p.parent for p in path.glob(f"fold*/seed*/{CHECKSUMS}"))
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
