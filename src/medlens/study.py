"""Run a validated study from data to report: orchestration only.

The flow: resolve the dataset and build its arrays (:mod:`medlens.data.builders`) → build each model with
the feature steps it reads (:func:`medlens.models.pipeline.build_pipeline`) and compute those features once
for the whole dataset (they are fitted on nothing) → the protocol's folds
(:func:`medlens.evaluate.protocol.make_folds`) → each model cross-validated
(:func:`medlens.evaluate.protocol.cross_validate`), once per training seed when ``seeds`` > 1 → its figures
(:func:`medlens.evaluate.summaries.summarize_cross_validation`, averaged over seeds by
:func:`medlens.evaluate.summaries.average_over_seeds`) → ``predictions.csv``, tables, figures, model cards
and ``report.html`` (:func:`medlens.report.study_outputs.write_study_outputs`), and ``results.json`` last,
which marks a finished study.

What the protocol measures (calibration, operating points, subgroups) is described in
:mod:`medlens.evaluate.protocol` and :mod:`medlens.evaluate.summaries`.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import ModelConfig, StudyConfig, parse_config
from medlens.data import builders
from medlens.data.dataset import ArrayDataset
from medlens.engine.cluster import scheduler_address
from medlens.engine.trainer import resumable, seed_everything
from medlens.errors import ConfigError, MedlensError
from medlens.evaluate.fold_store import FoldStore
from medlens.evaluate.protocol import CrossValidation, Fold, gather, make_folds, run_fold
from medlens.evaluate.summaries import average_over_seeds, summarize_cross_validation
from medlens.files import json_ready, write_text_atomically
from medlens.models.base import GRADCAM_METHODS
from medlens.models.pipeline import ModelPipeline, build_pipeline, prepare_features
from medlens.progress import progress_bar
from medlens.report.provenance import package_versions, platform_description, shown_config, shown_path

#: The folder of an output folder where a study records its progress (:class:`FoldStore`).
RESUME_FOLDER = ".resume"


def load_dataset(config: StudyConfig) -> ArrayDataset:
    """Resolve the study's files (downloading a missing set that has a verified source) and build its arrays."""
    from medlens.data.fetch import ensure_dataset

    root = ensure_dataset(config.data.name, path=config.data.path, progress=False)
    return builders.build_dataset(config.data.builder, root, **config.data.params)


def subsample(data: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """A random subset of ``n`` samples, stratified by label (and official split where there is one)."""
    if n >= len(data):
        return data
    from sklearn.model_selection import train_test_split

    strata = data.labels if data.split is None else np.char.add(data.split.astype(str), data.labels.astype(str))
    keep, _ = train_test_split(np.arange(len(data)), train_size=n, stratify=strata, random_state=seed)
    return data.subset(np.sort(keep))


def model_params(model_cfg: ModelConfig, quick: bool, seed: int) -> dict[str, Any]:
    """A model entry's parameters (with its ``quick_params`` in a smoke run), seeded with ``seed`` unless the
    entry sets its own."""
    params = dict(model_cfg.params)
    if quick:
        params.update(model_cfg.quick_params)
    params.setdefault("seed", seed)
    return params


def study_pipeline(config: StudyConfig, model_cfg: ModelConfig, quick: bool, seed: int,
                   offset: int = 0) -> ModelPipeline:
    """The unfitted pipeline of one model entry: the model, seeded ``seed`` (or the entry's own seed) plus
    ``offset`` (the training-seed repeat), and the feature steps of the study it reads."""
    params = model_params(model_cfg, quick, seed)
    params["seed"] = params["seed"] + offset
    return build_pipeline(model_cfg.name, params, config.features)


def check_model_params(config: StudyConfig, models: list[ModelConfig], quick: bool) -> list[ModelPipeline]:
    """Build every model once, untrained, so a bad parameter fails before any data is read or model trained,
    with the config field named. Returns the unfitted pipelines."""
    pipelines = []
    for model_cfg in models:
        index = config.models.index(model_cfg)
        try:
            pipelines.append(study_pipeline(config, model_cfg, quick, config.seed))
        except ConfigError as exc:
            raise ConfigError(f"{config.source or '<config>'}: field `models[{index}].params` "
                              f"({model_cfg.key}): {exc}") from exc
    return pipelines


def explain_examples(model, data: ArrayDataset, fold: Fold, oof: np.ndarray, labels, per_class: int = 2) -> dict:
    """Grad-CAM maps of an image network for the test images it is most sure of, per true class, in its last fold.

    For each class ``c`` the ``per_class`` test samples of true class ``c`` with the highest ``p_c`` are
    explained for class ``c`` (:func:`medlens.deploy.explain.explain`): what the network looks at when it is
    right and confident. Returns ``ids``, ``images``, ``maps`` and ``titles`` for the report.
    """
    from medlens.deploy.explain import explain

    names = labels or [str(c) for c in range(data.n_classes)]
    chosen, classes = [], []
    for c in range(data.n_classes):
        of_class = fold.test[data.labels[fold.test] == c]
        best = of_class[np.argsort(-oof[of_class, c])[:per_class]]
        chosen.extend(best.tolist())
        classes.extend([c] * len(best))
    images = data.images[chosen]
    maps = explain(model, images, "gradcam", class_index=classes) if chosen else np.empty((0,))
    ids = data.ids[chosen] if data.ids is not None else np.array(chosen).astype(str)
    titles = [f"{i}: {names[c]} (p = {oof[j, c]:.2f})" for i, c, j in zip(ids, classes, chosen)]
    return {"ids": [str(i) for i in ids], "images": images, "maps": maps, "titles": titles}


def _catalogue_provenance(name: str) -> dict[str, str]:
    """Licence, citation and upstream origin of a catalogued dataset (empty when it is not catalogued)."""
    from medlens.data import catalog

    try:
        info = catalog.get(name)
    except MedlensError:
        return {}
    return {"licence": info.licence, "citation": info.citation, "origin": info.source}


def prepare_output(out_dir: Path, overwrite: bool, resume: bool = False) -> Path:
    """Create ``out_dir``; refuse to replace an earlier study's results, finished or not, unless ``overwrite``
    (an unfinished one is continued with ``resume``)."""
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise MedlensError(f"{out_dir}: already holds a study's results.json; choose another --out "
                           "or pass --overwrite to replace it")
    if (out_dir / RESUME_FOLDER / "study.json").exists() and not (overwrite or resume):
        raise MedlensError(f"{out_dir}: holds an unfinished study (killed or stopped); pass --resume to continue "
                           "it, or --overwrite to start it again")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def study_data(config: StudyConfig, quick: bool, k: int, pipelines: list[ModelPipeline]
               ) -> tuple[ArrayDataset, list[Fold]]:
    """The study's dataset (subsampled in a smoke run, with every feature step its models read computed once)
    and its folds: what the study process and every Dask worker compute alike."""
    data = load_dataset(config)
    if quick and config.quick.max_samples:
        data = subsample(data, config.quick.max_samples, config.seed)
    data = prepare_features(data, [step for pipeline in pipelines for step in pipeline.steps])
    return data, make_folds(data, config.protocol, k, config.seed)


@functools.lru_cache(maxsize=1)
def _worker_study(config_json: str, quick: bool, k: int) -> tuple[StudyConfig, ArrayDataset, list[Fold]]:
    """A Dask worker's copy of the study's data and folds, loaded once per worker process."""
    config = parse_config(json.loads(config_json))
    models = [m for m in config.models if not (quick and config.quick.models and m.key not in config.quick.models)]
    return (config, *study_data(config, quick, k, check_model_params(config, models, quick)))


def run_fold_task(config_json: str, quick: bool, k: int, model_key: str, offset: int, fold_index: int,
                  store_folder: str) -> float:
    """One model, one training seed, one fold, run on a Dask worker and recorded in the study's
    :class:`FoldStore` (on a file system the study process also sees); returns the fitting seconds.

    The worker reads the data itself (:func:`_worker_study`), so nothing large travels to it or back; torch
    uses the threads the worker was given.
    """
    import torch
    from distributed import get_worker

    config, data, folds = _worker_study(config_json, quick, k)
    torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    model_cfg = next(m for m in config.models if m.key == model_key)
    fold = folds[fold_index]
    store = FoldStore(store_folder)
    model = study_pipeline(config, model_cfg, quick, fold.seed, offset)
    with resumable(store.training_folder(model_key, offset, fold)):
        result = run_fold(model, data, fold, config.protocol, name=model_key, augment=_augmenter(config))
    if offset == 0 and fold is folds[-1] and _explained(model):
        store.save_model(model_key, offset, fold, result.model)
    store.save(model_key, offset, result)
    return result.seconds


def run_folds_on_dask(config: StudyConfig, models: list[ModelConfig], folds: list[Fold], quick: bool, k: int,
                      store: FoldStore, workers: int | None, scheduler: str | None, advance_for) -> dict[str, Any]:
    """Every fold × model × training seed that ``store`` does not hold yet, as Dask tasks (a local cluster of
    ``workers`` processes, or the running ``scheduler``); each task records its fold in the store.

    Returns where the work ran: the scheduler, the number of workers and their threads, and the worker of each
    task. A task that fails is retried once; if it fails again the study stops with every failure named.
    """
    from medlens.engine.cluster import dask_client, run_tasks
    from medlens.engine.memory import KEEP_FREED_ENVIRON

    config_json = json.dumps(config.model_dump(mode="json"))
    tasks = [(f"{m.key}/seed{offset}/fold{fold.index}", (config_json, quick, k, m.key, offset, fold.index,
                                                         str(store.folder)))
             for m in models for offset in range(m.seeds) for fold in folds
             if store.load(m.key, offset, fold) is None]
    advancers = {m.key: advance_for(m.key) for m in models}
    with dask_client(workers, scheduler, environ=KEEP_FREED_ENVIRON) as client:
        info = client.scheduler_info()
        outcome = run_tasks(client, run_fold_task, tasks,
                            on_done=lambda key, seconds: advancers[key.split("/")[0]]())
        where = {"scheduler": info.get("address"), "workers": len(info.get("workers", {})),
                 "threads": {address: worker.get("nthreads") for address, worker in info.get("workers", {}).items()},
                 "tasks": dict(sorted(outcome.where.items()))}
    if outcome.errors:
        listed = "; ".join(f"{key}: {error}" for key, error in sorted(outcome.errors.items()))
        raise MedlensError(f"study: {len(outcome.errors)} of {len(tasks)} fold tasks failed on the cluster ({listed}); "
                           "the finished ones are kept: fix the cause and run again with --resume")
    return where


def _augmenter(config: StudyConfig):
    """``augment(train, fold)`` adding the configured GAN's synthetic images to a fold's training part, or None."""
    if config.augment is None:
        return None
    from medlens.synth.augment import augment_with_generator
    from medlens.synth.gan import GAN

    generator = GAN.load(config.augment.checkpoint)  # loaded once, sampled per fold
    return lambda train, fold: augment_with_generator(train, generator, config.augment.n_per_class, seed=fold.seed)


def _explained(model) -> bool:
    """Whether a study explains ``model``'s last fold: image networks, by Grad-CAM."""
    return set(GRADCAM_METHODS) <= set(model.capabilities.explain)


def evaluate_model(model_cfg: ModelConfig, data: ArrayDataset, folds: list[Fold], config: StudyConfig,
                   quick: bool, advance, augment=None, store: FoldStore | None = None
                   ) -> tuple[dict[str, Any], list[CrossValidation]]:
    """Cross-validate one model entry once per training seed (``model_cfg.seeds``); returns its
    ``results.json`` entry and the cross-validation of each seed (the first is the one the report details).

    With a ``store``, folds it holds are read back instead of run, and each fold run is recorded there (its
    trainings resumable from their last epoch), so that a killed study resumes where it stopped.
    """
    runs = []
    for offset in range(model_cfg.seeds):
        results = []
        for fold in folds:
            model = study_pipeline(config, model_cfg, quick, fold.seed, offset)
            keep = offset == 0 and fold is folds[-1] and _explained(model)
            result = None if store is None else store.load(model_cfg.key, offset, fold)
            if result is None:
                training = None if store is None else store.training_folder(model_cfg.key, offset, fold)
                with resumable(training):
                    result = run_fold(model, data, fold, config.protocol, name=model_cfg.key, augment=augment)
                if store is not None:
                    if keep:
                        store.save_model(model_cfg.key, offset, fold, result.model)
                    store.save(model_cfg.key, offset, result)
            elif keep:
                result.model = store.load_model(model_cfg.key, offset, fold, model)
            results.append(result)
            advance()
        runs.append(gather(results, len(data), data.n_classes))
    labels = data.meta.get("labels")
    entries = [summarize_cross_validation(cv, data.labels, config.protocol, labels=labels,
                                          subgroups=data.meta.get("subgroups"), seed=config.seed) for cv in runs]
    entry = average_over_seeds(entries) if len(entries) > 1 else entries[0]
    params = model_params(model_cfg, quick, config.seed)
    fitted = study_pipeline(config, model_cfg, quick, config.seed)
    entry.update({
        "train_seconds": round(sum(cv.train_seconds for cv in runs), 3),
        "description": model_cfg.description or getattr(runs[0].last_model or fitted, "description", ""),
        "n_parameters": getattr(runs[0].last_model, "n_parameters", None),
        "model": model_cfg.name,
        "params": params,
        "training_seeds": [params["seed"] + offset for offset in range(model_cfg.seeds)],
        "capabilities": fitted.capabilities.as_dict(),
    })
    return entry, runs


def run_study(config: StudyConfig, out_dir: Path, *, folds: int | None = None, quick: bool = False,
              quiet: bool = False, overwrite: bool = False, resume: bool = False, workers: int | None = None,
              scheduler: str | None = None, keep_identifiers: bool = False) -> dict[str, Any]:
    """Run ``config`` and write its results, tables, figures and report into ``out_dir``.

    Parameters
    ----------
    config : StudyConfig
        The validated study.
    out_dir : Path
        Output folder (created).
    folds : int, optional
        Override of ``protocol.folds`` for k-fold protocols.
    quick : bool
        Smoke run: ``config.quick`` folds, subsample and model subset, and each model's ``quick_params``.
    quiet : bool
        No progress bars.
    overwrite : bool
        Replace an earlier study's results in ``out_dir`` (finished or not).
    resume : bool
        Continue the unfinished study in ``out_dir`` (killed or stopped): its finished folds are kept and an
        interrupted training continues from its last epoch; the results equal those of an uninterrupted run.
        Every study records its progress in ``out_dir/.resume`` (removed when it finishes).
    workers, scheduler : optional
        Run the folds × models × seeds as Dask tasks (:func:`run_folds_on_dask`) on a local cluster of
        ``workers`` processes, or on the running ``scheduler`` (its workers must see ``out_dir``); the results
        equal the sequential run's. ``results.json`` records where each task ran.
    keep_identifiers : bool
        Write absolute paths of the data and config in the outputs (default: paths relative to the data root
        or the working folder, else names only; :func:`medlens.report.provenance.shown_path`).

    Returns
    -------
    dict
        The ``results.json`` content.
    """
    from medlens.report.study_outputs import write_study_outputs

    started = time.perf_counter()
    models = [m for m in config.models if not (quick and config.quick.models and m.key not in config.quick.models)]
    pipelines = check_model_params(config, models, quick)
    out_dir = prepare_output(out_dir, overwrite, resume)
    seed_everything(config.seed)
    k = folds or (config.quick.folds if quick else config.protocol.folds)
    data, outer = study_data(config, quick, k, pipelines)
    augment = _augmenter(config)
    store = FoldStore(out_dir / RESUME_FOLDER)
    if overwrite:
        store.clear()
    store.bind({"config": config.model_dump(mode="json"), "data_md5": data.meta.get("source_md5"),
                "n_samples": len(data), "quick": quick, "folds": k}, resume)

    results_models: dict[str, Any] = {}
    oof: dict[str, dict[str, Any]] = {}
    labels = data.meta.get("labels")
    steps = sum(m.seeds for m in models) * len(outer)
    distributed = workers is not None or scheduler_address(scheduler) is not None
    executed = {"kind": "sequential", "where": "this process"}
    with progress_bar(steps, "study", disable=quiet) as advance_for:
        if distributed:
            executed = {"kind": "dask", **run_folds_on_dask(config, models, outer, quick, k, store, workers, scheduler,
                                                           advance_for)}
        for model_cfg in models:
            advance = (lambda: None) if distributed else advance_for(model_cfg.key)
            entry, runs = evaluate_model(model_cfg, data, outer, config, quick, advance, augment, store)
            first = runs[0]
            explained = None
            if first.last_model is not None and _explained(first.last_model):
                explained = explain_examples(first.last_model, data, outer[-1], first.oof, labels)
            results_models[model_cfg.key] = entry
            oof[model_cfg.key] = {"y_true": data.labels, "p": first.oof, "fold": first.fold_of,
                                  "explain": explained, "p_seeds": [cv.oof for cv in runs[1:]]}
            if first.oof_calibrated is not None:
                oof[model_cfg.key]["p_calibrated"] = first.oof_calibrated

    protocol = config.protocol.model_dump()
    protocol.update(folds=len(outer) if config.protocol.kind == "kfold" else None,
                    grouped_by="patient" if (config.protocol.group_by == "patient" and data.groups is not None)
                    else None, quick=quick)
    results = {
        "study": config.study,
        "title": config.title or config.study,
        "description": config.description,
        "task": {"kind": "binary" if data.n_classes == 2 else "multiclass", "labels": labels},
        "data": {"name": config.data.name, "n_samples": len(data),
                 "class_counts": np.bincount(data.labels, minlength=data.n_classes).tolist(),
                 "n_groups": None if data.groups is None else int(len(np.unique(data.groups))),
                 "image_shape": list(data.images.shape[1:]),
                 "n_features": 0 if data.features is None else int(data.features.shape[1]),
                 "source": shown_path(data.meta.get("source"), keep_identifiers),
                 "label_rule": data.meta.get("label_rule"),
                 **_catalogue_provenance(config.data.name)},
        "protocol": protocol,
        "models": results_models,
        "reference": config.reference.model_dump() if config.reference else None,
        "provenance": {
            "config": shown_config(config, keep_identifiers),
            "config_file": shown_path(config.source, keep_identifiers),
            "data_md5": data.meta.get("source_md5"),
            "versions": package_versions(),
            "seed": config.seed,
            "platform": platform_description(),
            "executed": executed,
            "wall_seconds": round(time.perf_counter() - started, 2),
        },
    }
    write_study_outputs(results, oof, data, out_dir)
    results["provenance"]["wall_seconds"] = round(time.perf_counter() - started, 2)
    # last: marks a finished study
    write_text_atomically(out_dir / "results.json", json.dumps(json_ready(results), indent=2))
    store.clear()
    return results
