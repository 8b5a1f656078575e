"""Segmentation benchmarks on the real sets in MEDLENS_DATA: what `medlens segment plan` + `segment cv` give.

Each dataset sub-command runs the library functions behind the commands, with nothing set by hand:
``make_plan`` (``segment plan DATA``) and ``cross_validate`` (``segment cv DATA --plan PLAN --folds 5``),
and appends one JSON line per fold and per summary to ``--log``. The split is the commands' own: the
whole set for Montgomery, LIDC and ISBI; for MSD the cross-validation runs on the 130 training patches
and the ensemble of its fold models (``segment predict CV_DIR``) is scored on the 130 test patches; for
the nuclei it runs on the 60 training images and the fold ensemble is scored on the 16 held-out images
(the split of the recorded results).

    python benchmarks/quality/bench_segment.py montgomery --out runs/seg-montgomery
    python benchmarks/quality/bench_segment.py lidc --out runs/seg-lidc
    python benchmarks/quality/bench_segment.py isbi --out runs/seg-isbi
    python benchmarks/quality/bench_segment.py msd --out runs/seg-msd
    python benchmarks/quality/bench_segment.py nuclei --out runs/seg-nuclei

A tuned figure may stand beside the default one: ``--set FIELD=JSON`` changes a plan field (dotted path)
before the cross-validation, ``--seeds N`` trains an ensemble of N seeds per fold, ``--modality CT``
declares the modality as ``segment plan --modality`` does; the log line then carries these flags
(``"tuned"``) so it is never mistaken for the default.

    python benchmarks/quality/bench_segment.py msd --seeds 3 --out runs/seg-msd-3seeds
    python benchmarks/quality/bench_segment.py montgomery --only-folds 0 --set network.name='"atrous"'

``montgomery-issue23`` reruns, on this code, the one Montgomery fold that issue 23's no-change acceptance
recorded on the code before the typed plan (``bench_segment.py montgomery --size 128 --folds 5
--only-folds 0 --epochs 20 --steps 25 --keep largest --keep-count 2 --fill-holes``): the same plan fields
set explicitly, and its Dice compared to 4 decimals with ``--baseline`` (the JSON lines of that run).

``speed`` compares the training throughput of ``train_segmenter`` with a plain MONAI loop and times the
inference of one 512×512 slice.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from medlens.segment.bundle import build_model, load_ensemble
from medlens.segment.cv import cross_validate
from medlens.segment.datasets import load_folder
from medlens.segment.evaluate import evaluate_cases
from medlens.segment.infer import segment_image
from medlens.segment.instances import score_instances
from medlens.segment.losses import build_loss
from medlens.segment.networks import count_parameters
from medlens.segment.postprocess import mean_case_dice, postprocess
from medlens.segment.prepare import prepare_case
from medlens.segment.rules import make_plan
from medlens.segment.train import PatchDataset, train_segmenter

DATA = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))
SETS = {  # name: (path under DATA, mask mode, classes)
    "montgomery": ("montgomery_cxr_lung_masks", "binary", 2),
    "lidc": ("lidc_idri_nodule_vois", "binary", 2),
    "isbi": ("isbi2012_membrane", "binary", 2),
    "msd": ("msd_lung_tumour_patches/val_patches.npz", "binary", 2),
    "nuclei": ("nuclei_dsb2018_stage1_subset", "instance", 3),
}
NUCLEI_HELD_OUT = 16  # the first 16 of a seeded permutation (seed 0), as in the recorded results


def log(args, record: dict) -> None:
    record = {"bench": args.cmd, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    print(json.dumps(record), flush=True)
    with open(args.log, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def tuned_flags(args) -> dict:
    """What differs from the commands' defaults in this run (empty for the default figures)."""
    flags = {}
    if args.set:
        flags["set"] = args.set
    if args.seeds != 1:
        flags["seeds"] = args.seeds
    if args.modality:
        flags["modality"] = args.modality
    return flags


def overrides(args) -> dict:
    changes = {}
    for item in args.set or []:
        field, _, value = item.partition("=")
        changes[field] = json.loads(value)
    return changes


def dataset(name: str):
    """(cases the plan and the cross-validation see, held-out cases or None, the data path)."""
    relative, mode, classes = SETS[name]
    root = DATA / relative
    cases = load_folder(root, mode, classes)
    if name == "msd":
        return cases, load_folder(root.with_name("test_patches.npz")), root
    if name == "nuclei":
        order = np.random.default_rng(0).permutation(len(cases))
        held_out = [cases[i] for i in order[:NUCLEI_HELD_OUT]]
        return [cases[i] for i in order[NUCLEI_HELD_OUT:]], held_out, root
    return cases, None, root


def plan_summary(plan) -> dict:
    return {"target_spacing": plan.target_spacing, "patch": plan.patch_size, "batch": plan.batch_size,
            "network": plan.network.model_dump(), "steps": plan.training.epochs * plan.training.steps_per_epoch,
            "augmentations": plan.augmentations.model_dump(), "tta_rotations": plan.inference.tta_rotations}


def run_dataset(args) -> None:
    cases, held_out, root = dataset(args.cmd)
    plan = make_plan(cases, root, SETS[args.cmd][1], SETS[args.cmd][2], modality=args.modality)
    if args.set:
        plan = plan.copy_with(**overrides(args))
    flags = tuned_flags(args)
    common = {"tuned": flags} if flags else {"defaults": True}
    log(args, {"stage": "plan", **common, **plan_summary(plan), "reasons": plan.reasons})
    result = cross_validate(cases, plan, args.folds, args.out, args.seeds, args.only_folds,
                            log=lambda m: print(m, flush=True))
    for fold in result.folds:
        log(args, {"stage": "fold", **common, "fold": fold.fold, "n_train": fold.n_train, "n_test": fold.n_test,
                   "train_seconds": fold.train_seconds, "steps": fold.steps, "seeds": args.seeds,
                   "infer_seconds_per_case": fold.infer_seconds_per_case, "threads": torch.get_num_threads(),
                   **{k: v["mean"] if isinstance(v, dict) else v for k, v in fold.summary.items()}})
    post = result.plan.postprocessing
    log(args, {"summary": f"{args.cmd} cv", **common, "folds_run": [f.fold for f in result.folds],
               "n_cases": len(result.cases), "seeds": args.seeds,
               "params": count_parameters(build_model(result.plan)),
               "train_seconds_per_fold": float(np.mean([f.train_seconds for f in result.folds])),
               "train_seconds_max": float(np.max([f.train_seconds for f in result.folds])),
               **result.summary, "before_postprocessing": result.summary_before_postprocessing,
               "postprocessing": post.steps(), "decision": post.decision.model_dump()})
    if held_out is not None and args.out:
        score_held_out(args, held_out, common)


def score_held_out(args, cases, common: dict) -> None:
    """Score the ensemble of the fold models (``segment predict CV_DIR``) on the held-out cases."""
    models, plan = load_ensemble([args.out])
    preds = {c.case_id: segment_image(models, plan, c.image) for c in cases}
    record = {"summary": f"{args.cmd} held-out, ensemble of {len(models)} fold models", **common,
              "n_cases": len(cases), "postprocessing": plan.postprocessing.steps()}
    if plan.dataset.mask_mode == "instance":
        rows = score_instances(preds, cases, options=plan.inference.instances.model_dump())
        n_true = sum(r["n_true"] for r in rows)
        record.update(ap50=float(np.mean([r["ap"] for r in rows])), aji=float(np.mean([r["aji"] for r in rows])),
                      count_error=abs(sum(r["n_pred"] for r in rows) - n_true) / n_true,
                      count_error_mean_per_image=float(np.mean([abs(r["n_pred"] - r["n_true"]) / max(r["n_true"], 1)
                                                                for r in rows])))
    else:
        record.update(evaluate_cases(preds, cases, plan.n_classes)["summary"])
    log(args, record)


def legacy_montgomery(args) -> None:
    """Issue 23's Montgomery fold on this code (see the module docstring)."""
    cases, _, root = dataset("montgomery")
    plan = make_plan(cases, root).copy_with(**{
        "target_spacing": [4.0, 4.0], "patch_size": [128, 128], "batch_size": 8,
        "network": {"name": "unet", "channels": 16, "depth": 4},
        "augmentations": {"flip_axes": [0, 1], "flip_prob": 0.5, "intensity_scale": 0.1, "intensity_shift": 0.1},
        "training.epochs": 20, "training.steps_per_epoch": 25,
        "inference.tta_flips": False, "inference.tta_rotations": False, "postprocessing.candidates": []})
    result = cross_validate(cases, plan, 5, args.out, only_folds=[0])
    truths = {c["case"]: next(x.mask for x in cases if x.case_id == c["case"]) for c in result.cases}
    post = {k: postprocess(v, {"keep_component": "largest", "keep_count": 2, "fill_holes": True})
            for k, v in result.predictions.items()}
    figures = {"dice": result.summary["dice"]["mean"], "post_dice": mean_case_dice(post, truths, 2)}
    record = {"summary": "montgomery issue-23 fold 0", "steps": result.folds[0].steps,
              "train_seconds": result.folds[0].train_seconds, **figures}
    if args.baseline:
        before = [json.loads(line) for line in Path(args.baseline).read_text().splitlines() if line.strip()]
        fold0 = next(r for r in before if r.get("fold") == 0 and r.get("bench") == "montgomery")
        record["baseline"] = {k: fold0[k] for k in figures}
        record["identical_to_4_decimals"] = all(round(figures[k], 4) == round(fold0[k], 4) for k in figures)
    log(args, record)


def speed(args) -> None:
    """Training patches/s of ``train_segmenter`` vs a plain MONAI loop (same net, data, batch, patches),
    and sliding-window inference time of one 512×512 slice."""
    cases = load_folder(DATA / SETS["montgomery"][0], "binary", limit=20)
    plan = make_plan(cases, DATA / SETS["montgomery"][0]).copy_with(**{
        "target_spacing": [2.0, 2.0], "patch_size": [128, 128], "batch_size": 8, "augmentations.elastic": None,
        "training.epochs": 1, "training.steps_per_epoch": args.steps})
    torch.manual_seed(0)
    ref = build_model(plan)
    loss_fn, opt = build_loss("dicece"), torch.optim.AdamW(ref.parameters(), lr=2e-3)
    data = PatchDataset([prepare_case(plan, c) for c in cases], plan, args.steps * 8, 0)
    ref.train()
    t0 = time.perf_counter()
    for x, y in torch.utils.data.DataLoader(data, batch_size=8):
        opt.zero_grad()
        loss_fn(ref(x), y).backward()
        opt.step()
    ref_rate = args.steps * 8 / (time.perf_counter() - t0)
    model, hist = train_segmenter(plan, cases)
    ours = hist.steps * 8 / hist.seconds
    plan = plan.copy_with(target_spacing=[1.0, 1.0], patch_size=[256, 256])
    times = []
    for tta in (False, True):
        segment_image(model, plan, cases[0].image, tta=tta)
        t0 = time.perf_counter()
        for _ in range(3):
            segment_image(model, plan, cases[0].image, tta=tta)
        times.append((time.perf_counter() - t0) / 3)
    log(args, {"patches_per_s_medlens": ours, "patches_per_s_plain_monai": ref_rate, "ratio": ours / ref_rate,
               "infer_512_seconds": times[0], "infer_512_tta_seconds": times[1], "threads": torch.get_num_threads()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=[*SETS, "montgomery-issue23", "speed"])
    ap.add_argument("--out", help="folder for the fold models, metrics.csv, cv.json and the decided plan "
                                  "(a rerun with the same folder resumes)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, nargs="*")
    ap.add_argument("--seeds", type=int, default=1, help="tuned: an ensemble of N training seeds per fold")
    ap.add_argument("--set", action="append", metavar="FIELD=JSON",
                    help="tuned: set a plan field (dotted path) to a JSON value before the cross-validation")
    ap.add_argument("--modality", help="tuned: declare the modality, as `segment plan --modality` (CT: the "
                                       "dataset-wide CT normalisation, for CT stored without Hounsfield units)")
    ap.add_argument("--baseline", help="montgomery-issue23: JSON lines of the run on the earlier code")
    ap.add_argument("--steps", type=int, default=20, help="speed: training steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", default="benchmarks/results/segment_runs.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    if args.cmd == "montgomery-issue23":
        legacy_montgomery(args)
    elif args.cmd == "speed":
        speed(args)
    else:
        run_dataset(args)


if __name__ == "__main__":
    main()
