"""Cross-validation of a segmentation plan: fold models, per-case and per-fold metrics, post-processing.

:func:`cross_validate` is what ``medlens segment cv DATA --plan PLAN --folds K --out DIR`` runs:

1. **Folds.** K folds from :func:`medlens.evaluate.splits.kfold_splits` (seed 0), grouped by patient
   where the cases carry patient ids (LIDC-IDRI: no patient in both parts of a fold) and stratified by
   the cases' subgroup where the dataset has one (Montgomery: normal / tuberculosis), otherwise by
   foreground size (above or below the median).
2. **Fold models.** Each fold trains the plan's network on its training part
   (:func:`medlens.segment.train.train_segmenter`), or ``seeds`` networks with training seeds
   ``seed, seed + 1, ...`` whose probabilities are averaged (an ensemble of seeds, only when asked), and
   keeps each as a segmenter folder ``DIR/fold<k>/seed<s>`` (:mod:`medlens.segment.bundle`). A member
   already there with the same plan is loaded instead of trained again, so an interrupted run resumes.
3. **Validation predictions** at each case's own resolution, without post-processing, scored per case
   (Dice, IoU, HD95, pixel error; AP@0.5 and AJI of the instances in instance mode).
4. **Post-processing** chosen on all validation predictions together
   (:func:`medlens.segment.postprocess.decide_postprocessing` over the plan's ``postprocessing.candidates``):
   each step is kept only when it raises the mean Dice. The decision and its figures go into the plan
   (``DIR/plan.json`` and every fold model's ``plan.json``), so ``segment predict`` applies it.
5. **Outputs**: ``metrics.csv`` (one row per case and fold, after the chosen post-processing, with the
   Dice before it), ``cv.json`` (per-fold and overall summaries before and after post-processing, the
   decision, the split, training seconds per fold, package versions).

A cross-validation folder predicts as the ensemble of its fold models
(:func:`medlens.segment.bundle.load_ensemble`), as nnU-Net does.
"""

from __future__ import annotations

import json
import shutil
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medlens.deploy.bundle import CHECKSUMS, load_bundle
from medlens.engine.trainer import History, resumable
from medlens.errors import ConfigError
from medlens.evaluate.splits import kfold_splits
from medlens.files import write_csv_atomically, write_text_atomically
from medlens.segment.bundle import CV_RECORD, load_history, load_segmenter, save_segmenter
from medlens.segment.datasets import SegCase
from medlens.segment.evaluate import case_metrics, fscore_pixel_error, summarize_cases
from medlens.segment.infer import segment_image
from medlens.segment.instances import score_instances
from medlens.segment.plan import PLAN_FILE, SegmentationPlan, save_plan
from medlens.segment.postprocess import NO_POSTPROCESSING, decide_postprocessing, postprocess
from medlens.segment.train import train_segmenter

SPLIT_SEED = 0
METRICS_FILE = "metrics.csv"


@dataclass
class FoldResult:
    """One fold: its cases, training time and steps (all members), and its summary after post-processing."""

    fold: int
    n_train: int
    n_test: int
    train_seconds: float
    steps: int
    infer_seconds_per_case: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class CVResult:
    """What :func:`cross_validate` measured; ``predictions`` are the raw validation label maps by case id."""

    plan: SegmentationPlan
    folds: list[FoldResult]
    cases: list[dict[str, Any]]
    summary: dict[str, Any]
    summary_before_postprocessing: dict[str, Any]
    predictions: dict[str, np.ndarray]
    record: dict[str, Any]


def strata(cases: list[SegCase]) -> tuple[np.ndarray, str]:
    """Stratification labels of the folds and what they are (see the module docstring)."""
    if all("subgroup" in c.meta for c in cases):
        return np.array([str(c.meta["subgroup"]) for c in cases]), "subgroup"
    sizes = np.array([int((c.mask > 0).sum()) for c in cases])
    return (sizes > np.median(sizes)).astype(int), "foreground size above the median"


def fold_splits(cases: list[SegCase], folds: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The folds of ``cases`` and how they were made (see the module docstring)."""
    labels, stratified_by = strata(cases)
    groups = np.array([c.group for c in cases])
    grouped = len(set(groups.tolist())) < len(cases)
    splits = kfold_splits(labels, groups, k=folds, seed=SPLIT_SEED)
    return splits, {"folds": folds, "seed": SPLIT_SEED, "stratified_by": stratified_by,
                    "grouped_by": "patient" if grouped else "case", "n_groups": len(set(groups.tolist()))}


def segmenter_folders_of_fold(folder: Path) -> list[Path]:
    """The seed bundles of one fold folder (``seed<s>``), in order."""
    return sorted(p.parent for p in folder.glob(f"seed*/{CHECKSUMS}"))


def _same_plan(a: SegmentationPlan, b: SegmentationPlan) -> bool:
    strip = lambda p: {k: v for k, v in p.to_dict().items() if k != "postprocessing"}  # noqa: E731
    return strip(a) == strip(b)


def fold_members(plan: SegmentationPlan, train: list[SegCase], folder: Path | None, seeds: int,
                 progress: bool = False) -> tuple[list[torch.nn.Module], list[History]]:
    """``seeds`` models trained from ``plan`` with training seeds ``plan.training.seed + i`` on ``train``,
    each kept in ``folder/seed<s>``; one already there with the same plan is loaded, and a training that was
    killed continues from its last epoch (:func:`medlens.engine.trainer.resumable`)."""
    models, histories = [], []
    for offset in range(seeds):
        seed = plan.training.seed + offset
        member = plan.copy_with(**{"training.seed": seed})
        where = None if folder is None else folder / f"seed{seed}"
        if where is not None and (where / CHECKSUMS).is_file():
            model, saved = load_segmenter(where)
            if not _same_plan(saved, member):
                raise ConfigError(f"{where}: holds a model trained from another plan; give another --out folder")
            history = load_history(where)
        else:
            progress_folder = None if where is None else where.parent / f".{where.name}.resume"
            with resumable(progress_folder):  # a fold killed while training continues from its last epoch
                model, history = train_segmenter(member, train, progress=progress)
            if where is not None:
                save_segmenter(model, member, where, history)
                shutil.rmtree(progress_folder, ignore_errors=True)
        models.append(model)
        histories.append(history)
    return models, histories


def _score_case(plan: SegmentationPlan, case: SegCase, pred: np.ndarray) -> dict[str, Any]:
    """The metrics of one validation prediction (instance mode: on the foreground, plus AP and AJI)."""
    if plan.dataset.mask_mode == "instance":
        options = plan.inference.instances.model_dump() if plan.inference.instances else None
        inst = score_instances({case.case_id: pred}, [case], options=options)[0]
        row = case_metrics((pred > 0).astype(np.int64), (case.mask > 0).astype(np.int64), 2, case.image.spacing)
        row.update({k: inst[k] for k in ("ap", "aji", "n_true", "n_pred")})
        return row
    return case_metrics(pred, case.mask, plan.n_classes, case.image.spacing)


def _summary(plan: SegmentationPlan, rows: list[dict[str, Any]], preds: list[np.ndarray],
             truths: list[np.ndarray]) -> dict[str, Any]:
    keys = ("dice", "iou", "hd95", "pixel_error") + (("ap", "aji") if plan.dataset.mask_mode == "instance" else ())
    summary = summarize_cases(rows, keys)
    if plan.n_classes == 2:
        summary["pixel_error_fscore"] = fscore_pixel_error(preds, truths)["error"]
    if plan.dataset.mask_mode == "instance":
        n_true = sum(r["n_true"] for r in rows)
        summary["count_error"] = abs(sum(r["n_pred"] for r in rows) - n_true) / max(n_true, 1)
        summary["pixel_error_fscore"] = fscore_pixel_error([p > 0 for p in preds], [t > 0 for t in truths])["error"]
    return summary


def cross_validate(cases: list[SegCase], plan: SegmentationPlan, folds: int = 5, out: str | Path | None = None,
                   seeds: int = 1, only_folds: list[int] | None = None, progress: bool = False,
                   log: Callable[[str], None] | None = None) -> CVResult:
    """Cross-validate ``plan`` on ``cases`` (see the module docstring); with ``out``, write the fold models,
    ``metrics.csv``, ``cv.json`` and the decided ``plan.json`` there. ``only_folds`` runs a subset of the
    folds (the post-processing is then decided on their cases alone, and ``cv.json`` says which)."""
    if seeds < 1:
        raise ConfigError(f"segment cv: seeds must be at least 1, got {seeds}")
    if any(c.mask is None for c in cases):
        raise ConfigError("segment cv: every case needs a mask")
    started = time.perf_counter()
    out = None if out is None else Path(out)
    splits, protocol = fold_splits(cases, folds)
    run = [f for f in range(folds) if only_folds is None or f in only_folds]
    if not run:
        raise ConfigError(f"segment cv: no fold among {only_folds} in 0..{folds - 1}")
    log = log or (lambda message: None)
    fold_results, raw, fold_of = [], {}, {}
    for f in run:
        train_idx, test_idx = splits[f]
        train, test = [cases[i] for i in train_idx], [cases[i] for i in test_idx]
        log(f"fold {f}: training on {len(train)} cases, {seeds} seed(s)")
        members, histories = fold_members(plan, train, None if out is None else out / f"fold{f}", seeds, progress)
        model = members[0] if len(members) == 1 else members
        t0 = time.perf_counter()
        for case in test:
            raw[case.case_id] = segment_image(model, plan, case.image, postprocessing=False).astype(np.uint8)
            fold_of[case.case_id] = f
        infer_s = (time.perf_counter() - t0) / len(test)
        fold_results.append(FoldResult(f, len(train), len(test),
                                       float(sum(h.seconds for h in histories if h is not None)),
                                       int(histories[0].steps) if histories[0] is not None else 0, infer_s))
        log(f"fold {f}: trained {fold_results[-1].train_seconds:.0f} s, {infer_s:.2f} s per validation case")
    scored = [c for c in cases if c.case_id in raw]
    truths = {c.case_id: c.mask for c in scored}
    candidates = plan.postprocessing.candidates if plan.dataset.mask_mode != "instance" else []
    chosen, decision = decide_postprocessing(raw, truths, plan.n_classes, candidates)
    decided = plan.copy_with(**{f"postprocessing.{k}": v for k, v in chosen.items()},
                             **{"postprocessing.decision": {"folds": folds, "n_cases": len(scored), **decision}})
    final = {k: postprocess(v, chosen) for k, v in raw.items()}
    rows, rows_before = [], []
    for case in scored:
        row = {"fold": fold_of[case.case_id], "case": case.case_id}
        if "subgroup" in case.meta:
            row["subgroup"] = case.meta["subgroup"]
        rows_before.append(_score_case(plan, case, raw[case.case_id]))
        row.update(_score_case(plan, case, final[case.case_id]) if chosen != NO_POSTPROCESSING else rows_before[-1])
        row["dice_before_postprocessing"] = rows_before[-1]["dice"]
        rows.append(row)
    for fr in fold_results:
        mine = [i for i, c in enumerate(scored) if fold_of[c.case_id] == fr.fold]
        fr.summary = _summary(plan, [rows[i] for i in mine], [final[scored[i].case_id] for i in mine],
                              [scored[i].mask for i in mine])
    summary = _summary(plan, rows, [final[c.case_id] for c in scored], [c.mask for c in scored])
    summary_before = _summary(plan, rows_before, [raw[c.case_id] for c in scored], [c.mask for c in scored])
    record = {
        "plan": decided.source, "dataset": decided.dataset.model_dump(), "protocol": protocol,
        "folds_run": run, "seeds": seeds,
        "folds": [{"fold": fr.fold, "n_train": fr.n_train, "n_test": fr.n_test, "train_seconds": fr.train_seconds,
                   "steps": fr.steps, "infer_seconds_per_case": fr.infer_seconds_per_case, "summary": fr.summary}
                  for fr in fold_results],
        "summary": summary, "summary_before_postprocessing": summary_before,
        "postprocessing": decided.postprocessing.model_dump(),
        "provenance": {"versions": _versions(), "wall_seconds": time.perf_counter() - started,
                       "threads": torch.get_num_threads(), "machine": platform.machine()},
    }
    if out is not None:
        _write(out, decided, rows, record, run)
    return CVResult(decided, fold_results, rows, summary, summary_before, raw, record)


def _write(out: Path, plan: SegmentationPlan, rows: list[dict[str, Any]], record: dict[str, Any],
           run: list[int]) -> None:
    save_plan(plan, out / PLAN_FILE)
    for f in run:
        for member in segmenter_folders_of_fold(out / f"fold{f}"):
            loaded = load_bundle(member, kind="segmenter")  # re-saved whole: its plan is in its integrity record
            seed = plan.copy_with(**{"training.seed": loaded.plan.training.seed})
            save_segmenter(loaded.model, seed, member, loaded.history)
    write_csv_atomically(out / METRICS_FILE, rows)
    write_text_atomically(out / CV_RECORD, json.dumps(record, indent=2))


def _versions() -> dict[str, str]:
    import monai

    import medlens

    return {"medlens": medlens.__version__, "torch": torch.__version__, "monai": monai.__version__,
            "numpy": np.__version__}
