"""Feature tables on disk: one ``.npz`` with ``features``, ``labels``, ``ids``, ``feature_names`` and ``meta``.

``meta`` is a JSON string (extractor, dataset, split, seed, medlens version), so the file loads with
``np.load(path)`` and no pickle (``allow_pickle=False``); medlens reads it through
:func:`medlens.data.readers.npz.open_npz` (sizes checked before decompressing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.readers.npz import open_npz
from medlens.errors import BadArchiveError, GeometryError, MedlensError, MissingPathError
from medlens.files import write_atomically

KEYS = ("features", "labels", "ids", "feature_names", "meta")


def save_features(path: str | Path, features: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                  feature_names: list[str], meta: dict[str, Any]) -> Path:
    """Write the table through a temporary file and a rename; refuses rows or names that do not line up."""
    path = Path(path)
    if path.suffix != ".npz":
        raise MedlensError(f"{path}: feature files are .npz")
    features = np.asarray(features, dtype=np.float32)
    if not (len(features) == len(labels) == len(ids)) or features.shape[1] != len(feature_names):
        raise GeometryError(f"{path}: {features.shape} features, {len(labels)} labels, {len(ids)} ids and "
                            f"{len(feature_names)} names do not line up")
    arrays = {"features": features, "labels": np.asarray(labels, dtype=np.int64), "ids": np.asarray(ids).astype(str),
              "feature_names": np.asarray(feature_names, dtype=str), "meta": np.asarray(json.dumps(meta))}
    return write_atomically(path, lambda tmp: np.savez_compressed(tmp, **arrays))


def load_features(path: str | Path) -> dict[str, Any]:
    """The table written by :func:`save_features`, ``meta`` decoded."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(path, "feature file")
    with open_npz(path) as archive:
        missing = [k for k in KEYS if k not in archive]
        if missing:
            raise BadArchiveError(path, f"missing keys {missing}; write it with `medlens features extract`")
        table = {k: archive.read(k) for k in KEYS}
    try:
        table["meta"] = json.loads(str(table["meta"]))
    except ValueError as exc:
        raise BadArchiveError(path, f"meta is not JSON ({exc})") from exc
    table["feature_names"] = [str(n) for n in table["feature_names"]]
    return table
