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
The arg-max label map then gets the plan's post-processing (``postprocessing``, chosen by ``segment cv``
on its folds; :func:`medlens.segment.postprocess.postprocess`).

An image with NaN or infinite values is refused (:class:`~medlens.errors.UnreadableFileError` naming
the file), never turned into an empty mask. Masks are written under the input's file name; where two
inputs share a name (``a/scan.nii.gz`` and ``b/scan.nii.gz``) each keeps its path relative to the
inputs' common folder, and a file that is already there is never replaced.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medlens.errors import MissingPathError, UnreadableFileError
from medlens.image import MedImage
from medlens.segment.instances import labels_from_prediction, measure_instances, rescale_factor
from medlens.segment.io import case_name, is_image_file, mask_suffix, read_image, write_mask, write_table
from medlens.segment.plan import SegmentationPlan
from medlens.segment.postprocess import postprocess
from medlens.segment.prepare import pad_to, pad_value, prepare_image, resize, unpad

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
def predict_probabilities(model: Models, plan: SegmentationPlan, x: np.ndarray,
                          tta: bool | None = None) -> np.ndarray:
    """Class probabilities ``(K, ...)`` for a prepared ``(C, ...)`` array; for an ensemble, the mean of
    its members' softmax outputs."""
    inf = plan.inference
    tta = inf.tta_flips if tta is None else tta
    members = [model] if isinstance(model, torch.nn.Module) else list(model)
    device = next(members[0].parameters()).device
    shape = tuple(x.shape[1:])
    x = pad_to(x, plan.patch, pad_value(x))
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)

    def run(inp: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(())
        for member in members:
            out = sliding_window_inference(inp, list(plan.patch), inf.sw_batch_size, member,
                                           overlap=inf.overlap, mode="gaussian")
            total = total + torch.softmax(out, dim=1)
        return total / len(members)

    if tta and inf.tta_rotations and plan.augmentations.rot90 and plan.patch[-1] == plan.patch[-2]:
        prob = _mean_over_square_symmetries(run, t)
    else:
        prob = run(t)
        if tta:
            axes = [a + 2 for a in plan.augmentations.flip_axes]
            for a in axes:
                prob += torch.flip(run(torch.flip(t, [a])), [a])
            prob /= 1 + len(axes)
    return unpad(prob[0].float().cpu().numpy(), shape)


def segment_prepared(model: Models, plan: SegmentationPlan, x: np.ndarray, tta: bool | None = None
                     ) -> np.ndarray:
    """Arg-max label map for a prepared array (in the plan's spacing)."""
    return predict_probabilities(model, plan, x, tta).argmax(axis=0)


def _segment_once(model: Models, plan: SegmentationPlan, image: MedImage, tta: bool | None, post: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    prob = resize(predict_probabilities(model, plan, prepare_image(plan, image), tta), image.shape)
    mask = prob.argmax(axis=0).astype(np.int64)
    return (postprocess(mask, plan.postprocessing.steps()) if post else mask), prob


def check_finite(image: MedImage) -> None:
    """Raise :class:`UnreadableFileError` naming the image's file when it holds NaN or infinite values
    (a network would turn them into an empty mask without a word)."""
    bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
    if bad:
        raise UnreadableFileError(image.meta.get("source"), f"{bad} voxels are NaN or infinite; "
                                                            "a mask cannot be predicted from them")


def segment_image(model: Models, plan: SegmentationPlan, image: MedImage, tta: bool | None = None,
                  return_probabilities: bool = False, postprocessing: bool = True):
    """Label map ``(*image.shape)`` of an image of any size, in its own geometry, post-processed as the
    plan says (``postprocessing=False``: the raw arg-max, as ``segment cv`` needs it).

    With ``return_probabilities`` also the class probabilities ``(K, *image.shape)``. A plan in instance
    mode with ``inference.instances.diameter_range`` predicts an image whose objects (the predicted
    interiors' median diameter) fall outside that range again, with its spacing scaled by
    :func:`medlens.segment.instances.rescale_factor` so that the network sees them at a trained size,
    up to :data:`MAX_RESCALES` times (a first prediction of nuclei far larger than any trained on can
    merge them, and the second look measures them again); the result is in the image's own geometry.
    """
    check_finite(image)
    mask, prob = _segment_once(model, plan, image, tta, postprocessing)
    options = plan.inference.instances
    bounds, spacing = (options.diameter_range if options else None), image.spacing
    for _ in range(MAX_RESCALES if bounds else 0):
        step = rescale_factor(mask == 1, spacing, bounds, options.min_size)
        if step == 1.0:
            break
        spacing = tuple(s * step for s in spacing)
        mask, prob = _segment_once(model, plan, replace(image, spacing=spacing), tta, postprocessing)
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


def input_files(inputs: list[str | Path]) -> list[Path]:
    """The images named by ``inputs``: files and DICOM series folders as they are, the pictures and NIfTI
    files of other folders; each once, in the given order."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise MissingPathError(item)
        if item.is_dir() and any(is_image_file(p) for p in item.iterdir()):
            paths += sorted(p for p in item.iterdir() if is_image_file(p))
        else:
            paths.append(item)
    return list(dict.fromkeys(paths))


def output_names(paths: list[Path]) -> list[str]:
    """The name (without suffix) each input's mask is written under: its case name where that is unique,
    otherwise its path relative to the inputs' common folder (``a/scan``, ``b/scan``), so that no two
    masks share a file."""
    names = [case_name(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    absolute = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return [str(p.parent.relative_to(root) / case_name(p)) for p in absolute]


def predict_files(model: Models, plan: SegmentationPlan, inputs: list[str | Path], out_dir: str | Path,
                  tta: bool | None = None) -> list[Path]:
    """Segment each input (picture, NIfTI, DICOM folder, or a folder of pictures/NIfTI files) and write
    ``out_dir/<name>.png`` or ``.nii.gz`` with the input's geometry (names by :func:`output_names`); a plan
    in ``instance`` mask mode also writes each input's instances (:func:`write_instances`). Returns the
    written paths.

    Raises :class:`UnreadableFileError` before any work when a mask would replace a file already in
    ``out_dir``, and for an input with NaN or infinite values (:func:`check_finite`)."""
    out_dir = Path(out_dir)
    paths = input_files(inputs)
    names = output_names(paths)
    instance = plan.dataset.mask_mode == "instance"
    for path, name in zip(paths, names):
        targets = [name + mask_suffix(path)] + ([f"{name}_instances{mask_suffix(path)}", f"{name}_instances.csv"]
                                                if instance else [])
        taken = [out_dir / t for t in targets if (out_dir / t).exists()]
        if taken:
            raise UnreadableFileError(taken[0], f"already exists; the output for {path} would replace it "
                                                "(choose another --out folder)")
    written = []
    for path, name in zip(paths, names):
        image = read_image(path)
        mask = segment_image(model, plan, image, tta)
        written.append(write_mask(mask, image, out_dir / (name + mask_suffix(image)), plan.n_classes))
        if instance:
            options = plan.inference.instances.model_dump() if plan.inference.instances else None
            written += write_instances(mask, image, out_dir, name, options)
    return written
