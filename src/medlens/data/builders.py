"""Dataset builders: turn a named set of files into an :class:`ArrayDataset` ready for a study.

A builder is looked up by name (``data.builder`` in a study config) and called with the dataset's
folder and the config's ``params``. Builders return images, labels, patient groups, dataset-intrinsic
tabular features (e.g. the radiologists' nodule diameter) and, where the data publishes one, the
official split of each sample in ``split``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from medlens.data.dataset import ArrayDataset, LazyImages
from medlens.errors import ConfigError, DatasetError

_BUILDERS: dict[str, Callable[..., ArrayDataset]] = {}


def register_builder(name: str) -> Callable[[Callable[..., ArrayDataset]], Callable[..., ArrayDataset]]:
    """Decorator: register a dataset builder under ``name``."""

    def decorate(builder: Callable[..., ArrayDataset]) -> Callable[..., ArrayDataset]:
        _BUILDERS[name] = builder
        return builder

    return decorate


def available() -> list[str]:
    """Sorted names of the registered builders."""
    return sorted(_BUILDERS)


def build_dataset(builder: str, root: Path, **params: Any) -> ArrayDataset:
    """Run builder ``builder`` on ``root``; bad parameter names raise :class:`ConfigError`."""
    if builder not in _BUILDERS:
        raise ConfigError(f"data.builder: unknown builder {builder!r}; available: {', '.join(available())}")
    try:
        return _BUILDERS[builder](root, **params)
    except TypeError as exc:
        raise ConfigError(f"data.params: {exc}") from exc


def _files_md5(paths: list[Path]) -> str:
    """One md5 over the md5s of ``paths`` in sorted order: the dataset checksum recorded in results."""
    digest = hashlib.md5()
    for path in sorted(paths):
        digest.update(hashlib.md5(path.read_bytes()).hexdigest().encode())
        digest.update(path.name.encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# MedMNIST
# --------------------------------------------------------------------------------------------------
@register_builder("medmnist")
def medmnist(root: Path, name: str | None = None, max_per_split: int | None = None) -> ArrayDataset:
    """All splits of a MedMNIST archive, pixels scaled to [0, 1], official split kept in ``split``.

    Parameters
    ----------
    root : Path
        The ``.npz`` file (as resolved from the catalogue).
    name : str, optional
        Catalogue name, used for label names; defaults to the file stem.
    max_per_split : int, optional
        Keep only the first ``max_per_split`` samples of each split (quick runs).
    """
    from medlens.data import catalog
    from medlens.data.readers.medmnist import load_medmnist

    info = catalog.get(name or root.stem)
    images, labels, split = [], [], []
    for part in ("train", "val", "test"):
        x, y = load_medmnist(root, part)
        if max_per_split is not None:
            x, y = x[:max_per_split], y[:max_per_split]
        images.append(x)
        labels.append(y.reshape(len(y), -1)[:, 0])
        split.extend([part] * len(y))
    return ArrayDataset(
        images=np.concatenate(images).astype(np.float32) / 255.0,
        labels=np.concatenate(labels),
        split=np.asarray(split),
        ids=np.array([f"{part}_{i}" for part, n in zip(("train", "val", "test"), map(len, labels))
                      for i in range(n)]),
        meta={
            "labels": list(info.labels),
            "source_md5": _files_md5([root]),
            "source": str(root),
            "dataset": info.name,
            "modality": info.modality,
        },
    )


# --------------------------------------------------------------------------------------------------
# LIDC-IDRI nodule volumes of interest
# --------------------------------------------------------------------------------------------------
LIDC_METADATA = "MetadatabyNoduleMaxVoting.csv"
#: The readers' semantic ratings of each nodule (columns of the metadata sheet): auxiliary targets, never inputs.
LIDC_SEMANTIC_RATINGS = ("Calcification_value", "InternalStructure_value", "Lobulation_value", "Margin_value",
                         "Sphericity_value", "Spiculation_value", "Subtlety_value", "Texture_value")


def lidc_malignancy_label(score: int) -> int | None:
    """Binary label from the radiologists' median malignancy score (NoduleMNIST3D's rule).

    1–2 → 0 (benign), 4–5 → 1 (malignant), 3 (indeterminate) → ``None`` (left out).
    """
    if score in (1, 2):
        return 0
    if score in (4, 5):
        return 1
    return None


def lidc_stems(table: pd.DataFrame) -> list[str]:
    """The VOI file stem ``<patient_id>_R_<nodule_id>`` of each row of the LIDC metadata sheet."""
    return [f"{p}_R_{n}" for p, n in zip(table["patient_id"], table["nodule_id"])]


#: The table of a set built from the archive by ``medlens data build lidc-idri`` (:mod:`medlens.data.lidc_build`).
LIDC_BUILT_TABLE = "lesions.csv"


def lidc_table(root: Path) -> tuple[Path, str]:
    """The nodule table of an LIDC folder and the suffix of its volumes.

    The shipped VOIs (``MetadatabyNoduleMaxVoting.csv``, ``.nii.gz``) or a set built from the archive
    (``lesions.csv``, uncompressed ``.nii`` that nibabel memory-maps); both tables name their columns alike.
    """
    if (root / LIDC_METADATA).is_file():
        return root / LIDC_METADATA, ".nii.gz"
    if (root / LIDC_BUILT_TABLE).is_file():
        return root / LIDC_BUILT_TABLE, ".nii"
    raise DatasetError(f"{root}: no {LIDC_METADATA} (the shipped VOIs) nor {LIDC_BUILT_TABLE} (a set built by "
                       "`medlens data build lidc-idri`); is this an LIDC nodule folder?")


class _CubeFile:
    """Cubes appended one at a time to a ``.npy`` file (plain writes: nothing stays mapped), read back memory-mapped."""

    def __init__(self, path: Path, n: int, shape: tuple[int, ...]):
        self.path, self.n, self.shape = Path(path), n, shape
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        self.handle = self.partial.open("wb")
        np.lib.format.write_array_header_1_0(
            self.handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                          "shape": (n, *shape)})
        self.written = 0

    def append(self, cube: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(cube, dtype=np.float32).tobytes())
        self.written += 1

    def close(self) -> LazyImages:
        self.handle.close()
        if self.written != self.n:
            self.partial.unlink(missing_ok=True)
            raise DatasetError(f"{self.path}: {self.written} of {self.n} cubes written")
        os.replace(self.partial, self.path)
        return LazyImages(self.path)


@register_builder("lidc_nodules")
def lidc_nodules(
    root: Path,
    spacing: float = 1.0,
    size: int = 32,
    window: str = "lung",
    mask_channel: bool = True,
    max_samples: int | None = None,
    seed: int = 0,
    images_file: str | None = None,
) -> ArrayDataset:
    """Benign-versus-malignant LIDC-IDRI nodules as isotropic HU cubes with their masks.

    Each nodule VOI (NIfTI, HU) and its mask are resampled to ``spacing`` mm isotropic (linear for
    the image, nearest for the mask), cropped or padded (air, −1000 HU) to ``size``³ around the mask's
    centre of mass, and windowed to [0, 1] with the ``window`` preset. Channel 0 is the windowed CT;
    channel 1 (if ``mask_channel``) the readers' nodule mask. Labels follow
    :func:`lidc_malignancy_label`; groups are patient ids.

    Tabular features: ``diameter_mm`` (the readers' diameter, from the metadata sheet) and radiomic
    shape and intensity features of the mask (:func:`medlens.preprocess.radiomics.mask_features`).
    Auxiliary targets (``aux``, training only): the readers' eight semantic ratings
    (:data:`LIDC_SEMANTIC_RATINGS`: calcification, internal structure, lobulation, margin, sphericity,
    spiculation, subtlety, texture).

    ``root`` is the shipped VOI folder or a set built by ``medlens data build lidc-idri`` (:func:`lidc_table`).
    With ``images_file`` (a ``.npy`` path) the cubes are written there one by one and ``images`` is that file,
    read on demand (:class:`~medlens.data.dataset.LazyImages`), so building the dataset holds one cube in memory
    whatever the number of nodules; without it ``images`` is an in-memory array (the default; the same values
    either way).
    """
    from medlens.data.readers import read_nifti
    from medlens.preprocess.voi import lesion_cube

    sheet, suffix = lidc_table(root)
    table = pd.read_csv(sheet)
    table["label"] = [lidc_malignancy_label(int(s)) for s in table["Malignancy_value"]]
    table["stem"] = lidc_stems(table)
    table = table[table["label"].notna()]
    table = table[[(root / "image" / f"{s}{suffix}").is_file() for s in table["stem"]]]
    if max_samples is not None and max_samples < len(table):
        table = table.sample(n=max_samples, random_state=seed).sort_index()
    if table.empty:
        raise DatasetError(f"{root}: no labelled nodule with an image file")

    target = (spacing,) * 3
    store = None if images_file is None else _CubeFile(Path(images_file), len(table),
                                                       (1 + int(mask_channel), size, size, size))
    cubes, names = None, None
    values = np.empty((0, 0))  # one row of features per nodule, in the order of the first nodule's names
    for i, row in enumerate(table.itertuples()):
        image = read_nifti(root / "image" / f"{row.stem}{suffix}")
        mask = read_nifti(root / "nodule_mask" / f"{row.stem}{suffix}")
        if image.shape != mask.shape:
            raise DatasetError(f"{root / 'nodule_mask' / row.stem}{suffix}: mask shape {mask.shape} "
                               f"differs from image shape {image.shape}")
        cube, features = lesion_cube(image.array[0], image.spacing, mask=mask.array[0] > 0,
                                     target_spacing=spacing, size=size, window=window,
                                     mask_channel=mask_channel, source=f"{root / 'nodule_mask' / row.stem}{suffix}")
        features["diameter_mm"] = float(row.diameter_mm)
        if names is None:
            names = list(features)
            values = np.empty((len(table), len(names)), np.float64)
        if list(features) != names:
            raise DatasetError(f"{root / 'image' / row.stem}{suffix}: features {sorted(features)} differ from "
                               f"the first nodule's {sorted(names)}")
        values[i] = [features[n] for n in names]
        if store is not None:
            store.append(cube)
        else:  # filled in place: no list of cubes beside the stacked array
            if cubes is None:
                cubes = np.empty((len(table), *cube.shape), cube.dtype)
            cubes[i] = cube

    files = [root / "image" / f"{stem}{suffix}" for stem in table["stem"]] + [sheet]
    return ArrayDataset(
        images=cubes if store is None else store.close(),
        labels=table["label"].to_numpy().astype(int),
        groups=table["patient_id"].to_numpy().astype(str),
        features=values.astype(np.float32),
        ids=table["stem"].to_numpy().astype(str),
        aux=table[list(LIDC_SEMANTIC_RATINGS)].to_numpy(np.float32),
        meta={
            "labels": ["benign", "malignant"],
            "feature_names": names,
            "aux_names": [c.removesuffix("_value").lower() for c in LIDC_SEMANTIC_RATINGS],
            "spacing": target,
            "channels": ["ct_" + window] + (["nodule_mask"] if mask_channel else []),
            "label_rule": "median malignancy 1-2 benign, 4-5 malignant, 3 left out",
            "source_md5": _files_md5(files),
            "source": str(root),
            "dataset": "lidc-nodule-vois",
            "modality": "CT",
        },
    )
