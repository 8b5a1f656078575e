"""``medlens inspect``: what a medical image file, DICOM series or ``.npz`` archive holds."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from medlens.commands._common import console, reports_errors
from medlens.errors import MissingPathError, UnreadableFileError
from medlens.image import MedImage

SPLITS = ("train", "val", "test")


def describe_image(image: MedImage) -> dict[str, Any]:
    """Shape, geometry, intensity range and identifiers of a loaded image, JSON-ready.

    ``shape`` and ``spacing`` are spatial, (z, y, x) for volumes and (y, x) for 2D images.
    """
    meta = image.meta
    units = "HU" if image.modality == "CT" and np.issubdtype(image.array.dtype, np.floating) else None
    summary: dict[str, Any] = {
        "path": meta.get("source"),
        "format": meta.get("format"),
        "shape": list(image.shape),
        "channels": int(image.array.shape[0]),
        "spacing": [round(s, 6) for s in image.spacing],
        "origin": [round(o, 6) for o in image.origin],
        "modality": image.modality,
        "dtype": str(image.array.dtype),
        "min": float(image.array.min()),
        "max": float(image.array.max()),
        "units": units,
        "n_slices": int(image.shape[0]) if len(image.shape) == 3 else 1,
    }
    for key in ("patient_id", "study_uid", "series_uid", "series_description", "manufacturer", "kvp",
                "window_center", "window_width", "rescale_slope", "rescale_intercept", "padding_voxels",
                "n_files"):
        if meta.get(key) not in (None, ""):
            summary[key] = meta[key]
    return summary


def describe_npz(path: Path) -> dict[str, Any]:
    """Per-split image shapes and label counts of an ``.npz`` archive (MedMNIST layout or any keys).

    Keys named ``<split>_images``/``<split>_labels`` are grouped by split; other keys are listed
    with their shape. Label counts are given for label arrays of one value per sample.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableFileError(path, f"cannot read the .npz archive ({exc})") from exc
    if not arrays:
        raise UnreadableFileError(path, "the .npz archive holds no arrays")
    groups: dict[str, dict[str, Any]] = {}
    for key, arr in arrays.items():
        split, _, kind = key.rpartition("_")
        group = groups.setdefault(split if split in SPLITS else "", {})
        entry: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        if kind == "labels" and arr.size and arr.reshape(len(arr), -1).shape[1] == 1:
            values, counts = np.unique(arr.reshape(-1), return_counts=True)
            entry["counts"] = {str(v): int(c) for v, c in zip(values, counts)}
        group[kind if split in SPLITS else key] = entry
    images = [arr for key, arr in arrays.items() if key.endswith("images")]
    first = images[0] if images else next(iter(arrays.values()))
    return {
        "path": str(path),
        "format": "npz",
        "shape": list(first.shape[1:]),
        "spacing": None,
        "modality": "OT",
        "dtype": str(first.dtype),
        "min": float(min(a.min() for a in images)) if images else None,
        "max": float(max(a.max() for a in images)) if images else None,
        "splits": {k: v for k, v in groups.items() if k},
        "arrays": groups.get("", {}),
    }


def describe(path: Path) -> dict[str, Any]:
    """:func:`describe_npz` for archives, :func:`describe_image` of :func:`read_image` otherwise."""
    from medlens.data.readers import read_image

    if not path.exists():
        raise MissingPathError(path)
    if path.is_file() and path.name.lower().endswith(".npz"):
        return describe_npz(path)
    return describe_image(read_image(path))


_NOT_ROWS = {"path", "splits", "arrays", "min", "max", "units"}


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=str(summary["path"]), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key not in _NOT_ROWS and value is not None:
            shown = " × ".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)
            table.add_row(key.replace("_", " "), shown)
    if summary.get("min") is not None:
        units = f" {summary['units']}" if summary.get("units") else ""
        table.add_row("intensity range", f"{summary['min']:g} … {summary['max']:g}{units}")
    rows = [(f"{split} {kind}", entry) for split, kinds in summary.get("splits", {}).items()
            for kind, entry in kinds.items()]
    for name, entry in rows + list(summary.get("arrays", {}).items()):
        shown = f"{tuple(entry['shape'])} {entry['dtype']}"
        if entry.get("counts"):
            shown += "  labels " + ", ".join(f"{v}: {c}" for v, c in entry["counts"].items())
        table.add_row(name, shown)
    return table


@reports_errors
def inspect(
    path: Path = typer.Argument(
        ..., help="A DICOM file or series folder, NIfTI, PNG/TIFF/JPEG or .npz archive.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show what an image holds: shape, spacing, modality, intensity range, ids, dtype, slices.

    Shape and spacing are spatial and in (z, y, x) order for volumes. CT intensities are in Hounsfield
    units. For a .npz archive (MedMNIST layout) it shows each split's shapes and label counts.
    The JSON object always has `shape`, `spacing`, `modality`, `min` and `max`.

    Examples: `medlens inspect path/to/series_folder`, `medlens inspect scan.nii.gz --json`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = describe(path)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
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
