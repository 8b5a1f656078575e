"""Inference: sliding-window prediction with mirror test-time augmentation, back to the input geometry.

The prepared image (plan normalisation and spacing) is covered by overlapping windows of the plan's
patch size (MONAI ``sliding_window_inference``, Gaussian blending). With TTA the softmax is averaged
over the identity and a mirror along each axis in ``flip_axes``; a plan trained with quarter turns
(``augmentations.rot90``, square in-plane patch) and ``inference.tta_rotations`` averages instead over
the eight symmetries of the square in the last two axes (four quarter turns, each also mirrored).
Probabilities are resized back to the input's shape (linear) before the arg-max, so the mask has the
input's size and geometry. Every function that takes a model also takes a sequence of models trained
from one plan (fold or seed models, :func:`medlens.segment.train.load_ensemble`): their softmax outputs
are averaged for each window and view, as nnU-Net ensembles its cross-validation folds.

An image smaller than the patch along some axis is first padded to the patch size with
:func:`medlens.segment.plan.pad_value`, exactly as training pads it, and the probabilities are cropped
back. (MONAI's sliding window would otherwise pad with 0, which the network never saw in training.)
Post-processing (:func:`postprocess`, all off by default): ``inference.min_component_size`` drops
foreground components smaller than that many voxels; ``inference.keep_component`` (``null``,
``"largest"``, ``"central"``) keeps connected foreground components of the mask (``inference.keep_count``
of them with ``"largest"``: 2 for a pair of lungs), and ``inference.fill_holes`` fills background
enclosed by one class with that class (:func:`fill_holes`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from medlens.errors import ConfigError, MissingPathError
from medlens.image import MedImage
from medlens.segment.instances import INSTANCE_DEFAULTS, labels_from_prediction, measure_instances, rescale_factor
from medlens.segment.io import case_name, is_image_file, mask_suffix, read_image, write_mask, write_table
from medlens.segment.plan import pad_to, pad_value, prepare_image, resize, unpad

Models = Union[torch.nn.Module, Sequence[torch.nn.Module]]  # one network or an ensemble of one plan
MAX_RESCALES = 2  # extra predictions of an instance-mode image whose objects lie outside the trained sizes


def _mean_over_square_symmetries(run, t: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over the eight symmetries of the square in the last two axes (four quarter turns,
    each also mirrored), each output turned back. Both in-plane sides of ``t`` already reach the square
    patch, so every turned view does too."""
    total = torch.zeros(())
    for turns in range(4):
        for mirror in (False, True):
            view = torch.rot90(t, turns, (-2, -1))
            out = run(view.flip(-1) if mirror else view)
            total = total + torch.rot90(out.flip(-1) if mirror else out, -turns, (-2, -1))
    return total / 8


@torch.no_grad()
def predict_probabilities(model: Models, plan: dict[str, Any], x: np.ndarray,
                          tta: bool | None = None) -> np.ndarray:
    """Class probabilities ``(K, ...)`` for a prepared ``(C, ...)`` array; for an ensemble, the mean of
    its members' softmax outputs."""
    inf = plan["inference"]
    tta = inf.get("tta_flips", True) if tta is None else tta
    members = [model] if isinstance(model, torch.nn.Module) else list(model)
    device = next(members[0].parameters()).device
    shape = tuple(x.shape[1:])
    x = pad_to(x, tuple(int(p) for p in plan["patch_size"]), pad_value(x))
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)

    def run(inp: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(())
        for member in members:
            out = sliding_window_inference(inp, plan["patch_size"], int(inf.get("sw_batch_size", 4)), member,
                                           overlap=float(inf.get("overlap", 0.5)), mode="gaussian")
            total = total + torch.softmax(out, dim=1)
        return total / len(members)

    if tta and inf.get("tta_rotations") and plan["augmentations"].get("rot90") \
            and plan["patch_size"][-1] == plan["patch_size"][-2]:
        prob = _mean_over_square_symmetries(run, t)
    else:
        prob = run(t)
        if tta:
            axes = [a + 2 for a in plan["augmentations"].get("flip_axes", [])]
            for a in axes:
                prob += torch.flip(run(torch.flip(t, [a])), [a])
            prob /= 1 + len(axes)
    return unpad(prob[0].float().cpu().numpy(), shape)


def keep_component(mask: np.ndarray, mode: str | None, count: int = 1) -> np.ndarray:
    """Post-processing of a label map: keep connected foreground components (nnU-Net keeps the largest
    where that helps in cross-validation).

    ``None`` leaves the map alone; ``"largest"`` keeps the ``count`` largest components; ``"central"``
    keeps the component that comes nearest to the array centre (a lesion-centred crop such as an LIDC
    nodule VOI). Components are connected over faces, edges and corners; every other foreground voxel
    becomes 0.
    """
    if mode is None or not mask.any():
        return mask
    if mode not in ("largest", "central"):
        raise ConfigError(f"inference.keep_component: unknown {mode!r}; use null, 'largest' or 'central'")
    if int(count) < 1:
        raise ConfigError(f"inference.keep_count: must be at least 1, got {count}")
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


def postprocess(mask: np.ndarray, inference: dict[str, Any]) -> np.ndarray:
    """The plan's post-processing of an arg-max label map: :func:`drop_small_components`
    (``inference.min_component_size``), :func:`keep_component`, then :func:`fill_holes`."""
    mask = drop_small_components(mask, int(inference.get("min_component_size") or 0))
    mask = keep_component(mask, inference.get("keep_component"), int(inference.get("keep_count", 1)))
    return fill_holes(mask) if inference.get("fill_holes") else mask


def segment_prepared(model: Models, plan: dict[str, Any], x: np.ndarray, tta: bool | None = None
                     ) -> np.ndarray:
    """Arg-max label map for a prepared array (in the plan's spacing)."""
    return predict_probabilities(model, plan, x, tta).argmax(axis=0)


def _segment_once(model: Models, plan: dict[str, Any], image: MedImage, tta: bool | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    prob = resize(predict_probabilities(model, plan, prepare_image(plan, image), tta), image.shape)
    return postprocess(prob.argmax(axis=0).astype(np.int64), plan["inference"]), prob


def segment_image(model: Models, plan: dict[str, Any], image: MedImage, tta: bool | None = None,
                  return_probabilities: bool = False):
    """Label map ``(*image.shape)`` of an image of any size, in its own geometry.

    With ``return_probabilities`` also the class probabilities ``(K, *image.shape)``. A plan in instance
    mode with ``inference.instances.diameter_range`` predicts an image whose objects (the predicted
    interiors' median diameter) fall outside that range again, with its spacing scaled by
    :func:`medlens.segment.instances.rescale_factor` so that the network sees them at a trained size,
    up to :data:`MAX_RESCALES` times (a first prediction of nuclei far larger than any trained on can
    merge them, and the second look measures them again); the result is in the image's own geometry.
    """
    mask, prob = _segment_once(model, plan, image, tta)
    options = plan["inference"].get("instances") or {}
    bounds, spacing = options.get("diameter_range"), image.spacing
    for _ in range(MAX_RESCALES if bounds else 0):
        step = rescale_factor(mask == 1, spacing, bounds, int(options.get("min_size", INSTANCE_DEFAULTS["min_size"])))
        if step == 1.0:
            break
        spacing = tuple(s * step for s in spacing)
        mask, prob = _segment_once(model, plan, replace(image, spacing=spacing), tta)
    return (mask, prob) if return_probabilities else mask


def write_instances(mask: np.ndarray, image: MedImage, out_dir: Path, name: str,
                    options: dict[str, Any] | None = None) -> list[Path]:
    """Cut a predicted interior/boundary map into instances and write ``<name>_instances`` (a label image
    in the image's geometry) and ``<name>_instances.csv`` (label, area, centroid, mean intensity of the
    image's channel mean), see :mod:`medlens.segment.instances`."""
    labels = labels_from_prediction(mask, options)
    table = measure_instances(labels, image.array.mean(axis=0))
    return [write_mask(labels, image, out_dir / f"{name}_instances{mask_suffix(image)}", instances=True),
            write_table(table, out_dir / f"{name}_instances.csv")]


def predict_files(model: Models, plan: dict[str, Any], inputs: list[str | Path], out_dir: str | Path,
                  tta: bool | None = None) -> list[Path]:
    """Segment each input (picture, NIfTI, DICOM folder, or a folder of pictures/NIfTI files) and write
    ``out_dir/<name>.png`` or ``.nii.gz`` with the input's geometry; a plan in ``instance`` mask mode
    also writes each input's instances (:func:`write_instances`). Returns the written paths."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise MissingPathError(item)
        if item.is_dir() and any(is_image_file(p) for p in item.iterdir()):
            paths += sorted(p for p in item.iterdir() if is_image_file(p))
        else:
            paths.append(item)
    written = []
    for path in paths:
        image = read_image(path)
        mask = segment_image(model, plan, image, tta)
        target = out_dir / (case_name(path) + mask_suffix(image))
        written.append(write_mask(mask, image, target, plan["dataset"]["n_classes"]))
        if plan["dataset"].get("mask_mode") == "instance":
            written += write_instances(mask, image, out_dir, case_name(path), plan["inference"].get("instances"))
    return written
