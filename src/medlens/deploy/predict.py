"""Apply a classifier bundle to image files: read, prepare like training, predict, one table row per image.

How a file becomes model-ready samples depends on the builder that made the training data (the bundle
config's ``data.builder``), looked up in :data:`INPUT_PREPARERS`:

* ``medmnist`` bundles take pictures (PNG, JPEG, BMP, TIFF; 2D bundles only) and ``.npz`` archives (every
  image of ``test_images``, else ``images``; ``(N, H, W)`` images or ``(N, D, H, W)`` volumes). Each is
  brought to the bundle's layout the way the builder prepared the training data: pixels scaled to [0, 1]
  by their **declared range** (:func:`scale_pixels`: integer types by their type's maximum, ``x / 255``
  for 8-bit; floating-point values must already lie in [0, 1] and are refused otherwise, because their
  range cannot be known), colour averaged to grayscale when the model takes one channel, and resized to the
  training size (scikit-image ``resize``, linear interpolation with anti-aliasing).
* ``lidc_nodules`` bundles take CT volumes with a lesion selection (:mod:`medlens.deploy.predict_volume`):
  one row per lesion.

An image holding NaN or infinite values is refused in its row. Every image is compared with the profile of
the training images the bundle recorded (:mod:`medlens.deploy.input_profile`): one unlike them gets the
reason in its ``out_of_distribution`` column, and, with ``strict``, is refused. A file that cannot be read
gets its error in its row; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from medlens.data.dataset import ArrayDataset
from medlens.deploy.classifier import ClassifierBundle as Bundle
from medlens.deploy.input_profile import check_inputs
from medlens.errors import MedlensError, UnreadableFileError
from medlens.deploy.predict_volume import LesionSelection

ID_COLUMNS = ("patient_id", "patient_pseudonym", "series_uid")
BATCH_IMAGES = 256
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NPZ_KEYS = ("test_images", "images")


@dataclass
class Prepared:
    """The images of one input file, ready for the model, or the reason they are not."""

    path: Path
    images: np.ndarray | None = None  # (n, C, H, W) float32
    error: str | None = None
    index: list[int] = field(default_factory=list)
    features: list[dict[str, float] | None] | None = None
    """Per image, tabular features measured with the input (lesion mask radiomics), if any."""
    rois: list[str] | None = None
    """Per image, what selected it within the file (volumes: the lesion)."""
    ids: dict[str, str | None] = field(default_factory=dict)
    """Ids read from the file (DICOM: ``patient_id``, ``series_uid``)."""
    channels: int | None = None
    """The file's own channel count, before it was brought to the bundle's."""
    modality: str | None = None
    """The modality the file declares (DICOM ``Modality``), if any."""


def scale_pixels(array: np.ndarray, source: str | Path = "input") -> np.ndarray:
    """Pixels scaled to [0, 1] by their declared range.

    Integers are divided by their type's maximum (``x / 255`` for uint8, ``x / 65535`` for uint16); booleans
    become 0 and 1; floating-point values are taken as already in [0, 1]. A float image with values outside
    [0, 1] (e.g. 0–255 stored as float64) or holding NaN or infinite values is refused: its range cannot be
    known, and guessing it gives a confident wrong answer.
    """
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    if not np.issubdtype(array.dtype, np.floating):
        raise UnreadableFileError(source, f"pixels of type {array.dtype} are not numbers")
    if not np.isfinite(array).all():
        raise UnreadableFileError(source, "the image holds NaN or infinite values; refusing to predict on it")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise UnreadableFileError(source, f"floating-point pixels range over [{low:g}, {high:g}]: a float image "
                                          "must already be scaled to [0, 1] (its range cannot be known); store it "
                                          "as integers (e.g. uint8 PNG or npz) or scale it to [0, 1]")
    return array.astype(np.float32)


def fit_layout(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One ``(C, ...)`` image or volume brought to the bundle's ``(C', ...)``: grayscale by channel mean when
    ``C' = 1``, grayscale replicated when ``C = 1 < C'``, then resized to the bundle's spatial size."""
    from skimage.transform import resize

    channels, size = shape[0], tuple(shape[1:])
    if image.shape[0] != channels:
        if channels == 1:
            image = image.mean(axis=0, keepdims=True)
        elif image.shape[0] == 1:
            image = np.repeat(image, channels, axis=0)
        else:
            raise ValueError(f"has {image.shape[0]} channels, the model takes {channels}")
    if image.shape[1:] != size:
        image = resize(image, (channels, *size), order=1, anti_aliasing=True, preserve_range=True)
    return image.astype(np.float32)


def _picture(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    from medlens.data.readers.pictures import read_picture

    if len(shape) != 3:
        raise UnreadableFileError(path, f"this bundle takes {len(shape) - 1}D volumes of shape {tuple(shape)}; "
                                        "a picture is 2D (give the volumes as an .npz archive)")
    array = read_picture(path).array
    if array.ndim != 3:
        raise UnreadableFileError(path, f"expected a 2D picture, got array shape {array.shape}")
    return fit_layout(scale_pixels(array, path), shape)[None], int(array.shape[0])


def _npz(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    from medlens.data.readers.npz import open_npz

    with open_npz(path) as archive:  # size limits from the headers, no pickle, named errors
        key = next((k for k in NPZ_KEYS if k in archive), None)
        if key is None:
            raise UnreadableFileError(path, f"archive has none of the keys {', '.join(NPZ_KEYS)} "
                                            f"(found {', '.join(archive.files) or 'nothing'})")
        stack = archive.read(key)
    spatial = len(shape) - 1
    if stack.ndim == spatial + 1:  # (N, H, W) grayscale images or (N, D, H, W) grayscale volumes
        stack = stack[:, None]
    elif spatial == 2 and stack.ndim == 4 and stack.shape[-1] in (3, 4) and stack.shape[1] not in (1, 3):
        stack = np.moveaxis(stack[..., :3], -1, 1)  # (N, H, W, C) colour images
    if stack.ndim != spatial + 2 or len(stack) == 0:
        wanted = "(N, H, W) or (N, H, W, C) images" if spatial == 2 else "(N, D, H, W) volumes"
        raise UnreadableFileError(path, f"'{key}' must hold {wanted} for this bundle, got {stack.shape}")
    scaled = scale_pixels(stack, path)
    return np.stack([fit_layout(image, shape) for image in scaled]), int(stack.shape[1])


def prepare_file(path: str | Path, shape: tuple[int, ...]) -> Prepared:
    """Read one picture or ``.npz`` file into model-ready images of per-sample ``shape`` (``(C, H, W)`` or
    ``(C, D, H, W)``); errors are kept, not raised."""
    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix == ".npz":
            images, channels = _npz(path, shape)
        elif suffix in PICTURE_SUFFIXES:
            images, channels = _picture(path, shape)
        else:
            raise UnreadableFileError(path, f"unsupported input type {suffix or '(no suffix)'}; "
                                            f"use {', '.join(PICTURE_SUFFIXES)} or .npz")
    except (MedlensError, ValueError) as exc:
        message = str(exc) if isinstance(exc, MedlensError) else f"{path}: {exc}"
        return Prepared(path, error=message)
    return Prepared(path, images=images, index=list(range(len(images))), channels=channels)


def _prepare_medmnist(path: Path, bundle: Bundle, selection: LesionSelection | None) -> Prepared:
    return prepare_file(path, bundle.image_shape)


def _prepare_lesions(path: Path, bundle: Bundle, selection: LesionSelection | None) -> Prepared:
    from medlens.deploy.predict_volume import lesion_inputs

    try:
        images, features, rois, ids = lesion_inputs(path, bundle.config, selection or LesionSelection())
    except MedlensError as exc:
        return Prepared(path, error=str(exc))
    return Prepared(path, images=images, index=list(range(len(images))), features=features, rois=rois, ids=ids,
                    modality=ids.get("modality"))


#: How a raw file becomes model-ready samples, by the builder that made the bundle's training data.
INPUT_PREPARERS = {"medmnist": _prepare_medmnist, "lidc_nodules": _prepare_lesions}
#: What raw files a bundle reads, by that builder: ``images`` (pictures and npz archives of images or volumes)
#: or ``ct-lesions`` (CT volumes, DICOM or NIfTI, and a lesion selection).
INPUT_KINDS = {"medmnist": "images", "lidc_nodules": "ct-lesions"}


def input_kind(bundle: Bundle) -> str:
    """What raw files ``bundle`` reads (:data:`INPUT_KINDS`)."""
    return INPUT_KINDS.get(bundle.config.data.builder, "images")


def prepare_input(path: str | Path, bundle: Bundle, selection: LesionSelection | None = None) -> Prepared:
    """The model-ready samples of one input file, prepared as the bundle's builder prepared its training data."""
    builder = bundle.config.data.builder
    if builder not in INPUT_PREPARERS:
        return Prepared(Path(path), error=f"{path}: medlens cannot prepare raw files for a bundle trained on "
                                          f"builder {builder!r} data (it can for {', '.join(INPUT_PREPARERS)})")
    return INPUT_PREPARERS[builder](Path(path), bundle, selection)


def prepared_dataset(bundle: Bundle, images: np.ndarray, features: list[dict[str, float] | None] | None = None
                     ) -> ArrayDataset:
    """Model-ready ``images`` ``(N, C, ...)`` and the per-image ``features`` measured with the input (lesion
    radiomics) as the dataset the bundle's pipeline reads, with the training data's channel names."""
    meta = {"labels": bundle.labels, "channels": bundle.manifest["data"].get("channels") or []}
    table = None
    if features is not None and all(f is not None for f in features):
        table = pd.DataFrame(features)
        meta["feature_names"] = list(table.columns)
    return ArrayDataset(images=images.astype(np.float32), labels=np.zeros(len(images), dtype=np.int64),
                        features=None if table is None else table.to_numpy(np.float32), meta=meta)


def predict_images(bundle: Bundle, images: np.ndarray, features: list[dict[str, float] | None] | None = None
                   ) -> np.ndarray:
    """``(N, K)`` class probabilities of model-ready ``images`` ``(N, C, ...)``.

    The bundle's pipeline prepares its model's inputs as in training (:mod:`medlens.models.pipeline`: e.g. the
    Gabor statistics), after the per-image ``features`` measured with the input (lesion radiomics); a
    feature the model selects but the input cannot give (e.g. the readers' diameter) is an error.
    """
    return bundle.predict_proba(prepared_dataset(bundle, images, features))


def decide(proba: np.ndarray, threshold: float) -> np.ndarray:
    """Class index per row: binary ``1`` when ``p_1 >= threshold``, else the arg-max."""
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(int)
    return proba.argmax(axis=1)


def iter_prepared(bundle: Bundle, inputs: list[str | Path], selection: LesionSelection | None = None
                  ) -> Iterator[Prepared]:
    """:func:`prepare_input` over ``inputs`` in order."""
    for path in inputs:
        yield prepare_input(path, bundle, selection)


def _ids(item: Prepared, keep_identifiers: bool) -> dict[str, str | None]:
    """The id columns of a file's rows: the DICOM PatientID only when kept, always its keyed pseudonym
    (:func:`medlens.data.identifiers.pseudonym`), and the series UID."""
    from medlens.data.identifiers import pseudonym

    patient = item.ids.get("patient_id")
    return {"patient_id": patient if keep_identifiers else None, "patient_pseudonym": pseudonym(patient),
            "series_uid": item.ids.get("series_uid")}


def rows_for(bundle: Bundle, item: Prepared, proba: np.ndarray | None, strict: bool = False,
             keep_identifiers: bool = False) -> list[dict]:
    """The output rows of one input file: one per image, or one error row.

    Each image's ``out_of_distribution`` column holds why it looks unlike the training images, or is empty
    (:func:`medlens.deploy.input_profile.check_inputs`); with ``strict`` such an image is refused (its
    probabilities and label left empty, the reason in its error column). The DICOM PatientID is written only
    with ``keep_identifiers`` (:func:`_ids`)."""
    names = bundle.labels
    if item.error is not None:
        return [{"path": str(item.path), "index": None, **{key: None for key in ID_COLUMNS}, "roi": None,
                 **{f"p_{n}": None for n in names}, "label": None, "threshold": bundle.threshold,
                 "out_of_distribution": None, "error": item.error}]
    chosen = decide(proba, bundle.threshold)
    unusual = check_inputs(bundle.input_profile, item.images, item.channels, item.modality)
    rows, ids = [], _ids(item, keep_identifiers)
    for i in item.index:
        refused = strict and unusual[i] is not None
        rows.append({"path": str(item.path), "index": i, **ids,
                     "roi": item.rois[i] if item.rois else None,
                     **{f"p_{n}": None if refused else float(proba[i, c]) for c, n in enumerate(names)},
                     "label": None if refused else names[chosen[i]], "threshold": bundle.threshold,
                     "out_of_distribution": unusual[i],
                     "error": f"{item.path}[{i}]: refused under --strict: {unusual[i]}" if refused else None})
    return rows


def _predict_batch(bundle: Bundle, batch: list[Prepared], strict: bool = False,
                   keep_identifiers: bool = False) -> list[list[dict]]:
    """Rows of each prepared file of ``batch``, its images predicted in one call; if that call fails,
    file by file, so that one bad file gets its error and the others their predictions."""
    ready = [item for item in batch if item.error is None]
    probas: dict[int, np.ndarray] = {}
    if ready:
        features = [f for item in ready for f in (item.features or [None] * len(item.images))]
        try:
            joined = predict_images(bundle, np.concatenate([item.images for item in ready]), features)
            bounds = np.cumsum([0] + [len(item.images) for item in ready])
            probas = {id(item): joined[lo:hi] for item, lo, hi in zip(ready, bounds[:-1], bounds[1:])}
        except MedlensError:
            probas = {}
    out = []
    for item in batch:
        proba = probas.get(id(item))
        if item.error is None and proba is None:
            try:
                proba = predict_images(bundle, item.images, item.features)
            except MedlensError as exc:
                item.error = f"{item.path}: {exc}"
        if proba is not None and not np.isfinite(proba).all():
            item.error = f"{item.path}: the model gave non-finite probabilities (NaN or infinite); no answer"
        out.append(rows_for(bundle, item, proba, strict, keep_identifiers))
    return out


def predict_files(bundle: Bundle, inputs: list[str | Path], advance=None, selection: LesionSelection | None = None,
                  batch_size: int = BATCH_IMAGES, strict: bool = False, keep_identifiers: bool = False
                  ) -> tuple[pd.DataFrame, list[Prepared]]:
    """Predict every image of ``inputs``.

    Files are read one at a time and their images predicted in batches of about ``batch_size`` images
    across files (many small PNGs cost one model call per batch, not per file). Returns the table (path,
    index, patient_id, patient_pseudonym, series_uid, roi, ``p_<label>``..., label, threshold,
    out_of_distribution, error; rows in input order) and the prepared inputs (for explanations).
    ``advance()`` is called per file;
    ``selection`` finds the lesions in volumes for 3D lesion bundles; ``strict`` refuses inputs unlike the
    training images and ``keep_identifiers`` writes the DICOM PatientID (:func:`rows_for`).
    """
    rows, prepared, batch, pending = [], [], [], 0
    for item in iter_prepared(bundle, inputs, selection):
        batch.append(item)
        prepared.append(item)
        pending += len(item.images) if item.error is None else 0
        if pending >= batch_size:
            rows.extend(r for file_rows in _predict_batch(bundle, batch, strict, keep_identifiers) for r in file_rows)
            batch, pending = [], 0
        if advance is not None:
            advance()
    if batch:
        rows.extend(r for file_rows in _predict_batch(bundle, batch, strict, keep_identifiers) for r in file_rows)
    return pd.DataFrame(rows), prepared
