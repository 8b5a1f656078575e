"""Model bundles: a fitted model as a folder that travels, with no pickled Python objects.

A bundle holds

- ``weights.pt``: the network's ``state_dict`` (``torch.save``; read back with ``weights_only=True``);
- ``state.json``: the fitted non-network state (input scaling, scaler means/scales, class count...);
- ``model_card.md``: intended use, data and provenance, protocol, metrics, calibration, operating
  point and limitations (:func:`model_card`);
- ``manifest.json``: medlens version, model name + parameters, the study config (builder parameters,
  Gabor bank), label names, decision threshold, temperature, dataset md5, image shape, feature names,
  package versions, metrics and the sha256 of every other file.

:func:`load_bundle` checks every file's sha256, the bundle format and the medlens major version before
rebuilding the model with :func:`medlens.models.registry.build` and restoring its state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import medlens
from medlens.config import StudyConfig, parse_config
from medlens.errors import MedlensError, ModelError
from medlens.files import write_atomically, write_text_atomically
from medlens.models.registry import build

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
STATE = "state.json"
CARD = "model_card.md"


@dataclass
class Bundle:
    """A loaded bundle: the fitted model and what is needed to prepare its inputs."""

    model: Any
    config: StudyConfig
    manifest: dict[str, Any]
    path: Path

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["data"]["labels"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def temperature(self) -> float | None:
        """Temperature fitted on validation predictions (None: probabilities are the model's own)."""
        value = self.manifest.get("temperature")
        return None if value is None else float(value)

    def predict_proba(self, data) -> np.ndarray:
        """``(N, K)`` probabilities of a prepared dataset, temperature-scaled when the bundle was calibrated."""
        from medlens.evaluate.calibration import apply_temperature, probability_logits

        proba = np.asarray(self.model.predict_proba(data), dtype=np.float64)
        if self.temperature is None:
            return proba
        return apply_temperature(probability_logits(proba), self.temperature)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Per-sample image shape the model was trained on, channel first."""
        return tuple(self.manifest["data"]["image_shape"])


# --------------------------------------------------------------------------------------------------
# Export / import of fitted state, one pair per model family
# --------------------------------------------------------------------------------------------------
def _export_cnn(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    network = model.network_
    first_conv = next(m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    state = {"spatial_dims": int(model.spatial_dims_), "n_classes": int(model.n_classes_),
             "in_channels": int(first_conv.in_channels), "mean": float(model.mean_), "std": float(model.std_)}
    return network.state_dict(), state


def _import_cnn(model, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    from medlens.engine.trainer import Trainer
    from medlens.models.cnn import cifar_resnet, compact_cnn

    make = compact_cnn if model.arch == "compact" else cifar_resnet
    size = {"depth": model.depth} if model.arch == "compact" else {"blocks": model.blocks}
    network = make(state["spatial_dims"], state["in_channels"], state["n_classes"], width=model.width,
                   dropout=model.dropout, **size)
    network.load_state_dict(weights)
    model.spatial_dims_, model.n_classes_ = state["spatial_dims"], state["n_classes"]
    model.mean_, model.std_ = state["mean"], state["std"]
    model.network_ = network.eval()
    model.n_parameters = sum(p.numel() for p in network.parameters())
    model.trainer_ = Trainer(network, torch.nn.functional.cross_entropy, model._config())


def _export_bp(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    scaler = model.scaler_
    state = {"n_classes": int(model.n_classes_), "n_inputs": int(scaler.n_features_in_),
             "scaler_mean": scaler.mean_.tolist(), "scaler_scale": scaler.scale_.tolist(),
             "scaler_var": scaler.var_.tolist()}
    return model.network_.state_dict(), state


def _import_bp(model, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    from sklearn.preprocessing import StandardScaler

    model.n_classes_ = state["n_classes"]
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(state["scaler_mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(state["scaler_scale"], dtype=np.float64)
    scaler.var_ = np.asarray(state["scaler_var"], dtype=np.float64)
    scaler.n_features_in_ = state["n_inputs"]
    scaler.n_samples_seen_ = 0
    model.scaler_ = scaler
    network = model._network(state["n_inputs"], 1 if model.n_classes_ == 2 else model.n_classes_)
    network.load_state_dict(weights)
    model.network_ = network.eval()
    model.n_parameters = sum(p.numel() for p in network.parameters())


_FAMILIES: dict[str, tuple[Callable, Callable]] = {"cnn": (_export_cnn, _import_cnn), "bp": (_export_bp, _import_bp)}


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _major(version: str) -> str:
    return version.split(".")[0]


def save_bundle(model, config: StudyConfig, data_meta: dict[str, Any], out_dir: str | Path,
                metrics: dict[str, Any] | None = None, threshold: float = 0.5, *,
                model_id: str | None = None, image_shape: tuple[int, ...] | None = None,
                temperature: float | None = None, training: dict[str, Any] | None = None,
                onnx_images: np.ndarray | None = None) -> Path:
    """Write a fitted ``model`` as a bundle folder.

    Parameters
    ----------
    model
        A fitted model of a supported family (``cnn``, ``bp``).
    config : StudyConfig
        The study config whose data preparation the model expects.
    data_meta : dict
        The training dataset's ``meta`` (``labels``, ``source_md5``, ``feature_names``...).
    out_dir : str or Path
        Bundle folder (created).
    metrics : dict, optional
        Figures measured for this model (e.g. on a held-out split).
    threshold : float
        Decision threshold on the positive-class probability (binary tasks).
    model_id : str, optional
        The config's model id; defaults to the first config model with the same name.
    image_shape : tuple of int, optional
        Per-sample image shape, channel first.
    temperature : float, optional
        Temperature fitted on validation predictions; applied by :meth:`Bundle.predict_proba`.
    training : dict, optional
        How the bundle was made (protocol sentence, operating-point rule, validation figures, sizes).
    onnx_images : ndarray, optional
        Model-ready images; when given, the cnn is also exported to ``model.onnx`` and checked on them
        (:func:`medlens.deploy.export.export_onnx`).

    Returns
    -------
    Path
        The bundle folder.
    """
    from medlens.study import _plain, package_versions

    name = getattr(model, "name", None)
    if name not in _FAMILIES:
        raise ModelError(f"bundle: model {name!r} cannot be bundled; supported: {', '.join(sorted(_FAMILIES))}")
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"bundle: threshold must lie in (0, 1), got {threshold}")
    entry = next((m for m in config.models if (model_id and m.key == model_id) or (not model_id and m.name == name)),
                 None)
    params = {k: getattr(model, k) for k in _init_params(model)}
    weights, state = _FAMILIES[name][0](model)
    out = Path(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    write_atomically(out / WEIGHTS, lambda tmp: torch.save(tensors, tmp))
    write_text_atomically(out / STATE, json.dumps(state))
    manifest = {
        "format_version": FORMAT_VERSION,
        "medlens_version": medlens.__version__,
        "model": {"name": name, "id": entry.key if entry else name, "params": _plain(params)},
        "config": config.model_dump(mode="json"),
        "data": {"labels": list(data_meta.get("labels") or []), "md5": data_meta.get("source_md5"),
                 "dataset": data_meta.get("dataset"), "channels": data_meta.get("channels"),
                 "feature_names": list(data_meta.get("feature_names", [])),
                 "image_shape": list(image_shape) if image_shape is not None else None,
                 "excluded_groups": list(data_meta.get("excluded_groups", [])),
                 "n_samples": data_meta.get("n_samples"), "class_counts": data_meta.get("class_counts")},
        "threshold": float(threshold),
        "temperature": None if temperature is None else float(temperature),
        "training": _plain(training or {}),
        "metrics": _plain(metrics or {}),
        "versions": package_versions(),
    }
    files = [WEIGHTS, STATE, CARD]
    if onnx_images is not None:
        from medlens.deploy.export import ONNX_FILE, export_onnx

        manifest["onnx"] = export_onnx(model, onnx_images, out / ONNX_FILE, temperature)
        files.append(ONNX_FILE)
    write_text_atomically(out / CARD, model_card(manifest))
    manifest["files"] = {f: sha256(out / f) for f in files}
    write_text_atomically(out / MANIFEST, json.dumps(manifest, indent=2))
    return out


def model_card(manifest: dict[str, Any]) -> str:
    """The bundle's model card (Markdown) from its manifest; nothing in it is not in the manifest."""
    from medlens.report.model_card import render_model_card

    data, training, config = manifest["data"], manifest.get("training", {}), manifest["config"]
    labels = data.get("labels") or []
    counts = data.get("class_counts")
    validation = training.get("validation", {})
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if k not in ("split", "n")}
    card = {
        "title": f"Model card: {manifest['model']['id']} ({config.get('title') or config.get('study')})",
        "model": f"medlens `{manifest['model']['name']}` model, input shape {data.get('image_shape')}; "
                 f"labels {', '.join(labels)}.",
        "data": {"name": data.get("dataset"), "source": config.get("description"),
                 "n_samples": data.get("n_samples"), "labels": labels,
                 "class_counts": counts, "checksum": data.get("md5"),
                 "patients left out": ", ".join(data.get("excluded_groups") or []) or None},
        "protocol": training.get("protocol"),
        "metrics": metrics or None,
        "calibration": {"method": "temperature scaling on validation predictions" if manifest.get("temperature")
                        else "none (the model's own probabilities)",
                        "temperature (fitted on validation)": manifest.get("temperature"),
                        "validation ECE before scaling": validation.get("ece_uncalibrated"),
                        "validation ECE after scaling": validation.get("ece") if manifest.get("temperature") else None,
                        **({"test ECE": metrics["ece"]} if "ece" in metrics else {})}
        if validation else None,
        "operating_points": {training.get("operating_point", "threshold"): {
            "threshold": manifest["threshold"], "val sensitivity": validation.get("sensitivity"),
            "val specificity": validation.get("specificity"),
            **({"test sensitivity": metrics.get("sensitivity"), "test specificity": metrics.get("specificity")}
               if metrics else {})}},
        "limitations": [
            "Validation figures are measured on the split that chose the threshold and temperature; they are "
            "optimistic. Only test figures (when present) estimate performance on new data like the training data.",
            "Trained on one public dataset; not validated on other scanners, sites or populations.",
            "Inputs must be prepared as in training (the manifest's config); `medlens predict` does this.",
            *training.get("warnings", []),
        ],
    }
    return render_model_card(card)


def _init_params(model) -> list[str]:
    import inspect

    return [p for p in inspect.signature(type(model).__init__).parameters if p != "self" and hasattr(model, p)]


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle written by :func:`save_bundle`, verifying file hashes, the bundle format and the medlens
    major version.

    Raises
    ------
    MedlensError
        Missing or unreadable manifest, a file whose sha256 differs from the manifest's (tampered or
        corrupt), an unsupported model family, a bundle written by another medlens major version, or a
        bundle format (``format_version``) newer than this medlens reads.
    """
    folder = Path(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise MedlensError(f"{folder}: not a medlens bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        written_by, files, name = manifest["medlens_version"], manifest["files"], manifest["model"]["name"]
        layout = int(manifest.get("format_version", 1))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MedlensError(f"{manifest_path}: unreadable bundle manifest ({exc})") from exc
    if layout > FORMAT_VERSION:
        raise MedlensError(f"{manifest_path}: bundle format {layout} is newer than this medlens reads "
                           f"(up to {FORMAT_VERSION}); upgrade medlens")
    if _major(written_by) != _major(medlens.__version__):
        raise MedlensError(f"{manifest_path}: bundle written by medlens {written_by}, incompatible with the "
                           f"installed medlens {medlens.__version__} (major versions differ)")
    for file, digest in files.items():
        if not (folder / file).is_file():
            raise MedlensError(f"{folder / file}: file listed in the bundle manifest is missing")
        if sha256(folder / file) != digest:
            raise MedlensError(f"{folder / file}: sha256 differs from the bundle manifest (file modified or "
                               "corrupt); refusing to load it")
    if name not in _FAMILIES:
        raise MedlensError(f"{manifest_path}: model {name!r} cannot be loaded from a bundle")
    config = parse_config(manifest["config"], source=str(manifest_path))
    model = build(name, **manifest["model"]["params"])
    weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    try:
        _FAMILIES[name][1](model, weights, state)
    except (RuntimeError, KeyError) as exc:
        raise MedlensError(f"{folder / WEIGHTS}: weights do not fit model {name!r} ({exc})") from exc
    return Bundle(model=model, config=config, manifest=manifest, path=folder)
