"""Segmentation benchmarks on the real sets in MEDLENS_DATA.

Each sub-command trains with ``medlens.segment`` (plan → train → sliding-window predict at the
original resolution → evaluate) and appends one JSON line per result to ``--log``.

    python benchmarks/quality/bench_segment.py montgomery --size 128 --folds 5 --epochs 20 --keep largest --keep-count 2 --fill-holes
    python benchmarks/quality/bench_segment.py lidc --folds 5 --epochs 20 --tta 1 --keep central --baseline
    python benchmarks/quality/bench_segment.py isbi --folds 5 --epochs 20
    python benchmarks/quality/bench_segment.py compare --epochs 15
    python benchmarks/quality/bench_segment.py msd --epochs 160 --modality CT --rot90 --elastic-sigma 3 --tta 1 --tta-rotations --seeds 3
    python benchmarks/quality/bench_segment.py nuclei --epochs 200 --channels 32 --tta 1 --select --zoom 0.5 1 2 3
    python benchmarks/quality/bench_segment.py speed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from medlens.engine.trainer import History
from medlens.evaluate.splits import kfold_splits
from medlens.image import MedImage
from medlens.segment.datasets import SegCase, case_groups, load_folder
from medlens.segment.evaluate import ISBI_THRESHOLDS, evaluate_cases, fscore_pixel_error, summarize
from medlens.segment.infer import keep_component, postprocess, segment_image
from medlens.segment.instances import diameter_range, score_instances
from medlens.segment.losses import build_loss
from medlens.segment.networks import count_parameters
from medlens.segment.plan import add_augmentations, make_plan, prepare_case, resize
from medlens.segment.train import PatchDataset, build_model, load_bundle, save_bundle, train_segmenter

DATA = Path(os.environ.get("MEDLENS_DATA", "/work/shared/data"))


def log(args, record: dict) -> None:
    record = {"bench": args.cmd, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    print(json.dumps(record), flush=True)
    with open(args.log, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def configure(plan: dict, args, network: str | None = None) -> dict:
    plan["training"].update(epochs=args.epochs, steps_per_epoch=args.steps)
    plan["inference"]["tta_flips"] = bool(args.tta)
    add_augmentations(plan, args.rot90, args.elastic_sigma, args.elastic_prob)
    plan["inference"]["tta_rotations"] = bool(args.tta_rotations)  # explicit, so recorded commands reproduce
    if network:
        plan["network"]["name"] = network
    if args.channels:
        plan["network"]["channels"] = args.channels
    return plan


def threshold_baseline(case, hu: float = -500.0) -> np.ndarray:
    """Trivial nodule baseline: voxels above ``hu`` HU, the 26-connected component nearest the VOI centre."""
    return keep_component((case.image.array[0] > hu).astype(np.int64), "central")


def other_rotation_tta(plan: dict, args) -> dict:
    """``plan`` with the other ``--tta-rotations`` setting (for ``--compare-rotations`` on the same models)."""
    return {**plan, "inference": {**plan["inference"], "tta_rotations": not args.tta_rotations}}


def train_members(args, plan: dict, cases, folder: str) -> tuple[list, list]:
    """``--seeds N`` models trained from ``plan`` with training seeds ``seed .. seed + N - 1`` on ``cases``,
    and their histories (one model, the plan's own seed, by default).

    With ``--models DIR`` each member is kept as a bundle in ``DIR/<folder>/seed<k>``, and a member whose
    bundle is already there is loaded instead of trained again, so a later run with more ``--seeds`` trains
    only the new members. A bundle saved from another plan (other data, fold or settings) stops the run."""
    members, histories = [], []
    for offset in range(args.seeds):
        p = json.loads(json.dumps(plan))
        p["training"]["seed"] = int(plan["training"].get("seed", 0)) + offset
        where = Path(args.models) / folder / f"seed{p['training']['seed']}" if args.models else None
        if where is not None and all((where / name).is_file() for name in ("model.pt", "history.json")):
            model, saved = load_bundle(where)
            differing = sorted(k for k in p.keys() | saved.keys() if not k.startswith("_") and p.get(k) != saved.get(k))
            if differing:
                raise SystemExit(f"{where}: saved with another plan (differs in {', '.join(differing)}); "
                                 "give another --models folder")
            history = History(**json.loads((where / "history.json").read_text()))
        else:
            model, history = train_segmenter(p, cases)
            if where is not None:
                save_bundle(model, p, where, history)
        members.append(model)
        histories.append(history)
    return members, histories


def ensemble_of(members: list):
    """What ``segment_image`` takes: the single model, or the list of members (their mean probabilities)."""
    return members[0] if len(members) == 1 else members


def run_cv(args, cases, plan, strat, folds: int, network: str | None = None, fold_ids=None) -> list[dict]:
    """Train/evaluate each fold; returns per-fold summaries (evaluation at the original resolution).

    With ``--keep MODE`` (and ``--keep-count``, ``--fill-holes``) the same predictions are also scored
    after :func:`medlens.segment.infer.postprocess` (``post_*`` keys); with ``--baseline`` the HU-threshold
    baseline is scored on the same test cases (``baseline_*`` keys)."""
    splits = kfold_splits(strat, case_groups(cases), k=folds, seed=0)
    out = []
    for f, (tr, te) in enumerate(splits):
        if fold_ids is not None and f not in fold_ids:
            continue
        p = configure(json.loads(json.dumps(plan)), args, network)
        members, histories = train_members(args, p, [cases[i] for i in tr], f"{args.cmd}/fold{f}")
        model = ensemble_of(members)
        t0 = time.perf_counter()
        preds, foreground = {}, []
        for i in te:
            preds[cases[i].case_id], prob = segment_image(model, p, cases[i].image, return_probabilities=True)
            foreground.append(prob[1])
        infer_s = (time.perf_counter() - t0) / len(te)
        res = evaluate_cases(preds, [cases[i] for i in te], p["dataset"]["n_classes"])
        extra = {}
        if getattr(args, "keep", None):
            post = {"keep_component": args.keep, "keep_count": args.keep_count, "fill_holes": args.fill_holes}
            extra["post"] = {k: postprocess(v, post) for k, v in preds.items()}
        if getattr(args, "baseline", False):
            extra["baseline"] = {cases[i].case_id: threshold_baseline(cases[i]) for i in te}
        if getattr(args, "compare_rotations", False):  # the same model with the other rotation TTA setting
            alt = other_rotation_tta(p, args)
            extra["alt_tta"] = {cases[i].case_id: segment_image(model, alt, cases[i].image) for i in te}
        if len(members) > 1:  # the first member alone: what the ensemble adds
            extra["seed0"] = {cases[i].case_id: segment_image(members[0], p, cases[i].image) for i in te}
        for name, other in extra.items():
            r2 = evaluate_cases(other, [cases[i] for i in te], p["dataset"]["n_classes"])
            for row, row2 in zip(res["cases"], r2["cases"]):
                row.update({f"{name}_{k}": row2[k] for k in ("dice", "iou", "hd95", "pixel_error")})
        rec = {"fold": f, "network": p["network"]["name"], "n_train": len(tr), "n_test": len(te),
               "train_seconds": sum(h.seconds for h in histories), "steps": histories[0].steps,
               "ensemble_seeds": args.seeds, "infer_seconds_per_case": infer_s,
               "params": count_parameters(members[0]), "patch": p["patch_size"], "spacing": p["target_spacing"],
               "augmentations": p["augmentations"],
               **{k: v["mean"] if isinstance(v, dict) else v for k, v in res["summary"].items()},
               **challenge_pixel_error(foreground, [cases[i].mask for i in te]),
               **{f"{name}_{k}": float(np.nanmean([r[f"{name}_{k}"] for r in res["cases"]]))
                  for name in extra for k in ("dice", "iou", "hd95")},
               "cases": res["cases"], "foreground": foreground, "truths": [cases[i].mask for i in te]}
        out.append(rec)
        log(args, {k: v for k, v in rec.items() if k not in ("cases", "foreground", "truths")})
    return out


def challenge_pixel_error(foreground: list, truths: list) -> dict:
    """The ISBI 2012 pixel error (1 - pooled foreground F-score) of foreground probabilities, at 0.5 and
    at the best threshold of the challenge's sweep (chosen on these very images, as the challenge did)."""
    at_half = fscore_pixel_error(foreground, truths)
    swept = fscore_pixel_error(foreground, truths, ISBI_THRESHOLDS)
    return {"pixel_error_fscore_at_0.5": at_half["error"], "pixel_error_fscore_swept": swept["error"],
            "pixel_error_fscore_swept_threshold": swept["threshold"]}


def cv_summary(args, name: str, folds: list[dict]) -> None:
    rows = [c for f in folds for c in f["cases"]]
    log(args, {"summary": name, "folds_run": [f["fold"] for f in folds], "n_cases": len(rows),
               "network": folds[0]["network"], "params": folds[0]["params"],
               "train_seconds_per_fold": float(np.mean([f["train_seconds"] for f in folds])),
               **{k: v for k, v in summarize(rows).items()},
               **challenge_pixel_error([m for f in folds for m in f["foreground"]],
                                       [t for f in folds for t in f["truths"]])})
    for name in ("post", "baseline", "alt_tta", "seed0"):
        if rows and f"{name}_dice" in rows[0]:
            keys = ("dice", "iou", "hd95", "pixel_error")
            renamed = [{k: r[f"{name}_{k}"] for k in keys} for r in rows]
            log(args, {"summary": f"{name}:{summary_name(args, name)}", "folds_run": [f["fold"] for f in folds],
                       "n_cases": len(rows), **summarize(renamed)})


def summary_name(args, name: str) -> str:
    if name == "post":
        return f"keep_component={args.keep}, keep_count={args.keep_count}, fill_holes={args.fill_holes}"
    if name == "alt_tta":
        return f"same models, tta_rotations={not args.tta_rotations}"
    if name == "seed0":
        return f"first member of the {args.seeds}-seed ensemble alone"
    return "threshold HU>-500, central component"


def montgomery(args, network=None, fold_ids=None):
    root = DATA / "montgomery_cxr_lung_masks"
    cases = load_folder(root, "binary")
    plan = make_plan(cases, root)
    plan["target_spacing"] = [512 / args.size] * 2
    plan["patch_size"] = [args.size] * 2
    plan["batch_size"] = max(2, (256 // args.size) ** 2 * 2)
    tb = np.array([int(c.case_id[-1]) for c in cases])
    return run_cv(args, cases, plan, tb, args.folds, network, fold_ids)


def lidc(args, network=None, fold_ids=None):
    root = DATA / "lidc_idri_nodule_vois"
    cases = load_folder(root, "binary", limit=args.limit)
    plan = make_plan(cases, root)
    strat = np.array([int(c.mask.sum() > np.median([d.mask.sum() for d in cases])) for c in cases])
    return run_cv(args, cases, plan, strat, args.folds, network, fold_ids)


def isbi(args, network=None, fold_ids=None):
    root = DATA / "isbi2012_membrane"
    cases = load_folder(root, "binary")
    plan = make_plan(cases, root)
    plan["target_spacing"] = [512 / args.size] * 2
    plan["patch_size"] = [min(args.size, 256)] * 2
    return run_cv(args, cases, plan, np.zeros(len(cases), int), args.folds, network, fold_ids)


def compare(args):
    for net in ("fcn", "unet", "atrous", "pyramid"):
        for name, fn in (("montgomery", montgomery), ("lidc", lidc)):
            folds = fn(args, network=net, fold_ids=[0])
            cv_summary(args, f"{name}-{net}", folds)


def msd(args):
    """Train on the 130 val patches, score the 130 test patches; with ``--cv K`` instead score K contiguous
    folds inside the val patches (the archive has no patient ids, so patches of one patient may sit in two
    folds: use it to rank settings, not as a result)."""
    root = DATA / "msd_lung_tumour_patches"
    train = load_folder(root / "val_patches.npz")
    if args.cv:
        size = len(train) // args.cv
        splits = [(train[:size * f] + train[size * (f + 1):], train[size * f:size * (f + 1)]) for f in range(args.cv)]
    else:
        splits = [(train, load_folder(root / "test_patches.npz"))]
    where = f"cv {args.cv} folds inside val patches" if args.cv else "test"
    rows, variants = [], {}  # (summary, fields as JSON) -> case rows of the same models scored another way
    for fold, (fit, test) in enumerate(splits):
        plan = configure(make_plan(fit, root / "val_patches.npz", modality=args.modality), args)
        if args.dataset_zscore:
            values = np.concatenate([c.image.array.ravel() for c in fit])
            plan["normalization"] = {"scheme": "ct_clip_zscore", "clip": [float(values.min()), float(values.max())],
                                     "mean": float(values.mean()), "std": float(values.std())}
        if args.min_component_size or args.keep:
            plan["inference"].update(min_component_size=args.min_component_size, keep_component=args.keep)
        members, histories = train_members(args, plan, fit, f"msd/cv{args.cv}-fold{fold}" if args.cv else "msd/test")
        model = ensemble_of(members)
        preds = {c.case_id: segment_image(model, plan, c.image) for c in test}
        res = evaluate_cases(preds, test)
        rows += res["cases"]
        others = []
        if len(members) > 1:  # the first member alone, on the same patches
            others.append((f"msd {where}: first member of the {args.seeds}-seed ensemble alone", {},
                           {c.case_id: segment_image(members[0], plan, c.image) for c in test}))
        if args.compare_rotations:  # the same models, predicted with the other test-time augmentation
            other = other_rotation_tta(plan, args)
            others.append((f"msd {where}", {"tta_rotations": not args.tta_rotations},
                           {c.case_id: segment_image(model, other, c.image) for c in test}))
        for post in POST_GRID if args.post_grid else []:
            others.append((f"msd {where}", {"postprocessing": post},
                           {k: postprocess(v, post) for k, v in preds.items()}))
        for summary, fields, other_preds in others:
            variants.setdefault((summary, json.dumps(fields)), []).extend(evaluate_cases(other_preds, test)["cases"])
        log(args, {"stage": "cv fold" if args.cv else "test", "train_seconds": sum(h.seconds for h in histories),
                   "steps": histories[0].steps, "ensemble_seeds": args.seeds,
                   "tta": bool(args.tta), "tta_rotations": bool(args.tta_rotations),
                   "channels": plan["network"]["channels"],
                   "normalization": plan["normalization"]["scheme"], "dataset_zscore": args.dataset_zscore,
                   "augmentations": plan["augmentations"], "postprocessing": post_settings(plan["inference"]),
                   **{k: v for k, v in res["summary"].items()}})
    if args.cv:
        log(args, {"summary": f"msd {where}", "ensemble_seeds": args.seeds, "tta_rotations": bool(args.tta_rotations),
                   "postprocessing": post_settings(plan["inference"]), **summarize(rows)})
    for (summary, fields), variant_rows in variants.items():
        log(args, {"summary": summary, **json.loads(fields), **summarize(variant_rows)})


POST_GRID = [{"min_component_size": n, "keep_component": keep} for keep in (None, "central")
             for n in (0, 5, 10, 20, 40)]


def post_settings(inference: dict) -> dict:
    return {k: inference.get(k) for k in ("min_component_size", "keep_component")}


MARKER_GRID = [{"markers": "components"}] \
    + [{"markers": "hmaxima", "h": h, "smooth": sm} for h in (0.5, 1.0, 2.0, 3.0) for sm in (0.0, 1.0)] \
    + [{"markers": "hmaxima_relative", "h": h, "smooth": sm} for h in (0.1, 0.2, 0.3) for sm in (0.0, 1.0)]


def instance_scores(preds: dict, cases, options: dict) -> dict:
    rows = score_instances(preds, cases, options=options)
    n_true = sum(r["n_true"] for r in rows)
    return {"instances": options, "ap50_mean": float(np.mean([r["ap"] for r in rows])),
            "aji_mean": float(np.mean([r["aji"] for r in rows])),
            "count_error_total": abs(sum(r["n_pred"] for r in rows) - n_true) / n_true,
            "count_error_mean_per_image": float(np.mean([abs(r["n_pred"] - r["n_true"]) / max(r["n_true"], 1)
                                                         for r in rows])),
            "cases": rows}


def zoomed_case(case: SegCase, zoom: float) -> SegCase:
    """``case`` resampled by ``zoom`` (image linear, instances nearest) at spacing 1: the same nuclei at
    another size, to test the diameter-range rescaling on scales the network was not trained on."""
    if zoom == 1:
        return case
    shape = tuple(int(round(s * zoom)) for s in case.image.shape)
    image = MedImage(resize(case.image.array.astype(np.float32), shape), (1.0,) * len(shape),
                     meta=dict(case.image.meta))
    inst = resize(case.instances[None].astype(np.float32), shape, labels=True)[0].astype(np.int64)
    return SegCase(image, None, case.case_id, case.group, instances=inst)


def nuclei(args):
    """60 training / 16 held-out images (seeded permutation). With ``--select`` the instance markers
    (:data:`MARKER_GRID`) are chosen by AP on 10 of the training images, with a model trained on the
    other 50, and (``--zoom``) the same 10 images resampled by each zoom factor are scored with and
    without the diameter-range rescaling (range from the 50). The final model is then trained on all 60
    and scored on the held-out 16 with the chosen markers, with and without the rescaling, and (for
    comparison) with the interiors' connected components as markers."""
    root = DATA / "nuclei_dsb2018_stage1_subset"
    cases = load_folder(root, "instance", n_classes=3)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cases))
    test, train = [cases[i] for i in order[:16]], [cases[i] for i in order[16:]]
    plan = configure(make_plan(train, root, "instance", 3), args)
    plan["patch_size"], plan["batch_size"] = [args.size, args.size], max(2, (256 // args.size) ** 2 * 2)
    train_range = plan["inference"]["instances"]["diameter_range"]
    if args.select:
        val, fit = train[:10], train[10:]
        model, _ = train_segmenter(plan, fit)
        fit_range = plan["inference"]["instances"]["diameter_range"] = diameter_range(fit)
        preds = {c.case_id: segment_image(model, plan, c.image) for c in val}
        scored = [instance_scores(preds, val, o) for o in MARKER_GRID]
        for r in scored:
            log(args, {"stage": "select (50 train / 10 validation images)", "augmentations": plan["augmentations"],
                       "diameter_range": fit_range, **{k: v for k, v in r.items() if k != "cases"}})
        plan["inference"]["instances"] = {**plan["inference"]["instances"],
                                          **max(scored, key=lambda r: r["ap50_mean"])["instances"]}
        for zoom in args.zoom or []:
            zoomed = [zoomed_case(c, zoom) for c in val]
            for bounds in (fit_range, None):
                plan["inference"]["instances"]["diameter_range"] = bounds
                preds = {c.case_id: segment_image(model, plan, c.image) for c in zoomed}
                r = instance_scores(preds, zoomed, plan["inference"]["instances"])
                log(args, {"stage": f"scale (10 validation images zoomed x{zoom:g})", "diameter_range": bounds,
                           **{k: v for k, v in r.items() if k != "cases"},
                           "per_case_ap": {c["case"][:8]: round(c["ap"], 3) for c in r["cases"]}})
        plan["inference"]["instances"]["diameter_range"] = train_range
    model, hist = train_segmenter(plan, train)
    chosen = dict(plan["inference"]["instances"])
    for bounds in (chosen["diameter_range"], None):
        plan["inference"]["instances"]["diameter_range"] = bounds
        preds = {c.case_id: segment_image(model, plan, c.image) for c in test}
        marker_options = (chosen, {**chosen, "markers": "components"}) if bounds else (chosen,)
        for options in marker_options:
            r = instance_scores(preds, test, {**options, "diameter_range": bounds})
            log(args, {"stage": "held-out test", "train_seconds": hist.seconds, "steps": hist.steps,
                       "channels": plan["network"]["channels"], "augmentations": plan["augmentations"],
                       "n_train": len(train), "n_test": len(test), **r})


def speed(args):
    """Training patches/s of ``train_segmenter`` vs a plain MONAI loop (same net, data, batch, patches),
    and sliding-window inference time of one 512×512 slice."""
    root = DATA / "montgomery_cxr_lung_masks"
    cases = load_folder(root, "binary", limit=20)
    plan = make_plan(cases, root)
    plan["target_spacing"], plan["patch_size"], plan["batch_size"] = [2.0, 2.0], [128, 128], 8
    plan["training"].update(epochs=1, steps_per_epoch=args.steps)
    # plain reference loop: MONAI UNet + DiceCELoss + Adam, same PatchDataset, no trainer
    torch.manual_seed(0)
    ref = build_model(plan)
    loss_fn, opt = build_loss("dicece"), torch.optim.AdamW(ref.parameters(), lr=2e-3)
    data = PatchDataset([prepare_case(plan, c) for c in cases], plan, args.steps * 8, 0)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    ref.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        loss_fn(ref(x), y).backward()
        opt.step()
    ref_rate = args.steps * 8 / (time.perf_counter() - t0)
    model, hist = train_segmenter(plan, cases)
    ours = hist.steps * 8 / hist.seconds
    image = cases[0].image
    plan["target_spacing"], plan["patch_size"] = [1.0, 1.0], [256, 256]
    times = []
    for tta in (False, True):
        segment_image(model, plan, image, tta=tta)
        t0 = time.perf_counter()
        for _ in range(3):
            segment_image(model, plan, image, tta=tta)
        times.append((time.perf_counter() - t0) / 3)
    log(args, {"patches_per_s_medlens": ours, "patches_per_s_plain_monai": ref_rate, "ratio": ours / ref_rate,
               "infer_512_seconds": times[0], "infer_512_tta_seconds": times[1], "threads": torch.get_num_threads()})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["montgomery", "lidc", "isbi", "compare", "msd", "nuclei", "speed"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, nargs="*")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--channels", type=int, help="width of the network's first stage (plan default 16)")
    ap.add_argument("--tta", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1,
                    help="train this many models (training seeds) per fold and predict with their ensemble; "
                         "the first member alone is scored too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", choices=["largest", "central"],
                    help="also score the predictions after keeping connected components (msd: set in the plan)")
    ap.add_argument("--keep-count", type=int, default=1, help="components kept with --keep largest (2: lungs)")
    ap.add_argument("--fill-holes", action="store_true", help="with --keep, also fill enclosed holes")
    ap.add_argument("--baseline", action="store_true",
                    help="also score the HU > -500 threshold baseline (LIDC) on the same test folds")
    ap.add_argument("--select", action="store_true",
                    help="nuclei: choose the instance markers on validation images first (see nuclei())")
    ap.add_argument("--zoom", type=float, nargs="*",
                    help="nuclei --select: also score the validation images resampled by these factors")
    ap.add_argument("--rot90", action="store_true", help="augment with random quarter turns (plan rot90)")
    ap.add_argument("--elastic-sigma", type=float, help="augment with elastic deformation of this σ (pixels)")
    ap.add_argument("--elastic-prob", type=float, default=0.5, help="share of patches deformed")
    ap.add_argument("--modality", help="msd: declare the modality (CT: dataset-wide CT normalisation)")
    ap.add_argument("--dataset-zscore", action="store_true",
                    help="msd: z-score with the mean and std of all training pixels instead of the plan's scheme")
    ap.add_argument("--cv", type=int, help="msd: K-fold CV inside the val patches instead of the test patches")
    ap.add_argument("--tta-rotations", action="store_true",
                    help="test-time augmentation over quarter turns too (plan inference.tta_rotations; needs --rot90)")
    ap.add_argument("--compare-rotations", action="store_true",
                    help="also score the same models with the other --tta-rotations setting")
    ap.add_argument("--post-grid", action="store_true",
                    help="msd --cv: also score every post-processing of POST_GRID on the same predictions")
    ap.add_argument("--min-component-size", type=int, default=0,
                    help="msd: drop predicted components smaller than this (plan inference.min_component_size)")
    ap.add_argument("--models", help="keep each fold's members as bundles under this folder and reuse those "
                                     "already there (a later run with more --seeds trains only the new ones)")
    ap.add_argument("--log", default="benchmarks/results/segment_runs.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    if args.cmd in ("montgomery", "lidc", "isbi"):
        folds = globals()[args.cmd](args, fold_ids=args.only_folds)
        cv_summary(args, args.cmd, folds)
    else:
        globals()[args.cmd](args)


if __name__ == "__main__":
    main()
