"""``medlens inspect``: what a medical image file, DICOM series or ``.npz`` archive holds."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rich.markup import escape

from medlens.commands._common import console, one_line, reports_errors
from medlens.data.identifiers import redact_identifiers
from medlens.data.readers.npz import open_npz
from medlens.data.readers._checks import count_non_finite
from medlens.errors import MissingPathError, UnreadableFileError
from medlens.image import MedImage

SPLITS = ("train", "val", "test")


def _finite_range(array: np.ndarray) -> tuple[float | None, float | None]:
    """Smallest and largest finite value (None, None when there is none)."""
    if np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        if not finite.size:
            return None, None
        return float(finite.min()), float(finite.max())
    return float(array.min()), float(array.max())


def describe_image(image: MedImage, keep_identifiers: bool = False) -> dict[str, Any]:
    """Shape, geometry, intensity range and ids of a loaded image, JSON-ready.

    ``shape`` and ``spacing`` are spatial, (z, y, x) for volumes and (y, x) for 2D images. ``min`` and
    ``max`` are over the finite values; ``non_finite`` counts NaN and infinite ones. ``rescale_slope`` and
    ``rescale_intercept`` are what the reader applied (a per-slice list when the slices differ). Patient
    identifiers are replaced by ``patient_pseudonym`` (:mod:`medlens.data.identifiers`) unless
    ``keep_identifiers``.
    """
    meta = image.meta
    units = "HU" if image.modality == "CT" and np.issubdtype(image.array.dtype, np.floating) else None
    low, high = _finite_range(image.array)
    summary: dict[str, Any] = {
        "path": meta.get("source"),
        "format": meta.get("format"),
        "shape": list(image.shape),
        "channels": int(image.array.shape[0]),
        "spacing": [round(s, 6) for s in image.spacing],
        "origin": [round(o, 6) for o in image.origin],
        "modality": image.modality,
        "dtype": str(image.array.dtype),
        "min": low,
        "max": high,
        "units": units,
        "n_slices": int(image.shape[0]) if len(image.shape) == 3 else 1,
        "non_finite": int(meta.get("non_finite_voxels", 0)),
    }
    for key in ("patient_id", "patient_name", "patient_birth_date", "study_uid", "series_uid",
                "series_description", "manufacturer", "kvp", "window_center", "window_width", "rescale_slope",
                "rescale_intercept", "padding_voxels", "n_files"):
        if meta.get(key) not in (None, ""):
            summary[key] = meta[key]
    return redact_identifiers(summary, keep=keep_identifiers)


def describe_npz(path: Path) -> dict[str, Any]:
    """Per-split image shapes and label counts of an ``.npz`` archive (MedMNIST layout or any keys).

    Keys named ``<split>_images``/``<split>_labels`` are grouped by split; other keys are listed
    with their shape. Label counts are given for label arrays of one value per sample.
    """
    with open_npz(path) as archive:
        arrays = {key: archive.read(key) for key in archive.files}
    if not arrays:
        raise UnreadableFileError(path, "the .npz archive holds no arrays")
    groups: dict[str, dict[str, Any]] = {}
    for key, arr in arrays.items():
        split, _, kind = key.rpartition("_")
        group = groups.setdefault(split if split in SPLITS else "", {})
        entry: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        n_bad = count_non_finite(arr, path, "flag") if arr.dtype.kind in "fc" else 0
        if n_bad:
            entry["non_finite"] = n_bad
        if kind == "labels" and arr.size and arr.reshape(len(arr), -1).shape[1] == 1:
            values, counts = np.unique(arr.reshape(-1), return_counts=True)
            entry["counts"] = {str(v): int(c) for v, c in zip(values, counts)}
        group[kind if split in SPLITS else key] = entry
    images = [arr for key, arr in arrays.items() if key.endswith("images") and arr.dtype.kind in "biuf" and arr.size]
    first = images[0] if images else next(iter(arrays.values()))
    ranges = [_finite_range(a) for a in images]
    lows = [r[0] for r in ranges if r[0] is not None]
    highs = [r[1] for r in ranges if r[1] is not None]
    return {
        "path": str(path),
        "format": "npz",
        "shape": list(first.shape[1:]),
        "spacing": None,
        "modality": "OT",
        "dtype": str(first.dtype),
        "min": min(lows) if lows else None,
        "max": max(highs) if highs else None,
        "non_finite": sum(count_non_finite(a, path, "flag") for a in images),
        "splits": {k: v for k, v in groups.items() if k},
        "arrays": groups.get("", {}),
    }


def describe(path: Path, keep_identifiers: bool = False) -> dict[str, Any]:
    """:func:`describe_npz` for archives, :func:`describe_image` of :func:`read_image` otherwise (NaN and
    infinite values counted, not refused: inspect shows what a file holds)."""
    from medlens.data.readers import read_image

    if not path.exists():
        raise MissingPathError(path)
    if path.is_file() and path.name.lower().endswith(".npz"):
        return describe_npz(path)
    return describe_image(read_image(path, non_finite="flag"), keep_identifiers)


_NOT_ROWS = {"path", "splits", "arrays", "min", "max", "units"}


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=str(summary["path"]), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key not in _NOT_ROWS and value is not None and not (key == "non_finite" and not value):
            table.add_row(key.replace("_", " "), _shown(key, value))
    if summary.get("min") is not None:
        units = f" {summary['units']}" if summary.get("units") else ""
        table.add_row("intensity range", f"{summary['min']:g} … {summary['max']:g}{units}")
    rows = [(f"{split} {kind}", entry) for split, kinds in summary.get("splits", {}).items()
            for kind, entry in kinds.items()]
    for name, entry in rows + list(summary.get("arrays", {}).items()):
        shown = f"{tuple(entry['shape'])} {entry['dtype']}"
        if entry.get("non_finite"):
            shown += f"  {entry['non_finite']} NaN/inf"
        if entry.get("counts"):
            shown += "  labels " + ", ".join(f"{v}: {c}" for v, c in entry["counts"].items())
        table.add_row(name, shown)
    return table


def _shown(key: str, value: Any) -> str:
    if key.startswith("rescale_") and isinstance(value, list):  # per slice: the distinct values
        distinct = sorted(set(value))
        return f"per slice: {', '.join(f'{v:g}' for v in distinct)}"
    if isinstance(value, list):
        return " × ".join(f"{v:g}" for v in value)
    return str(value)


@reports_errors
def inspect(
    path: Path = typer.Argument(
        ..., help="A DICOM file or series folder, NIfTI, PNG/TIFF/JPEG or .npz archive.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    keep_identifiers: bool = typer.Option(
        False, "--keep-identifiers", help="Show PatientID, PatientName and PatientBirthDate as stored, instead "
                                          "of the keyed pseudonym `patient_pseudonym`."),
) -> None:
    """Show what an image holds: shape, spacing, modality, intensity range, ids, dtype, slices.

    Shape and spacing are spatial and in (z, y, x) order for volumes. CT intensities are in Hounsfield
    units. For a .npz archive (MedMNIST layout) it shows each split's shapes and label counts.
    The JSON object always has `shape`, `spacing`, `modality`, `min`, `max` (finite values) and
    `non_finite` (the number of NaN or infinite values). `rescale_slope` and `rescale_intercept` are what
    the reader applied. Patient identifiers (PatientID, PatientName, PatientBirthDate) are not shown
    unless `--keep-identifiers`; `patient_pseudonym` is a keyed hash of the PatientID instead (key:
    MEDLENS_PSEUDONYM_KEY or ~/.config/medlens/pseudonym.key; see medlens.data.identifiers).

    Examples: `medlens inspect path/to/series_folder`, `medlens inspect scan.nii.gz --json`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = describe(path, keep_identifiers)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {escape(one_line(str(warning.message)))}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(summary, default=_jsonable))
    else:
        Console().print(_table(summary))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
