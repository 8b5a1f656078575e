"""The service's one adapter to bundles: loading, preparing inputs, predicting, explaining, segmenting.

Everything the service does with a trained artefact goes through this module, built on the public
functions of today's ``medlens.deploy`` and ``medlens.segment``:

=====================  ==============================================================================
classifier bundles     :func:`medlens.deploy.classifier.load_classifier`; inputs by
(every family; 2D      :func:`medlens.deploy.predict.prepare_input`, probabilities by
images and 3D lesion   :func:`~medlens.deploy.predict.predict_images`, rows by
cubes)                 :func:`~medlens.deploy.predict.rows_for` (the columns of ``medlens predict``);
                       lesions by :func:`medlens.deploy.predict_volume.find_lesions`; Grad-CAM (models
                       whose capabilities declare it) by :func:`medlens.deploy.explain.explain` and
                       :func:`~medlens.deploy.explain.write_overlay`
segmenter bundles      :func:`medlens.deploy.bundle.load_bundle`; inputs by
                       :func:`medlens.segment.io.read_image`; masks by
                       :func:`medlens.segment.infer.segment_image`
=====================  ==============================================================================

A served model answers four calls: :meth:`prepare` (read and check one upload, in a worker thread),
:meth:`run` (the model calls for a batch of prepared jobs, in the model's batcher thread), :meth:`answer`
(the JSON of one job, with overlays and the viewer's arrays when asked) and :meth:`describe` / :meth:`card`.
When the bundle format changes, this module is the one to re-point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import MedlensError
from medlens.serve.errors import RequestError
from medlens.serve.images import (as_hu16, as_uint8, largest_slice, outline_png, png_data_url, view_array,
                                  view_step)
from medlens.serve.uploads import Upload, Workspace

FEW_IMAGES = 4
"""Batches of at most this many images run on one torch thread: on a busy machine several threads waiting
on each other stall a tiny model call (benchmarks/results/predict.md)."""
VIEW_WINDOWS = ("lung", "soft_tissue", "bone")
OUTLINE_MARGIN = 40
"""Pixels around a lesion in its outline picture."""


@dataclass
class Options:
    """What a client asked for beside the prediction."""

    explain: bool = False
    outline: bool = False
    view: bool = False
    at: tuple[float, float, float] | None = None


@dataclass
class Job:
    """One upload on its way through a served model."""

    upload: Upload
    options: Options
    prepared: Any = None
    """Classifiers: the :class:`medlens.deploy.predict.Prepared` input."""
    image: Any = None
    """The decoded input as a :class:`medlens.image.MedImage` (segmenters; volumes and pictures to view)."""
    lesions: list = field(default_factory=list)
    proba: np.ndarray | None = None
    maps: np.ndarray | None = None
    mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Images this job puts into a batch."""
        return len(self.prepared.images) if self.prepared is not None else 1


def lesion_position(text: str) -> tuple[float, float, float]:
    """A client's ``at=z,y,x`` lesion position (voxels), as ``medlens predict --at`` reads it."""
    from medlens.deploy.predict_volume import parse_position

    return parse_position(text)


def load_served(path: str | Path, name: str):
    """The served model of a bundle folder, by its kind (:func:`medlens.deploy.bundle.bundle_kind`): a
    classifier or a segmenter.

    Raises
    ------
    MedlensError
        Not a bundle, a bundle that does not load (the loaders' own messages), or a kind that does not predict.
    """
    from medlens.deploy.bundle import bundle_kind

    folder = Path(path)
    kind = bundle_kind(folder)
    served = {"classifier": ServedClassifier, "segmenter": ServedSegmenter}
    if kind not in served:
        raise MedlensError(f"{folder}: a {kind} bundle; the service serves classifier and segmenter bundles")
    return served[kind](name, folder)


def _refuse_npz_for_volumes(upload: Upload, what: str) -> None:
    if upload.format == "npz":
        raise RequestError(415, f"{upload.name}: {what}; an npz archive is read by 2D classifier bundles only")


def _hu_gray(hu: np.ndarray, window: str = "lung") -> np.ndarray:
    from medlens.preprocess.intensity import apply_window

    return apply_window(hu, preset=window)


def _windows() -> dict[str, dict[str, float]]:
    from medlens.preprocess.intensity import WINDOWS

    return {name: {"center": WINDOWS[name].center, "width": WINDOWS[name].width} for name in VIEW_WINDOWS}


def _volume_view(hu: np.ndarray, spacing, mask: np.ndarray | None, heat: np.ndarray | None,
                 mask_labels: dict[int, str]) -> dict:
    """The viewer's arrays of a CT volume ``(D, H, W)`` in HU, its label mask and heat map (same shape)."""
    step = view_step(hu.shape)
    sub = (slice(None), slice(None, None, step), slice(None, None, step))
    view = {"kind": "volume", "modality": "CT", "spacing": [float(spacing[0]), float(spacing[1]) * step,
                                                             float(spacing[2]) * step],
            "step": step, "image": view_array(as_hu16(hu[sub])), "windows": _windows(), "window": "lung"}
    if mask is not None:
        view["mask"] = view_array(mask[sub].astype(np.uint8))
        view["mask_labels"] = {str(k): v for k, v in mask_labels.items()}
    if heat is not None:
        view["heat"] = view_array(np.round(np.clip(heat[sub], 0, 1) * 255).astype(np.uint8))
    return view


def _picture_view(images: np.ndarray, heat: np.ndarray | None = None, mask: np.ndarray | None = None) -> dict:
    """The viewer's arrays of 2D images ``(N, C, H, W)`` (8-bit gray, or RGB for three channels), with heat
    maps ``(N, h, w)`` in [0, 1] (stretched over the image by the page) and label masks ``(N, H, W)``."""
    step = view_step(images.shape)
    images = images[:, :, ::step, ::step]
    pixels = as_uint8(images[:, 0] if images.shape[1] != 3 else np.moveaxis(images, 1, -1))
    view = {"kind": "images", "modality": "OT", "spacing": [1.0, float(step), float(step)], "step": step,
            "image": view_array(pixels)}
    if heat is not None:
        view["heat"] = view_array(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8))
    if mask is not None:
        view["mask"] = view_array(mask[:, ::step, ::step].astype(np.uint8))
    return view


def _crop_outline(gray: np.ndarray, mask: np.ndarray) -> bytes:
    """Outline picture of a lesion, cropped to its in-plane box with :data:`OUTLINE_MARGIN` pixels around."""
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - OUTLINE_MARGIN, 0)
    high = np.minimum(where.max(axis=0) + OUTLINE_MARGIN + 1, mask.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    return outline_png(gray[box], mask[box])


# --------------------------------------------------------------------------------------------------
# Classifier bundles
# --------------------------------------------------------------------------------------------------
class ServedClassifier:
    """A bundle of ``medlens train``: a 2D image classifier or a 3D lesion classifier."""

    kind = "classifier"

    def __init__(self, name: str, path: Path):
        from medlens.deploy.classifier import load_classifier
        from medlens.deploy.predict import input_kind

        self.name, self.path = name, path
        self.bundle = load_classifier(path)
        self.volumes = input_kind(self.bundle) == "ct-lesions"
        self.explainable = "gradcam" in self.bundle.capabilities.explain  # asked of the model, not its name

    # ---------------------------------------------------------------------------------------- info
    def describe(self) -> dict:
        manifest, bundle = self.bundle.manifest, self.bundle
        labels = bundle.labels
        return {
            "name": self.name, "kind": self.kind,
            "title": bundle.config.title or bundle.config.study,
            "model": {"family": manifest["model"]["name"], "id": manifest["model"]["id"]},
            "task": "binary" if len(labels) == 2 else "multiclass",
            "labels": labels, "threshold": bundle.threshold, "temperature": bundle.temperature,
            "input": {"dims": len(bundle.image_shape) - 1, "shape": list(bundle.image_shape),
                      "reads": ["DICOM series (zip or files)", "NIfTI"] if self.volumes
                      else ["PNG", "JPEG", "BMP", "TIFF", "npz"],
                      **({"lesions": "the LIDC reader XML in the series (one row per rated nodule), or at=z,y,x"}
                         if self.volumes else {})},
            "explain": self.explainable, "outline": self.volumes,
            "dataset": manifest["data"].get("dataset"), "metrics": manifest.get("metrics") or {},
            "medlens_version": manifest.get("medlens_version"),
        }

    def card(self) -> str:
        from medlens.deploy.bundle import CARD

        return (self.path / CARD).read_text(encoding="utf-8")

    def threads_for(self, jobs: list[Job]) -> int | None:
        return 1 if sum(j.size for j in jobs) <= FEW_IMAGES else None

    # ---------------------------------------------------------------------------------------- steps
    def prepare(self, upload: Upload, options: Options, workspace: Workspace) -> Job:
        """Read and prepare one upload as ``medlens predict`` does (worker thread)."""
        from medlens.deploy.predict import prepare_input
        from medlens.deploy.predict_volume import LesionSelection

        job = Job(upload, options, notes=list(upload.notes))
        if self.volumes:
            _refuse_npz_for_volumes(upload, "this bundle classifies lesions in CT volumes")
            if not upload.volume or upload.format not in ("dicom", "nifti"):
                raise RequestError(422, f"{upload.name}: this bundle classifies lesions in CT volumes (a DICOM "
                                        f"series or a NIfTI volume); the upload is a 2D {upload.format} image")
        else:
            if upload.volume:
                raise RequestError(422, f"{upload.name}: this bundle takes 2D images of shape "
                                        f"{tuple(self.bundle.image_shape)}; the upload is a volume of shape "
                                        f"{tuple(upload.shape)}")
            if upload.format not in ("picture", "tiff", "npz"):
                raise RequestError(415, f"{upload.name}: 2D bundles read PNG, JPEG, BMP, TIFF pictures and npz "
                                        f"archives; the upload is {upload.format}")
        selection = LesionSelection(at=options.at)
        job.prepared = prepare_input(upload.path, self.bundle, selection)
        if job.prepared.error is not None:
            raise RequestError(422, job.prepared.error)
        if self.volumes and (options.view or options.outline or options.explain):
            from medlens.deploy.predict_volume import find_lesions, read_volume

            job.image = read_volume(upload.path)
            job.lesions = find_lesions(upload.path, job.image, selection)
        elif options.view and upload.format != "npz":
            from medlens.data.readers.pictures import read_picture

            job.image = read_picture(upload.path)
        return job

    def run(self, jobs: list[Job]) -> list[Job]:
        """Probabilities (and Grad-CAM maps where asked) of a batch of jobs, each kind in one model call;
        if a joint call fails, job by job, so that one bad input does not fail the others."""
        from medlens.deploy.predict import predict_images

        def features(group: list[Job]):
            values = [f for j in group for f in (j.prepared.features or [None] * j.size)]
            return values if any(v is not None for v in values) else None

        try:
            joined = predict_images(self.bundle, np.concatenate([j.prepared.images for j in jobs]), features(jobs))
            for job, part in zip(jobs, np.split(joined, np.cumsum([j.size for j in jobs])[:-1])):
                job.proba = part
        except MedlensError:
            for job in jobs:
                try:
                    job.proba = predict_images(self.bundle, job.prepared.images, features([job]))
                except MedlensError as exc:
                    job.notes.append(f"prediction failed: {exc}")
        wanted = [j for j in jobs if j.options.explain and j.proba is not None]
        if wanted and self.explainable:
            self._explain(wanted)
        elif wanted:
            for job in wanted:
                job.notes.append("no Grad-CAM: this model is not a convolutional network")
        return jobs

    def _explain(self, jobs: list[Job]) -> None:
        from medlens.deploy.explain import explain
        from medlens.deploy.predict import decide

        # the class explained is the one the bundle decides (threshold), not the arg-max of the logits
        classes = np.concatenate([decide(j.proba, self.bundle.threshold) for j in jobs])
        try:
            maps = explain(self.bundle.model, np.concatenate([j.prepared.images for j in jobs]), "gradcam",
                           class_index=classes)
        except MedlensError as exc:
            for job in jobs:
                job.notes.append(f"no Grad-CAM: {exc}")
            return
        for job, part in zip(jobs, np.split(maps, np.cumsum([j.size for j in jobs])[:-1])):
            job.maps = part

    def answer(self, job: Job, workspace: Workspace) -> dict:
        """The JSON of one job: the rows of ``medlens predict`` (``path`` is the upload's name), and the
        Grad-CAM overlays, lesion outlines and viewer arrays that were asked for (worker thread)."""
        from medlens.deploy.predict import rows_for

        if job.proba is None:
            raise RequestError(422, job.notes[-1] if job.notes else "prediction failed")
        rows = rows_for(self.bundle, job.prepared, job.proba)
        for row in rows:
            row["path"] = job.upload.name
        out = {"bundle": self.name, "kind": self.kind, "file": job.upload.name, "format": job.upload.format,
               "labels": self.bundle.labels, "threshold": self.bundle.threshold, "rows": rows}
        if job.options.explain or job.options.outline:
            out["images"] = self._images(job, rows, workspace)
        if job.options.view:
            out["view"] = self._view(job)
        out["notes"] = job.notes
        return out

    def _images(self, job: Job, rows: list[dict], workspace: Workspace) -> list[dict]:
        from medlens.deploy.explain import write_overlay

        images = []
        for i, row in enumerate(rows):
            entry: dict[str, Any] = {"index": i}
            if job.options.explain:
                entry["gradcam"] = None
                if job.maps is not None:
                    target = workspace.path / f"gradcam_{i}.png"
                    write_overlay(job.prepared.images[i], job.maps[i], target,
                                  title=f"{row['label']} (Grad-CAM)")
                    entry["gradcam"] = png_data_url(target.read_bytes())
            if job.lesions:
                lesion = job.lesions[i]
                if lesion.mask is not None:
                    z = largest_slice(lesion.mask)
                    entry["slice"] = z
                    if job.options.outline:
                        hu = job.image.array[0]
                        entry["outline"] = png_data_url(_crop_outline(_hu_gray(hu[z]), lesion.mask[z]))
                elif lesion.centre is not None:
                    entry["slice"] = int(round(lesion.centre[0]))
            images.append(entry)
        return images

    def _view(self, job: Job) -> dict:
        if self.volumes:
            hu, spacing = job.image.array[0], job.image.spacing
            masks = [(k + 1, lesion) for k, lesion in enumerate(job.lesions) if lesion.mask is not None]
            mask = None
            if masks:
                mask = np.zeros(hu.shape, np.uint8)
                for label, lesion in masks:
                    mask[lesion.mask & (mask == 0)] = label
            heat = None
            if job.maps is not None and masks:
                heat = np.zeros(hu.shape, np.float32)
                for label, lesion in masks:
                    np.maximum(heat, self._cube_in_volume(job.maps[label - 1], lesion.mask, spacing), out=heat)
            return _volume_view(hu, spacing, mask, heat, {k: f"lesion {k}" for k, _ in masks})
        if job.image is None:  # npz: the prepared images themselves
            return _picture_view(job.prepared.images, job.maps)
        return _picture_view(job.image.array[None], job.maps)

    def _cube_in_volume(self, cube_map: np.ndarray, mask: np.ndarray, spacing) -> np.ndarray:
        """A map over a lesion cube, carried back onto the voxels of the volume it was cut from.

        Inverts the preparation of :func:`medlens.deploy.predict_volume.lesion_inputs` for a lesion given by
        its mask: the crop :func:`~medlens.deploy.predict_volume.voi_box`, the resampling to ``t`` mm
        (``scipy.ndimage.zoom`` in grid mode: voxel ``j`` of ``n`` lies at ``(j + 0.5)·n'/n − 0.5`` on the
        grid of ``n'`` voxels) and the cube of ``size`` voxels starting at ``round(c) − size // 2`` around
        the resampled mask's centre ``c``. The map is read there by linear interpolation, 0 outside the cube.
        """
        from scipy.ndimage import map_coordinates

        from medlens.deploy.predict_volume import voi_box
        from medlens.preprocess.geometry import center_of_mass_voxel, resample

        params = {"spacing": 1.0, "size": 32, **self.bundle.config.data.params}
        target, size = float(params["spacing"]), int(params["size"])
        box = voi_box(mask)
        lesion, _ = resample(mask[box].astype(np.float32), spacing, (target,) * 3, order=0)
        centre = center_of_mass_voxel(lesion > 0.5)
        axes = [(np.arange(n) + 0.5) * m / n - 0.5 - (round(c) - size // 2)
                for n, m, c in zip(mask[box].shape, lesion.shape, centre)]
        coords = np.stack(np.meshgrid(*axes, indexing="ij"))
        out = np.zeros(mask.shape, np.float32)
        out[box] = map_coordinates(np.asarray(cube_map, np.float32), coords, order=1, mode="constant", cval=0.0)
        return out


# --------------------------------------------------------------------------------------------------
# Segmenter bundles
# --------------------------------------------------------------------------------------------------
class ServedSegmenter:
    """A bundle of ``medlens segment train``: a 2D or 3D segmentation network and its plan."""

    kind = "segmenter"

    def __init__(self, name: str, path: Path):
        from medlens.deploy.bundle import load_bundle

        self.name, self.path = name, path
        loaded = load_bundle(path, kind="segmenter")
        self.model, self.plan, self.history = loaded.model, loaded.plan, loaded.history
        fingerprint = self.plan.fingerprint
        self.dims, self.channels = int(fingerprint.dims), int(fingerprint.channels)
        self.n_classes = int(self.plan.dataset.n_classes)
        self.modality = str(fingerprint.modality or "OT")

    def labels(self) -> list[str]:
        if self.n_classes == 2:
            return ["background", "foreground"]
        return ["background"] + [f"class {k}" for k in range(1, self.n_classes)]

    def describe(self) -> dict:
        network = self.plan.network
        return {
            "name": self.name, "kind": self.kind, "title": f"{network.name} segmentation ({self.dims}D)",
            "model": {"family": network.name, "id": self.path.name},
            "task": "segmentation", "labels": self.labels(), "threshold": None,
            "input": {"dims": self.dims, "channels": self.channels, "modality": self.modality,
                      "reads": ["PNG", "JPEG", "BMP", "TIFF", "NIfTI"] if self.dims == 2
                      else ["DICOM series (zip or files)", "NIfTI"]},
            "explain": False, "outline": True,
            "dataset": Path(self.plan.dataset.path or "").name or None, "metrics": self._metrics(),
        }

    def _history(self) -> dict:
        return {} if self.history is None else asdict(self.history)

    def _metrics(self) -> dict:
        history = self._history()
        scores, best = history.get("val_score") or [], history.get("best_epoch", -1)
        return {"validation Dice (best epoch)": scores[best]} if scores and 0 <= best < len(scores) else {}

    def card(self) -> str:
        """A model card from the plan and the training history (nothing that is not in them)."""
        from medlens.report.model_card import render_model_card

        plan, history = self.plan.to_dict(), self._history()
        fingerprint, network, training = plan["fingerprint"], plan["network"], plan["training"]
        card = {
            "title": f"Model card: {self.name} ({network['name']} segmentation, {self.dims}D)",
            "model": f"medlens `{network['name']}` segmentation network, depth {network['depth']}, "
                     f"{network.get('channels', 16)} base channels, {self.channels} input channel(s), "
                     f"{self.n_classes} classes ({plan['dataset'].get('mask_mode', 'binary')} masks), patch "
                     f"{plan['patch_size']}, target spacing {plan['target_spacing']} mm.",
            "data": {"name": Path(plan["dataset"].get("path", "")).name or None,
                     "dataset id": plan["dataset"].get("dataset_id"), "n_samples": fingerprint.get("n_cases"),
                     "modality": self.modality,
                     "cases with foreground": fingerprint.get("cases_with_foreground")},
            "metrics": self._metrics() or None,
            "limitations": [
                "Validation Dice (when present) is measured on the cases that chose the kept epoch; it is "
                "optimistic. Evaluate on held-out data with `medlens segment evaluate`.",
                "Trained on one public dataset; not validated on other scanners, sites or populations.",
                f"Inputs are prepared by the plan ({plan['normalization'].get('scheme')} intensities, resampled to "
                "the target spacing); an image unlike the training data gets no warning from the network.",
            ],
            "extra": {"Training": f"{training.get('epochs')} epochs of {training.get('steps_per_epoch')} steps "
                                  f"({history.get('steps', 'n/a')} optimiser steps taken), loss {plan.get('loss')}, "
                                  f"seed {training.get('seed')}; no held-out evaluation is recorded in the bundle."},
        }
        return render_model_card(card)

    def threads_for(self, jobs: list[Job]) -> int | None:
        return None

    def prepare(self, upload: Upload, options: Options, workspace: Workspace) -> Job:
        from medlens.segment.io import read_image

        _refuse_npz_for_volumes(upload, "segmenters read pictures, NIfTI and DICOM")
        if self.dims == 2 and upload.volume:
            raise RequestError(422, f"{upload.name}: this segmenter takes 2D images; the upload is a volume of "
                                    f"shape {tuple(upload.shape)}")
        if self.dims == 3 and not upload.volume:
            raise RequestError(422, f"{upload.name}: this segmenter takes volumes; the upload is a 2D image")
        image = read_image(upload.path)
        if image.array.ndim - 1 == 3 and self.dims == 2 and image.array.shape[1] == 1:
            image = type(image)(image.array[:, 0], image.spacing[1:], meta=image.meta)  # a single DICOM slice
        if image.array.ndim - 1 != self.dims:
            raise RequestError(422, f"{upload.name}: a {image.array.ndim - 1}D image; this segmenter takes "
                                    f"{self.dims}D images")
        if image.array.shape[0] != self.channels:
            raise RequestError(422, f"{upload.name}: {image.array.shape[0]} channel(s); this segmenter was "
                                    f"trained on {self.channels}")
        return Job(upload, options, image=image, notes=list(upload.notes))

    def run(self, jobs: list[Job]) -> list[Job]:
        """One mask per job (images of different sizes: one sliding-window pass each)."""
        from medlens.segment.infer import segment_image

        for job in jobs:
            try:
                job.mask = segment_image(self.model, self.plan, job.image)
            except MedlensError as exc:
                job.notes.append(f"segmentation failed: {exc}")
        return jobs

    def answer(self, job: Job, workspace: Workspace) -> dict:
        """Per class: voxels and their area (2D, mm²) or volume (3D, mm³); instance counts in instance mode;
        the outline picture through the slice with most foreground, and the viewer's arrays, when asked."""
        if job.mask is None:
            raise RequestError(422, job.notes[-1] if job.notes else "segmentation failed")
        mask, image = job.mask, job.image
        unit = float(np.prod(image.spacing))
        measure = "volume_mm3" if self.dims == 3 else "area_mm2"
        counts = np.bincount(mask.ravel(), minlength=self.n_classes)
        rows = [{"path": job.upload.name, "class": k, "label": self.labels()[k], "voxels": int(counts[k]),
                 measure: float(counts[k] * unit), "error": None} for k in range(1, self.n_classes)]
        out = {"bundle": self.name, "kind": self.kind, "file": job.upload.name, "format": job.upload.format,
               "labels": self.labels(), "threshold": None, "rows": rows}
        if self.plan.dataset.mask_mode == "instance":
            from medlens.segment.instances import labels_from_prediction

            instances = self.plan.inference.instances
            out["instances"] = int(labels_from_prediction(mask, None if instances is None else
                                                          instances.model_dump()).max())
        volume = mask if self.dims == 3 else mask[None]
        pixels = image.array[0] if self.dims == 3 else image.array.mean(axis=0)[None]
        z = largest_slice(volume)
        if job.options.outline:
            gray = _hu_gray(pixels[z]) if self.modality == "CT" else as_uint8(pixels[z]) / 255.0
            out["images"] = [{"index": 0, "slice": z, "outline": png_data_url(outline_png(gray, volume[z]))}]
        if job.options.view:
            labels = {k: self.labels()[k] for k in range(1, self.n_classes)}
            if self.modality == "CT":
                out["view"] = _volume_view(pixels, (1.0, *image.spacing[-2:]) if self.dims == 2 else image.spacing,
                                           volume, None, labels)
                out["view"]["kind"] = "volume" if self.dims == 3 else "images"
            else:  # (N, C, H, W): one 2D image, or the slices of a volume
                stack = image.array[None] if self.dims == 2 else np.moveaxis(image.array, 0, 1)
                out["view"] = _picture_view(stack, mask=volume)
                out["view"]["kind"] = "volume" if self.dims == 3 else "images"
                out["view"]["mask_labels"] = {str(k): v for k, v in labels.items()}
        out["notes"] = job.notes
        return out
