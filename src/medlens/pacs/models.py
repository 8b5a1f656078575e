"""The one place where the PACS workflow uses trained bundles: load them, segment a series, classify lesions.

Everything else in :mod:`medlens.pacs` sees bundles only through this module, built on the public functions
of today's bundle formats:

=====================  ==============================================================================
classifier bundles     :func:`medlens.deploy.classifier.load_classifier` (format 2, ``checksums.sha256``);
                       lesions classified by :func:`medlens.deploy.predict.predict_files` with a
                       :class:`medlens.deploy.predict_volume.LesionSelection` (the rows of ``medlens
                       predict``); what the model reads from ``capabilities.inputs``
segmenter bundles      :func:`medlens.deploy.bundle.load_bundle` (kind ``segmenter``); masks by
                       :func:`medlens.segment.infer.segment_image`
=====================  ==============================================================================

When the bundle formats change, this module is the one to re-point.

A bundle's identity, written into every DICOM object made from it, is its folder name, its kind and a
**digest**: SHA-256 over the sorted lines ``<relative path> <sha256 of the file>`` of every file in the
folder (hidden files excepted), so that any changed byte of any file changes it; a user recomputes it with
:func:`bundle_digest`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import medlens
from medlens.errors import ConfigError, MedlensError
from medlens.image import MedImage
from medlens.pacs.lesions import Lesion

CLASSIFIER = "classifier"
SEGMENTER = "segmenter"


def bundle_digest(folder: Path) -> str:
    """SHA-256 (hex) of a bundle folder's files (module docstring)."""
    from medlens.deploy.bundle import sha256

    files = sorted(p for p in Path(folder).rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    lines = "".join(f"{p.relative_to(folder).as_posix()} {sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """Who made a result: the bundle (name, kind, digest, model id) and the medlens that ran it."""

    name: str
    kind: str
    digest: str
    model_id: str
    trained_with: str | None
    medlens_version: str = medlens.__version__

    def parameters(self) -> list[str]:
        """Text lines identifying the bundle (DICOM Algorithm Parameters)."""
        lines = [f"bundle={self.name}", f"bundle_kind={self.kind}", f"model={self.model_id}",
                 f"bundle_sha256={self.digest}"]
        if self.trained_with:
            lines.append(f"trained_with_medlens={self.trained_with}")
        return lines


@dataclass
class Classifier:
    """A lesion classifier bundle (a 3D bundle trained on lesion cubes)."""

    identity: ModelIdentity
    bundle: Any
    labels: list[str]
    threshold: float
    threshold_rule: str
    modality: str | None
    needs_mask: bool


@dataclass
class Segmenter:
    """A segmentation bundle."""

    identity: ModelIdentity
    model: Any
    plan: dict[str, Any]
    class_names: list[str] | None
    modality: str | None


@dataclass
class Prediction:
    """A classifier's answer for one lesion."""

    probabilities: dict[str, float]
    label: str
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path) -> Classifier | Segmenter:
    """Load a segmenter bundle (``medlens segment train``) or a classifier bundle (``medlens train``), by the
    bundle's kind (:func:`medlens.deploy.bundle.bundle_kind`); any other kind is refused, named."""
    from medlens.deploy.bundle import bundle_kind

    folder = Path(path)
    kind = bundle_kind(folder)
    loaders = {"segmenter": _load_segmenter, "classifier": _load_classifier}
    if kind not in loaders:
        raise ConfigError(f"{folder}: a {kind} bundle; a PACS run takes classifier and segmenter bundles")
    return loaders[kind](folder)


def _load_classifier(folder: Path) -> Classifier:
    from medlens.deploy.classifier import load_classifier
    from medlens.deploy.predict import input_kind

    bundle = load_classifier(folder)
    if input_kind(bundle) != "ct-lesions":
        raise ConfigError(f"{folder}: a PACS series needs a 3D lesion bundle (trained on CT lesion cubes); this one "
                          f"reads {input_kind(bundle)} of shape {bundle.image_shape}")
    manifest = bundle.manifest
    identity = ModelIdentity(folder.name, CLASSIFIER, bundle_digest(folder), manifest["model"]["id"],
                             manifest.get("medlens_version"))
    # a model that reads tabular features of the lesion gets them measured on its mask (predict_volume)
    needs_mask = "features" in bundle.capabilities.inputs
    rule = manifest.get("training", {}).get("operating_point") or "fixed threshold"
    return Classifier(identity, bundle, bundle.labels, bundle.threshold, rule, "CT", needs_mask)


def _load_segmenter(folder: Path) -> Segmenter:
    from medlens.segment.bundle import load_segmenter

    model, plan = load_segmenter(folder)
    if plan.dims != 3:
        raise ConfigError(f"{folder}: a {plan.dims}D segmentation bundle; a PACS series needs a 3D one")
    identity = ModelIdentity(folder.name, SEGMENTER, bundle_digest(folder), plan.network.name,
                             None)
    modality = plan.fingerprint.modality
    return Segmenter(identity, model, plan, None, modality if modality not in (None, "", "OT") else None)


def parse_position(text: str) -> tuple[float, float, float]:
    """A lesion position ``"z,y,x"`` (voxels) as ``medlens predict --at`` reads it."""
    from medlens.deploy.predict_volume import parse_position as parse

    return parse(text)


def segment(segmenter: Segmenter, image: MedImage) -> np.ndarray:
    """The segmenter's label map ``(D, H, W)`` (uint8, 0 = background) of a series, in its own geometry."""
    from medlens.segment.infer import segment_image

    labels = segment_image(segmenter.model, segmenter.plan, image)
    return labels.astype(np.uint8 if labels.max() < 256 else np.uint16)


def classify(classifier: Classifier, series: Path, lesions: list[Lesion], workdir: Path) -> list[Prediction]:
    """The classifier's prediction for each lesion of a series folder, prepared as in training.

    A lesion with a mask is given to the bundle as a mask file (written into ``workdir``), one without as
    its voxel position; a bundle that needs a mask (radiomic features) refuses a lesion without one.
    """
    from medlens.deploy.predict import predict_files
    from medlens.deploy.predict_volume import LesionSelection

    predictions = []
    for lesion in lesions:
        if lesion.mask is None and classifier.needs_mask:
            raise MedlensError(f"{classifier.identity.name}: this bundle measures the lesion's mask (radiomic "
                               "features); a position alone (--at) is not enough: give a segmentation bundle too")
        if lesion.mask is not None:
            mask_file = workdir / f"lesion-{lesion.number}.npy"
            np.save(mask_file, lesion.mask)
            selection = LesionSelection(mask=mask_file)
        else:
            selection = LesionSelection(at=lesion.centre_voxel)
        table, _ = predict_files(classifier.bundle, [series], selection=selection)
        row = table.iloc[0]
        if pd.notna(row["error"]):
            raise MedlensError(f"lesion {lesion.number}: {row['error']}")
        probabilities = {label: float(row[f"p_{label}"]) for label in classifier.labels}
        predictions.append(Prediction(probabilities, str(row["label"]), float(row["threshold"])))
    return predictions
