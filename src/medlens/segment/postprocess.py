"""Post-processing of predicted label maps, and choosing it on cross-validation predictions.

Steps, applied in this order by :func:`postprocess` (the plan's ``postprocessing``):
:func:`drop_small_components` (``min_component_size``), :func:`keep_component` (``keep_component``,
``keep_count``) and :func:`fill_holes` (``fill_holes``).

:func:`decide_postprocessing` is nnU-Net's rule (Isensee et al., Nat Methods 18:203, 2021): each
candidate step is tried on the validation predictions of every fold, on top of the steps already
kept, and kept only when it raises the mean Dice over the cases.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from medlens.errors import ConfigError
from medlens.segment.evaluate import mean_dice

NO_POSTPROCESSING = {"min_component_size": 0, "keep_component": None, "keep_count": 1, "fill_holes": False}


def keep_component(mask: np.ndarray, mode: str | None, count: int = 1) -> np.ndarray:
    """Keep connected foreground components of a label map.

    ``None`` leaves the map alone; ``"largest"`` keeps the ``count`` largest components; ``"central"``
    keeps the component that comes nearest to the array centre (a lesion-centred crop such as an LIDC
    nodule VOI). Components are connected over faces, edges and corners; every other foreground voxel
    becomes 0.
    """
    if mode is None or not mask.any():
        return mask
    if mode not in ("largest", "central"):
        raise ConfigError(f"postprocessing.keep_component: unknown {mode!r}; use null, 'largest' or 'central'")
    if int(count) < 1:
        raise ConfigError(f"postprocessing.keep_count: must be at least 1, got {count}")
    labels, n = ndimage.label(mask > 0, structure=np.ones((3,) * mask.ndim, bool))
    if n <= (count if mode == "largest" else 1):
        return mask
    if mode == "largest":
        keep = 1 + np.argsort(np.bincount(labels.ravel())[1:])[::-1][:int(count)]
    else:
        centre = (np.array(mask.shape) - 1) / 2
        idx = np.argwhere(labels > 0)
        dist = ((idx - centre) ** 2).sum(axis=1)
        keep = [int(labels[tuple(idx[int(np.argmin(dist))])])]
    return np.where(np.isin(labels, keep), mask, 0).astype(mask.dtype)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Give background regions enclosed by one foreground class that class (``scipy.ndimage``'s
    ``binary_fill_holes`` per class, in the mask's dimensionality); other classes are never overwritten."""
    out = mask.copy()
    for k in np.unique(mask[mask != 0]):
        filled = ndimage.binary_fill_holes(mask == k)
        out[filled & (out == 0)] = k
    return out


def drop_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Set connected foreground components (faces, edges and corners) of fewer than ``min_size`` voxels
    to 0: specks a network leaves on a patch or slice without the structure."""
    if min_size <= 1 or not mask.any():
        return mask
    labels, _ = ndimage.label(mask > 0, structure=np.ones((3,) * mask.ndim, bool))
    small = np.nonzero(np.bincount(labels.ravel()) < min_size)[0]
    return np.where(np.isin(labels, small[small > 0]), 0, mask).astype(mask.dtype)


def postprocess(mask: np.ndarray, steps: Mapping[str, Any]) -> np.ndarray:
    """The post-processing ``steps`` (keys of :data:`NO_POSTPROCESSING`) of an arg-max label map."""
    steps = {**NO_POSTPROCESSING, **{k: v for k, v in steps.items() if k in NO_POSTPROCESSING}}
    mask = drop_small_components(mask, int(steps["min_component_size"] or 0))
    mask = keep_component(mask, steps["keep_component"], int(steps["keep_count"]))
    return fill_holes(mask) if steps["fill_holes"] else mask


def mean_case_dice(preds: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray], n_classes: int) -> float:
    """Mean over cases of the foreground Dice (:func:`medlens.segment.evaluate.mean_dice`)."""
    return float(np.mean([mean_dice(preds[k], truths[k], n_classes) for k in truths]))


def decide_postprocessing(preds: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray], n_classes: int,
                          candidates: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose post-processing on validation predictions (see the module docstring).

    Candidates that select components (``keep_component``) compete: the best of them is tried, then the
    others one by one on top of what was kept. Returns the chosen steps (keys of
    :data:`NO_POSTPROCESSING`) and the record ``{dice_before, dice_after, trials: [{step, dice, kept}]}``.
    """
    chosen = dict(NO_POSTPROCESSING)
    best = before = mean_case_dice(preds, truths, n_classes)
    trials = []

    def score(steps: dict[str, Any]) -> float:
        return mean_case_dice({k: postprocess(preds[k], steps) for k in truths}, truths, n_classes)

    selections = [c for c in candidates if c.get("keep_component")]
    others = [c for c in candidates if not c.get("keep_component")]
    if selections:
        scored = [(score({**chosen, **c}), c) for c in selections]
        top = max(range(len(scored)), key=lambda i: scored[i][0])
        for i, (dice, step) in enumerate(scored):
            kept = i == top and dice > best
            trials.append({"step": step, "dice": dice, "kept": kept})
        if trials[top]["kept"]:
            chosen.update(selections[top])
            best = scored[top][0]
    for step in others:
        dice = score({**chosen, **step})
        kept = dice > best
        trials.append({"step": step, "dice": dice, "kept": kept})
        if kept:
            chosen.update(step)
            best = dice
    return chosen, {"dice_before": before, "dice_after": best, "trials": trials}
