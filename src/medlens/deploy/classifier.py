"""Classifier bundles: any fitted model of the registry, with the preprocessing and decision rule it was
trained with (the ``classifier`` kind of :mod:`medlens.deploy.bundle`).

Besides the common manifest fields, a classifier bundle records

- ``model``: registered name, config id, the parameters it was built with, its capabilities
  (:class:`~medlens.models.base.Capabilities`), description and parameter count;
- ``pipeline``: the feature steps that prepare its inputs (:mod:`medlens.models.pipeline`);
- ``config``: the study config, whose ``data`` section says how inputs are prepared (HU window, spacing,
  crop; MedMNIST layout);
- ``data``: label names, channels, feature names, image shape, the training data's md5, the patients left
  out, class counts; ``input_profile``: what the training images looked like
  (:mod:`medlens.deploy.input_profile`);
- ``threshold`` and ``temperature``; ``training`` (protocol, operating-point rule, validation figures);
  ``metrics`` (test figures where an official test split exists); ``versions``;
- ``state``: the model's JSON state (:meth:`~medlens.models.base.Model.state`); its arrays are
  ``weights.safetensors`` and its scikit-learn objects ``estimators/<name>.skops``.

``model_card.md`` is made from the manifest alone (:func:`model_card`); ``model.onnx`` is there when the
model exports (:mod:`medlens.deploy.export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import StudyConfig, parse_config
from medlens.deploy.bundle import CARD, WEIGHTS, BundleError, BundleReader, load_bundle, register_kind, \
    write_arrays, write_bundle
from medlens.errors import ModelError
from medlens.models.base import ModelState
from medlens.models.pipeline import ModelPipeline, restore_pipeline
from medlens.report.provenance import shown_config

#: The only scikit-learn types, besides skops' default safe ones (estimators, arrays), that a bundle's
#: ``.skops`` files may contain: what the ``svm`` model's Platt calibration holds.
TRUSTED_SKOPS_TYPES = ["sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
                       "sklearn.model_selection._split.StratifiedKFold"]
ESTIMATORS = "estimators"


@dataclass
class ClassifierBundle:
    """A loaded classifier bundle: the fitted pipeline and what is needed to prepare its inputs and decide."""

    model: ModelPipeline
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

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Per-sample image shape the model was trained on, channel first."""
        return tuple(self.manifest["data"]["image_shape"])

    @property
    def capabilities(self):
        return self.model.capabilities

    @property
    def input_profile(self) -> dict[str, Any] | None:
        return self.manifest.get("input_profile")

    def predict_proba(self, data) -> np.ndarray:
        """``(N, K)`` probabilities of a prepared dataset, temperature-scaled when the bundle was calibrated."""
        from medlens.evaluate.calibration import apply_temperature, probability_logits

        proba = np.asarray(self.model.predict_proba(data), dtype=np.float64)
        if self.temperature is None:
            return proba
        return apply_temperature(probability_logits(proba), self.temperature)


def save_classifier(model: ModelPipeline, params: dict[str, Any], config: StudyConfig, data_meta: dict[str, Any],
                    out_dir: str | Path, *, model_id: str, metrics: dict[str, Any] | None = None,
                    threshold: float = 0.5, image_shape: tuple[int, ...] | None = None,
                    temperature: float | None = None, training: dict[str, Any] | None = None,
                    input_profile: dict[str, Any] | None = None, onnx_images: np.ndarray | None = None,
                    keep_identifiers: bool = False) -> Path:
    """Write a fitted pipeline as a classifier bundle (replacing one at ``out_dir`` as a whole).

    Parameters
    ----------
    model : ModelPipeline
        The fitted pipeline.
    params : dict
        The parameters the model was built with (:func:`medlens.models.pipeline.build_pipeline`).
    config : StudyConfig
        The study config whose data preparation the model expects.
    data_meta : dict
        The training dataset's ``meta`` (``labels``, ``source_md5``, ``feature_names``...) with
        ``excluded_groups``, ``class_counts`` and ``n_samples``.
    out_dir : str or Path
        Bundle folder.
    model_id : str
        The config's model id.
    metrics : dict, optional
        Figures measured for this model (e.g. on a held-out split).
    threshold : float
        Decision threshold on the positive-class probability (binary tasks).
    image_shape : tuple of int, optional
        Per-sample image shape, channel first.
    temperature : float, optional
        Temperature fitted on validation predictions; applied by :meth:`ClassifierBundle.predict_proba`.
    training : dict, optional
        How the bundle was made (protocol sentence, operating-point rule, validation figures, sizes).
    input_profile : dict, optional
        The training images' profile (:func:`medlens.deploy.input_profile.fit_profile`).
    onnx_images : ndarray, optional
        Model-ready images; when given, the model is also exported to ``model.onnx`` and checked on them
        (:func:`medlens.deploy.export.export_onnx`); a model that cannot export is an error.
    keep_identifiers : bool
        Record the config's data path as it is (default: shown by
        :func:`medlens.report.provenance.shown_path`, never an absolute path of the user's).
    """
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"bundle: threshold must lie in (0, 1), got {threshold}")
    state: ModelState = model.state()
    capabilities = model.capabilities
    manifest: dict[str, Any] = {
        "model": {"name": model.name, "id": model_id, "params": params, "capabilities": capabilities.as_dict(),
                  "description": getattr(model, "description", "") or "",
                  "n_parameters": getattr(model, "n_parameters", None)},
        "pipeline": {"steps": model.describe()},
        "config": shown_config(config, keep_identifiers),
        "data": {"labels": list(data_meta.get("labels") or []), "md5": data_meta.get("source_md5"),
                 "dataset": data_meta.get("dataset"), "channels": data_meta.get("channels"),
                 "modality": data_meta.get("modality"),
                 "feature_names": list(data_meta.get("feature_names", [])),
                 "image_shape": list(image_shape) if image_shape is not None else None,
                 "excluded_groups": list(data_meta.get("excluded_groups", [])),
                 "n_samples": data_meta.get("n_samples"), "class_counts": data_meta.get("class_counts")},
        "input_profile": input_profile,
        "threshold": float(threshold),
        "temperature": None if temperature is None else float(temperature),
        "training": training or {},
        "metrics": metrics or {},
        "state": {"meta": state.meta, "estimators": sorted(state.estimators)},
    }
    files = {WEIGHTS: write_arrays(state.arrays)}
    for key, estimator in state.estimators.items():
        files[f"{ESTIMATORS}/{key}.skops"] = _skops_writer(estimator)
    if onnx_images is not None:
        from medlens.deploy.export import ONNX_FILE, export_onnx

        report: dict[str, Any] = {}

        def write_onnx(path: Path) -> None:
            report.update(export_onnx(model, onnx_images, path, temperature))

        files[ONNX_FILE] = write_onnx
        manifest["onnx"] = report  # filled in when the file is written, before the manifest is
    files[CARD] = lambda path: path.write_text(model_card(manifest), encoding="utf-8")
    return write_bundle(out_dir, "classifier", manifest, files)


def _skops_writer(estimator):
    import skops.io

    return lambda path: skops.io.dump(estimator, str(path))


def _read_estimator(reader: BundleReader, key: str):
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    path = reader.path(f"{ESTIMATORS}/{key}.skops")
    try:
        return skops.io.load(str(path), trusted=TRUSTED_SKOPS_TYPES)
    except UntrustedTypesFoundException as exc:
        raise BundleError(f"{path}: holds object types outside the trusted list ({exc}); refusing to load it") from exc
    except Exception as exc:  # skops raises many kinds for a damaged archive
        raise BundleError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from exc


@register_kind("classifier")
def read_classifier(reader: BundleReader) -> ClassifierBundle:
    """Rebuild the fitted pipeline of a checked classifier bundle."""
    manifest = reader.manifest
    try:
        name, params = manifest["model"]["name"], manifest["model"]["params"]
        steps, state_meta = manifest["pipeline"]["steps"], manifest["state"]["meta"]
        estimator_keys = manifest["state"]["estimators"]
        config = parse_config(manifest["config"], source=str(reader.folder / "manifest.json"))
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{reader.folder / 'manifest.json'}: classifier manifest lacks {exc}") from exc
    state = ModelState(arrays=reader.arrays(WEIGHTS), meta=state_meta,
                       estimators={key: _read_estimator(reader, key) for key in estimator_keys})
    try:
        model = restore_pipeline(name, params, steps, state, manifest["data"].get("channels"))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise BundleError(f"{reader.path(WEIGHTS)}: the weights do not fit model {name!r} ({exc})") from exc
    return ClassifierBundle(model=model, config=config, manifest=manifest, path=reader.folder)


def load_classifier(path: str | Path) -> ClassifierBundle:
    """A classifier bundle (:func:`medlens.deploy.bundle.load_bundle` restricted to the ``classifier`` kind)."""
    return load_bundle(path, kind="classifier")


def model_card(manifest: dict[str, Any]) -> str:
    """The bundle's model card (Markdown) from its manifest; nothing in it is not in the manifest."""
    from medlens.report.model_card import render_model_card

    data, training, config = manifest["data"], manifest.get("training", {}), manifest["config"]
    labels = data.get("labels") or []
    counts = data.get("class_counts")
    validation = training.get("validation", {})
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if k not in ("split", "n")}
    capabilities = manifest["model"].get("capabilities", {})
    explain = ", ".join(capabilities.get("explain") or []) or "none"
    card = {
        "title": f"Model card: {manifest['model']['id']} ({config.get('title') or config.get('study')})",
        "model": f"medlens `{manifest['model']['name']}` model, input shape {data.get('image_shape')}; "
                 f"labels {', '.join(labels)}; reads {', '.join(capabilities.get('inputs') or [])}; "
                 f"explanations: {explain}.",
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
            "Inputs must be prepared as in training (the manifest's config); `medlens predict` does this, and "
            "flags inputs unlike the training images (" + (manifest.get("input_profile") or {}).get(
                "rule", "no profile recorded") + ").",
            *training.get("warnings", []),
        ],
    }
    return render_model_card(card)
