"""``medlens segment plan | train | cv | predict | evaluate``: self-configuring segmentation.

A dataset folder pairs images with masks by file name (``images/`` + ``masks/``, ``image/`` +
``nodule_mask/``, ``images/`` + ``labels/``, ``train/image`` + ``train/label``) or is an ``.npz``
archive with ``images`` and ``labels``. Typical use::

    medlens segment plan DATA --out run/plan.json          # fingerprint the data, derive an editable plan
    medlens segment cv DATA --plan run/plan.json --folds 5 --out run/cv   # fold models, metrics, post-processing
    medlens segment predict run/cv scan.nii.gz xray.png --out masks/     # the fold models' ensemble
    medlens segment evaluate masks/ DATA --out report/     # Dice, IoU, HD95, pixel error, overlays

One model on all the data instead: ``segment train DATA --plan run/cv/plan.json --out run/model`` (the
plan with the post-processing chosen by cv), then ``segment predict run/model ...``. An ensemble of
seeds: ``segment cv ... --seeds 3``, or train more models with ``train --seed 1 --out run/model1`` and
predict with ``predict run/model scan.nii.gz --ensemble run/model1 --out masks/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.errors import DatasetError
from medlens.files import claim_output, resume_folder, write_text_atomically
from medlens.segment.datasets import MASK_MODES, load_folder
from medlens.segment.instances import DEFAULT_H, INSTANCE_DEFAULTS, score_instances

# The network names, kept here so that `medlens --help` need not import torch and MONAI;
# test_segment_cli checks them against medlens.segment.networks.NETWORKS.
NETWORK_NAMES = ("atrous", "fcn", "pyramid", "unet")

app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode="markdown")


def _mask_mode(value: str) -> str:
    if value not in MASK_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MASK_MODES)}")
    return value


def _plan_and_cases(plan_path: Path, data: Path):
    """The validated plan and the cases of DATA, which must be the dataset the plan was made from."""
    from medlens.segment.plan import check_dataset, load_plan

    p = load_plan(plan_path)
    check_dataset(p, data)
    return p, load_folder(data, p.dataset.mask_mode, p.n_classes)


@app.command()
@reports_errors
def plan(
    data: Path = typer.Argument(..., help="Dataset folder (images + masks) or .npz archive."),
    out: Path = typer.Option(Path("plan.json"), "--out", "-o", help="Where to write the plan."),
    mask_mode: str = typer.Option("binary", callback=_mask_mode,
                                  help="binary (≥128 of 255, else >0), labels (class indices) or instance."),
    classes: int = typer.Option(2, help="Number of classes, background included (instance mode: 3)."),
    network: str = typer.Option("unet", help=f"Network: {', '.join(NETWORK_NAMES)}."),
    seed: int = typer.Option(0, help="Seed of the intensity sampling and of training."),
    modality: Optional[str] = typer.Option(
        None, help="Imaging modality, overriding detection (CT gets the dataset-wide CT normalisation; "
                   "use it for CT stored without Hounsfield units, e.g. rescaled to [0, 1])."),
    rot90: Optional[bool] = typer.Option(None, "--rot90/--no-rot90",
                                         help="Override the rule on random quarter turns (on by default where the "
                                              "training masks have no canonical orientation)."),
    elastic: Optional[float] = typer.Option(None, "--elastic", min=0.0,
                                            help="Override the rule on elastic deformation: σ in pixels for half "
                                                 "the patches, 0 for none (on by default for 2D images)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fingerprint DATA and write plan.json: every setting derived from the data, with its reason.

    The plan resamples so that a patch sees the target structure whole at the network's depth, sets
    the training length from the number of cases and the patch coverage, turns on quarter turns and
    elastic deformation where the anatomy allows, and lists the post-processing candidates (keep the N
    largest components, keep the central one, drop small ones, fill holes) that `segment cv` tries.

    Example: `medlens segment plan ../shared/data/montgomery_cxr_lung_masks --out run/plan.json`
    """
    from medlens.segment.rules import add_augmentations, make_plan
    from medlens.segment.plan import save_plan

    with claim_output(out, kind="file", inputs=[data]):
        if mask_mode == "instance":
            classes = 3
        cases = load_folder(data, mask_mode, classes)
        result = add_augmentations(make_plan(cases, data, mask_mode, classes, network, seed, modality), rot90, elastic)
        save_plan(result, out)
        if not quiet_requested(quiet):
            shown = {k: v for k, v in result.to_dict().items() if k in ("target_spacing", "patch_size", "batch_size",
                                                                       "network", "augmentations", "training")}
            reasons = "\n".join(f"  {k}: {v}" for k, v in result.reasons.items())
            console.print(f"{len(cases)} cases → {out}\n{json.dumps(shown, indent=1)}\nwhy:\n{reasons}", highlight=False)


@app.command()
@reports_errors
def train(
    data: Path = typer.Argument(..., help="The dataset the plan was made from."),
    plan_path: Path = typer.Option(..., "--plan", "-p", help="plan.json from `medlens segment plan` (or `cv`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The segmenter bundle to write (plan.json, weights, manifest)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Override the plan's training.epochs."),
    seed: Optional[int] = typer.Option(None, help="Override the plan's training.seed (weights and patches): "
                                                  "members of an ensemble."),
    resume: bool = typer.Option(False, "--resume", help="Continue an earlier training into --out that was killed, "
                                "from its last epoch (the model equals an uninterrupted training's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train the plan's network on all of DATA and write a model folder.

    Example: `medlens segment train DATA --plan run/cv/plan.json --out run/model`
    """
    from medlens.engine.trainer import resumable
    from medlens.segment.bundle import save_segmenter
    from medlens.segment.train import train_segmenter

    with claim_output(out, kind="folder", inputs=[data, plan_path]):
        progress_folder = resume_folder(out, resume)
        p, cases = _plan_and_cases(plan_path, data)
        changes = {k: v for k, v in (("training.epochs", epochs), ("training.seed", seed)) if v is not None}
        p = p.copy_with(**changes) if changes else p
        with resumable(progress_folder):
            model, history = train_segmenter(p, cases, progress=not quiet_requested(quiet))
        save_segmenter(model, p, out, history)
        shutil.rmtree(progress_folder, ignore_errors=True)
        if not quiet_requested(quiet):
            console.print(f"trained {history.steps} steps in {history.seconds:.1f} s → {out}", highlight=False)


@app.command()
@reports_errors
def cv(
    data: Path = typer.Argument(..., help="The dataset the plan was made from."),
    plan_path: Path = typer.Option(..., "--plan", "-p", help="plan.json from `medlens segment plan`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the fold models, metrics.csv, cv.json and "
                                                      "the plan with the chosen post-processing."),
    folds: int = typer.Option(5, min=2, help="Number of folds (grouped by patient where the data has patients)."),
    seeds: int = typer.Option(1, min=1, help="Models per fold, trained with seeds seed..seed+N-1 and averaged "
                                             "(an ensemble of seeds)."),
    only_folds: List[int] = typer.Option([], "--only-fold", help="Run only this fold (repeat for more)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Cross-validate the plan on DATA: per-case and per-fold metrics, fold models, post-processing.

    Each fold's model is trained on the other folds and predicts its own cases. The post-processing
    candidates of the plan (keep the N largest components, keep the central one, drop small ones, fill
    holes) are tried on all these predictions; those that raise the mean Dice are kept and written into
    OUT/plan.json with their figures (as nnU-Net does), and `segment predict OUT` applies them with the
    ensemble of the fold models. A run that stops resumes: fold models already in OUT are reused.

    Example: `medlens segment cv ../shared/data/montgomery_cxr_lung_masks --plan run/plan.json --folds 5 --out run/cv`
    """
    from medlens.segment.cv import cross_validate

    with claim_output(out, kind="folder", inputs=[data, plan_path]):
        p, cases = _plan_and_cases(plan_path, data)
        say = (lambda message: None) if quiet_requested(quiet) else (lambda m: console.print(m, highlight=False))
        result = cross_validate(cases, p, folds, out, seeds, only_folds or None, progress=not quiet_requested(quiet),
                                log=say)
        if not quiet_requested(quiet):
            s, post = result.summary, result.plan.postprocessing
            steps = {k: v for k, v in post.steps().items() if v not in (None, 0, False, 1) or k == "keep_count" and
                     post.keep_component == "largest"}
            console.print(" ".join(f"{k} {v['mean']:.4f}" if isinstance(v, dict) else f"{k} {v:.4f}" for k, v in s.items())
                          + f" ({len(result.cases)} cases); post-processing {steps or 'none'} "
                          f"(Dice {post.decision.dice_before:.4f} → {post.decision.dice_after:.4f}) → {out}",
                          highlight=False)


@app.command()
@reports_errors
def predict(
    model_dir: Path = typer.Argument(..., help="Folder written by `medlens segment train` or `segment cv`."),
    inputs: List[Path] = typer.Argument(..., help="Pictures, NIfTI files, DICOM series folders or folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (PNG for pictures, NIfTI otherwise)."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (mirrors, and "
                                       "quarter turns where the plan trained with them); default: the plan's."),
    ensemble: List[Path] = typer.Option([], "--ensemble", "-e",
                                        help="Another bundle trained from the same plan (other seed or fold); "
                                             "repeat for more. The members' probabilities are averaged."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Segment images of any size (sliding window) and write masks in each input's geometry.

    MODEL is a folder from `segment train` or a `segment cv` folder (the ensemble of its fold models);
    the plan's post-processing is applied. Masks are named after the inputs; inputs that share a name
    keep their relative paths, and no file already in OUT is replaced. An image with NaN or infinite
    values is an error naming the file.

    A model trained in instance mode (cells, nuclei) also writes NAME_instances.png (or .nii.gz), an
    instance label image (0 background, 1..N), and NAME_instances.csv with each instance's area,
    centroid and mean intensity; the plan's inference.instances says how instances are cut. An image
    whose nuclei are larger (or smaller) than the training images' (inference.instances.diameter_range,
    median diameters) is predicted again, rescaled so that they fall inside that range; set it to null
    in plan.json to switch this off.

    Example: `medlens segment predict run/cv scan.nii.gz xray.png --out masks/`
    """
    from medlens.segment.bundle import load_ensemble
    from medlens.segment.infer import predict_files

    with claim_output(out, kind="folder", inputs=[model_dir, *ensemble, *inputs]):
        models, p = load_ensemble([model_dir, *ensemble])
        written = predict_files(models, p, inputs, out, tta)
        if not quiet_requested(quiet):
            console.print(f"wrote {len(written)} files to {out}", highlight=False)


@app.command()
@reports_errors
def evaluate(
    predictions: Path = typer.Argument(..., help="Folder of predicted masks (names as the images)."),
    data: Path = typer.Argument(..., help="Dataset folder with the true masks."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.csv, metrics.json and overlays/."),
    mask_mode: str = typer.Option("binary", callback=_mask_mode, help="How the true masks are stored."),
    classes: int = typer.Option(2, help="Number of classes, background included."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write contour overlay PNGs."),
    markers: str = typer.Option(INSTANCE_DEFAULTS["markers"], help="Instance mode: watershed markers: "
                                "'hmaxima_relative' or 'hmaxima' (h-maxima of the interiors' distance map) "
                                "or 'components' (connected interiors)."),
    h: Optional[float] = typer.Option(None, help="Instance mode: h of the h-maxima (pixels; for hmaxima_relative "
                                      "a fraction of each interior's largest distance). Default "
                                      f"{DEFAULT_H['hmaxima']:g} / {DEFAULT_H['hmaxima_relative']:g}."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Dice, IoU, HD95 and pixel error per case and in summary, with overlay PNGs.

    Pixel error is the share of wrong pixels; a two-class summary also gives pixel_error_fscore, the
    ISBI 2012 challenge's pixel error (1 - the foreground F-score pooled over all images), the figure
    published EM membrane results (U-Net: 0.0611) are given in.

    Writes metrics.csv, metrics.json and evaluation_card.md; where the dataset folder has an index.csv
    with a subgroup column (Montgomery: normal versus tuberculosis) the summary is also given per subgroup.

    With `--mask-mode instance` (true masks are instance label images, predictions the 3-class maps of a
    model trained in instance mode) each case also gets true/predicted instance counts, AP at IoU 0.5
    (TP/(TP+FP+FN)) and the aggregated Jaccard index; the summary adds the relative count error.
    """
    from medlens.segment.evaluate import evaluate_cases, evaluation_card, read_predictions, summarize_cases, write_report

    with claim_output(out, kind="folder", inputs=[predictions, data]):
        instance = mask_mode == "instance"
        classes = 3 if instance else classes
        preds = read_predictions(predictions, "labels" if instance else mask_mode, classes)
        cases = load_folder(data, mask_mode, classes, names=list(preds))
        unmatched = set(preds) - {c.case_id for c in cases}
        if unmatched:
            raise DatasetError(f"{predictions}: predictions without a true mask in {data}: {sorted(unmatched)[:5]}")
        per_instance = score_instances(preds, cases, options={"markers": markers, "h": h}) if instance else None
        if instance:  # pixel metrics on the foreground (interior + boundary)
            preds = {k: (v > 0).astype(np.int64) for k, v in preds.items()}
            for c in cases:
                c.mask = (c.mask > 0).astype(np.int64)
            classes = 2
        result = evaluate_cases(preds, cases, classes, out / "overlays" if overlays else None)
        if per_instance:
            for row, inst in zip(result["cases"], per_instance):
                row.update({k: inst[k] for k in ("n_true", "n_pred", "ap", "aji")})
            result["summary"].update(summarize_cases(result["cases"], ("ap", "aji")))
            n_true = sum(r["n_true"] for r in per_instance)
            result["summary"]["count_error"] = abs(sum(r["n_pred"] for r in per_instance) - n_true) / max(n_true, 1)
        write_report(result, out)
        write_text_atomically(out / "evaluation_card.md", evaluation_card(result, data, predictions))
        if not quiet_requested(quiet):
            s = result["summary"]
            console.print(" ".join(f"{k} {v['mean']:.4f}" if isinstance(v, dict) else f"{k} {v:.4f}"
                                   for k, v in s.items()) + f" ({len(cases)} cases) → {out}", highlight=False)
            for name, group in result.get("subgroups", {}).items():
                console.print(f"  {name}: " + " ".join(f"{k} {v['mean']:.4f}" for k, v in group.items()
                                                       if isinstance(v, dict)) + f" ({group['n']} cases)",
                              highlight=False)
