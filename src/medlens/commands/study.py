"""``medlens study``: run a study config end to end."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.files import claim_output


@reports_errors
def study(
    config: Path = typer.Argument(
        None, help="Study YAML file. Default: the CT lung-nodule study (LIDC-IDRI, benign vs malignant).",
        show_default=False,
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder. Default: `runs/<study>-<date-time>`."),
    folds: int = typer.Option(None, "--folds", "-k", min=2, help="Number of cross-validation folds "
                              "(overrides the config's protocol.folds)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: few folds, a subsample and short training "
                               "(under 2 minutes on 2 cores). Numbers from it are not results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; print only the summary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier study's results in --out "
                                   "(finished or not)."),
    seeds: int = typer.Option(None, "--seeds", min=1, max=20, help="Cross-validate every model with this many "
                              "training seeds (overrides each model's `seeds`): figures are the mean over seeds, "
                              "with their spread."),
    workers: int = typer.Option(None, "--workers", min=1, help="Run the folds × models as Dask tasks on a local "
                                "cluster of this many worker processes (threads per worker: cores / workers)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Run the folds × models as Dask tasks on this running "
                                  "scheduler (tcp://host:8786; default $MEDLENS_DASK_SCHEDULER), e.g. one started "
                                  "by dask-jobqueue on SLURM; its workers must see --out."),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers", help="Write absolute paths of the data "
                                          "and config in the outputs (default: relative to the data root or the "
                                          "working folder, else names only)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished study in --out (killed or "
                                "stopped): finished folds are kept, an interrupted training continues from its last "
                                "epoch, and the results equal those of an uninterrupted run."),
) -> None:
    """Run a study: load the data, train every model under cross-validation, write the report.

    A study YAML names the dataset and how it is prepared (HU window, isotropic resampling, crop, Gabor
    bank), the protocol (stratified k-fold grouped by patient, or the dataset's official split), the
    models to compare (bp, cnn, svm, twostage, logistic, ...) and a published reference to show beside
    them. Outputs in --out: results.json (per-fold and summary metrics with 95% CIs, config, data md5,
    versions, seed, wall time), predictions.csv (out-of-fold probabilities), table.md and table.csv
    (metrics as rows, models as columns), comparison.png (SE/SP/AR bars), roc.png, confusion.png,
    reliability.png and report.html (readable offline).

    Progress is recorded in --out/.resume as folds finish (and every epoch of a training), so a study that
    was killed continues with the same command and --resume.

    Examples: `medlens study` (the default CT lung study), `medlens study --quick`,
    `medlens study configs/breastmnist_official.yaml --out runs/breast`,
    `medlens study --out runs/lidc --resume` (after a kill),
    `medlens study --workers 2` (folds × models as tasks on a local Dask cluster),
    `medlens study --seeds 3` (every figure the mean of three training seeds, with their spread).
    """
    from medlens.config import default_config_path, load_config
    from medlens.study import run_study

    quiet = quiet_requested(quiet)
    config_path = config or default_config_path()
    study_config = load_config(config_path)
    if seeds is not None:
        study_config = study_config.model_copy(update={"models": [m.model_copy(update={"seeds": seeds})
                                                                  for m in study_config.models]})
    out = out or Path("runs") / f"{study_config.study}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not quiet:
        console.print(f"[bold]{study_config.title or study_config.study}[/] ({config_path}) -> {out}")
    with claim_output(out, kind="folder", inputs=[config_path]):
        results = run_study(study_config, out, folds=folds, quick=quick, quiet=quiet, overwrite=overwrite,
                            resume=resume, workers=workers, scheduler=scheduler, keep_identifiers=keep_identifiers)
    typer.echo((out / "table.md").read_text(encoding="utf-8"))
    typer.echo(f"\nwrote {out}/report.html ({results['provenance']['wall_seconds']:.0f} s)")
