"""Apply a bundle to image files: read, prepare like training, predict, one table row per image.

3D lesion bundles take CT volumes with a lesion selection instead (:mod:`medlens.deploy.predict_volume`):
one row per lesion.

2D bundles (MedMNIST-style) take pictures (PNG, JPEG, BMP, TIFF) and ``.npz`` archives (every image of
``test_images``, else ``images``). Each image is brought to the bundle's layout the way the
``medmnist`` builder prepared the training data: integer pixels scaled by their type's maximum
(``x / 255`` for 8-bit), colour averaged to grayscale when the model takes one channel, and resized
to the training height × width (scikit-image ``resize``, linear interpolation with anti-aliasing).
A file that cannot be read gets its error in its row; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from medlens.deploy.bundle import Bundle
from medlens.data.dataset import ArrayDataset
from medlens.errors import MedlensError, UnreadableFileError
from medlens.deploy.predict_volume import LesionSelection

ID_COLUMNS = ("patient_id", "series_uid")
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


def scale_pixels(array: np.ndarray) -> np.ndarray:
    """Integer pixels divided by their type's maximum (``x / 255`` for uint8); floats kept as they are."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float32)


def fit_layout(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One ``(C, H, W)`` image brought to the bundle's ``(C', H', W')``: grayscale by channel mean when
    ``C' = 1``, grayscale replicated when ``C = 1 < C'``, then resized to ``H' × W'``."""
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


def _picture(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from medlens.data.readers.pictures import read_picture

    array = read_picture(path).array
    if array.ndim != 3:
        raise UnreadableFileError(path, f"expected a 2D picture, got array shape {array.shape}")
    return fit_layout(scale_pixels(array), shape)[None]


def _npz(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in NPZ_KEYS if k in archive.files), None)
            if key is None:
                raise UnreadableFileError(path, f"archive has none of the keys {', '.join(NPZ_KEYS)} "
                                                f"(found {', '.join(archive.files) or 'nothing'})")
            stack = archive[key]
    except (OSError, ValueError, EOFError) as exc:
        raise UnreadableFileError(path, f"not a readable .npz archive ({exc})") from exc
    if stack.ndim == 3:  # (N, H, W) grayscale
        stack = stack[:, None]
    elif stack.ndim == 4 and stack.shape[-1] in (3, 4) and stack.shape[1] not in (1, 3):  # (N, H, W, C)
        stack = np.moveaxis(stack[..., :3], -1, 1)
    if stack.ndim != 4 or len(stack) == 0:
        raise UnreadableFileError(path, f"'{key}' must hold (N, H, W) or (N, H, W, C) images, got {stack.shape}")
    scaled = scale_pixels(stack)
    return np.stack([fit_layout(image, shape) for image in scaled])


def prepare_file(path: str | Path, shape: tuple[int, ...]) -> Prepared:
    """Read one input file into model-ready images of per-sample ``shape``; errors are kept, not raised."""
    path = Path(path)
    try:
        if len(shape) != 3:
            raise MedlensError(f"{path}: this bundle takes {len(shape) - 1}D images of shape {tuple(shape)}; "
                               "only 2D bundles read picture and .npz inputs")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            images = _npz(path, shape)
        elif suffix in PICTURE_SUFFIXES:
            images = _picture(path, shape)
        else:
            raise UnreadableFileError(path, f"unsupported input type {suffix or '(no suffix)'}; "
                                            f"use {', '.join(PICTURE_SUFFIXES)} or .npz")
    except (MedlensError, ValueError) as exc:
        message = str(exc) if isinstance(exc, MedlensError) else f"{path}: {exc}"
        return Prepared(path, error=message)
    return Prepared(path, images=images, index=list(range(len(images))))


def prepare_input(path: str | Path, bundle: Bundle, selection: LesionSelection | None = None) -> Prepared:
    """:func:`prepare_file` for 2D bundles; for 3D lesion bundles the lesion cubes of a CT volume."""
    path = Path(path)
    if len(bundle.image_shape) == 3:
        return prepare_file(path, bundle.image_shape)
    from medlens.deploy.predict_volume import lesion_inputs

    try:
        images, features, rois, ids = lesion_inputs(path, bundle.config, selection or LesionSelection())
    except MedlensError as exc:
        return Prepared(path, error=str(exc))
    return Prepared(path, images=images, index=list(range(len(images))), features=features, rois=rois, ids=ids)


def predict_images(bundle: Bundle, images: np.ndarray, features: list[dict[str, float] | None] | None = None
                   ) -> np.ndarray:
    """``(N, K)`` class probabilities of model-ready ``images`` ``(N, C, ...)``.

    Models on tabular features get the Gabor statistics of the bundle's config computed here, as
    in training, after the per-image ``features`` measured with the input (lesion radiomics); a
    feature the model selects but the input cannot give (e.g. the readers' diameter) is an error.
    """
    from medlens.study import add_gabor_features

    meta = {"labels": bundle.labels, "channels": bundle.manifest["data"].get("channels") or []}
    table = None
    if features is not None and all(f is not None for f in features):
        table = pd.DataFrame(features)
        meta["feature_names"] = list(table.columns)
    data = ArrayDataset(images=images.astype(np.float32), labels=np.zeros(len(images), dtype=np.int64),
                        features=None if table is None else table.to_numpy(np.float32), meta=meta)
    if bundle.manifest["model"]["name"] != "cnn":
        data = add_gabor_features(data, bundle.config)
    return bundle.predict_proba(data)


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


def rows_for(bundle: Bundle, item: Prepared, proba: np.ndarray | None) -> list[dict]:
    """The output rows of one input file: one per image, or one error row."""
    names = bundle.labels or [str(c) for c in range(bundle.model.n_classes_)]
    if item.error is not None:
        return [{"path": str(item.path), "index": None, **{key: None for key in ID_COLUMNS}, "roi": None,
                 **{f"p_{n}": None for n in names}, "label": None, "threshold": bundle.threshold,
                 "error": item.error}]
    chosen = decide(proba, bundle.threshold)
    return [{"path": str(item.path), "index": i, **{key: item.ids.get(key) for key in ID_COLUMNS},
             "roi": item.rois[i] if item.rois else None,
             **{f"p_{n}": float(proba[i, c]) for c, n in enumerate(names)},
             "label": names[chosen[i]], "threshold": bundle.threshold, "error": None} for i in item.index]


def _predict_batch(bundle: Bundle, batch: list[Prepared]) -> list[list[dict]]:
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
        out.append(rows_for(bundle, item, proba))
    return out


def predict_files(bundle: Bundle, inputs: list[str | Path], advance=None, selection: LesionSelection | None = None,
                  batch_size: int = BATCH_IMAGES) -> tuple[pd.DataFrame, list[Prepared]]:
    """Predict every image of ``inputs``.

    Files are read one at a time and their images predicted in batches of about ``batch_size`` images
    across files (many small PNGs cost one model call per batch, not per file). Returns the table (path,
    index, patient_id, series_uid, roi, ``p_<label>``..., label, threshold, error; rows in input order)
    and the prepared inputs (for explanations). ``advance()`` is called per file; ``selection`` finds
    the lesions in volumes for 3D lesion bundles.
    """
    rows, prepared, batch, pending = [], [], [], 0
    for item in iter_prepared(bundle, inputs, selection):
        batch.append(item)
        prepared.append(item)
        pending += len(item.images) if item.error is None else 0
        if pending >= batch_size:
            rows.extend(r for file_rows in _predict_batch(bundle, batch) for r in file_rows)
            batch, pending = [], 0
        if advance is not None:
            advance()
    if batch:
        rows.extend(r for file_rows in _predict_batch(bundle, batch) for r in file_rows)
    return pd.DataFrame(rows), prepared
