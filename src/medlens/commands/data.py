"""``medlens data``: list, describe, download and check the catalogued public datasets."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.data import catalog, fetch
from medlens.data.catalog import DatasetInfo
from medlens.data.readers.medmnist import medmnist_counts
from medlens.files import claim_output

app = typer.Typer(
    help=(
        "Named public datasets: list them, describe one, download it with an md5 check, verify a local copy, "
        "build the LIDC-IDRI archive into a study set.\n\n"
        "A dataset is looked up in an explicit path, then in the folder named by the MEDLENS_DATA environment "
        "variable, then in the user cache (MEDLENS_CACHE, default ~/.cache/medlens); each keeps the same "
        "layout (MedMNIST archives as medmnist/NAME.npz, prepared sets as their own folder)."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
out = Console()

PATH_HELP = "The dataset's file or folder, or a data folder that holds it; wins over MEDLENS_DATA and the cache."
QUIET_HELP = "No progress bar (also MEDLENS_QUIET=1)."


def _size(info: DatasetInfo) -> str:
    if info.size_px is None:
        return "varies"
    return "×".join([str(info.size_px)] * info.dims)


@app.command("list")
@reports_errors
def list_datasets(
    local: bool = typer.Option(False, "--local", help="Show only the datasets present on this machine."),
) -> None:
    """List every catalogued dataset: name, task, modality, image size, licence and whether it is here.

    **present** is *yes* when the set is found under MEDLENS_DATA or in the user cache. MedMNIST sets come in
    28 px (bare name) and larger sizes (`NAME_64`, `NAME_128`, `NAME_224`; 3D sets `NAME_64`).
    """
    table = Table(title="medlens datasets")
    table.add_column("name", no_wrap=True)
    table.add_column("task", overflow="fold")
    table.add_column("modality")
    table.add_column("size", no_wrap=True)
    table.add_column("licence")
    table.add_column("present", no_wrap=True)
    for name in catalog.names():
        info = catalog.get(name)
        present = fetch.find_local(name) is not None
        if local and not present:
            continue
        table.add_row(name, info.task, info.modality, _size(info), info.licence, "yes" if present else "no")
    out.print(table)


def _class_table(info: DatasetInfo, location: Path | None) -> tuple[Table, str]:
    """Samples per class (rows) and split (columns), and where the counts came from."""
    counts = info.class_counts
    origin = "catalogue"
    if info.format == "medmnist-npz" and location is not None:
        counted = medmnist_counts(location)
        counts = {split: {_label(info, i): n for i, n in per.items()} for split, per in counted.items()}
        origin = f"counted in {location}"
    splits = list(counts) if counts else list(info.splits)
    table = Table()
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for label in dict.fromkeys(label for per in (counts or {}).values() for label in per):
        table.add_row(label, *(str(counts[split].get(label, 0)) for split in splits))
    if counts and info.task != "multilabel":  # multi-label counts overlap: their sum is not the split size
        totals = [sum(counts[split].values()) for split in splits]
    else:
        totals = [info.splits.get(split, 0) for split in splits]
    table.add_row("[bold]total[/]", *(f"[bold]{n}[/]" for n in totals))
    return table, origin


def _download_line(info: DatasetInfo) -> str:
    """Where `medlens data fetch` gets the set from."""
    from medlens.data.github import github_source

    source = github_source(info.name)
    if source is not None:
        return f"{source.describe()}, each file md5-checked (`medlens data fetch {info.name}`)"
    if info.name == "lidc-idri":
        return "TCIA's REST API, series by series (`medlens data fetch lidc-idri --patients N`)"
    return info.url or "no verified direct download"


def _label(info: DatasetInfo, index: int) -> str:
    return f"{index} {info.labels[index]}" if index < len(info.labels) else str(index)


@app.command("info")
@reports_errors
def info(
    name: str = typer.Argument(..., help="Catalogue name, e.g. breastmnist, adrenalmnist3d_64, lidc-nodule-vois."),
    path: Path = typer.Option(None, "--path", help=PATH_HELP),
) -> None:
    """Describe one dataset: what it holds, its labels, split sizes, class counts, licence, citation, source.

    Class counts are computed from the local archive when it is present (MedMNIST), otherwise taken from the
    catalogue. The download URL and md5 are those the set is checked against by `medlens data verify`.
    """
    entry = catalog.get(name)
    location = fetch.find_local(entry.name, path)
    out.print(f"[bold]{entry.title}[/]  ({entry.name})")
    out.print(entry.description, highlight=False)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    rows = [
        ("task", entry.task),
        ("modality", entry.modality),
        ("size", f"{_size(entry)} ({entry.dims}D), channels: {entry.n_channels or 'vary'}"),
        ("labels", ", ".join(f"{i} {label}" for i, label in enumerate(entry.labels)) or "none"),
        ("samples", f"{entry.n_samples} {entry.unit}s"),
        ("licence", entry.licence),
        ("source", entry.source),
        ("download", _download_line(entry)),
        ("md5", entry.md5 or (f"per file ({len(entry.files)} files)" if entry.files else
                              f"per file, in each series' download record (`medlens data verify {entry.name}`)")),
        ("local", str(location) if location is not None else f"not present (expected <data>/{entry.local_path})"),
        ("notes", entry.notes),
        ("citation", entry.citation),
    ]
    for key, value in rows:
        if value:
            facts.add_row(key, value)
    out.print(facts, highlight=False)
    table, origin = _class_table(entry, location)
    out.print(f"\n[bold]{entry.unit}s per class and split[/] ({origin}):", highlight=False)
    out.print(table)


@app.command("fetch")
@reports_errors
def fetch_dataset(
    name: str = typer.Argument(..., help="Catalogue name: a MedMNIST set, a prepared set (lidc-nodule-vois, "
                               "lidc-idri-ct, lidc-idri-ct-more) or the archive lidc-idri."),
    dest: Path = typer.Option(
        None, "--dest", help="Data folder to download into (as DEST/medmnist/NAME.npz); default: the user cache."
    ),
    patients: list[str] = typer.Option(
        None, "--patients", help="lidc-idri only: the first N patients (a number), or patient IDs (repeat the "
        "option or separate them with commas). Default: every patient (about 124 GB)."),
    out_dir: Path = typer.Option(None, "--out", help="lidc-idri only: folder of the download tree (default "
                                 "`<cache>/lidc_idri`)."),
    threads: int = typer.Option(4, "--threads", help="lidc-idri only: series downloaded at once."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Download a dataset and check its md5; print where it is.

    Without `--dest`, a copy already under MEDLENS_DATA or in the cache is used as is. Each file is written
    to a temporary name beside its target and renamed only after its md5 matches, so a failed download leaves
    nothing that looks complete; running the command again fetches only what is missing. The prepared LIDC
    sets come file by file from their public GitHub repository at a pinned commit.

    `lidc-idri` downloads CT series of the LIDC-IDRI archive (with the readers' XML) from TCIA's public REST API
    into the folder tree of TCIA's download tool, several series at once; each file is checked against the md5
    TCIA sends with it, and a broken transfer resumes from its last byte. Exit status 1 when a series failed.

    Examples:

    ```
    medlens data fetch lidc-nodule-vois
    medlens data fetch lidc-idri --patients 10 --out raw/
    medlens data fetch lidc-idri --patients LIDC-IDRI-0001,LIDC-IDRI-0003 --out raw/
    ```
    """
    progress = not quiet_requested(quiet)
    if catalog.get(name).name == "lidc-idri":
        _fetch_archive(patients, out_dir or fetch.cache_dir() / catalog.get(name).local_path, threads, progress)
        return
    if dest is None:
        found = fetch.find_local(name)
        where = found if found is not None else fetch.resolve(name, download=True, progress=progress)
        state = "present" if found is not None else "downloaded"
    else:
        with claim_output(dest, kind="folder"):
            where = fetch.download_dataset(name, dest=dest, progress=progress)
        state = "ready"
    out.print(f"{catalog.get(name).name}: {state} at {where}", highlight=False)


def _patients(values: list[str] | None) -> int | list[str] | None:
    """``--patients`` as a count (one number) or a list of IDs."""
    if not values:
        return None
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if len(items) == 1 and items[0].isdigit():
        return int(items[0])
    return items


def _fetch_archive(patients: list[str] | None, folder: Path, threads: int, progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from medlens.data import tcia

    listing = tcia.choose(tcia.list_series(tcia.NBIA_BASE), _patients(patients))
    size = sum(s.file_size for s in listing)
    out.print(f"lidc-idri: {len(listing)} CT series of {len({s.patient_id for s in listing})} patient(s), "
              f"{size / 1e9:.2f} GB, from TCIA into {folder}", highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("series", total=len(listing))
        report = tcia.fetch_lidc_idri(folder, None, base=tcia.NBIA_BASE, threads=threads, series=listing,
                                      on_series=lambda s, state: bar.advance(task))
    for uid, reason in report.failed.items():
        console.print(f"[red]failed[/] {uid}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"lidc-idri: {len(report.downloaded)} series downloaded, {len(report.present)} already present, "
              f"{len(report.failed)} failed; at {folder}", highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)


build_app = typer.Typer(help="Build a study set from a source archive.", no_args_is_help=True,
                        rich_markup_mode="markdown")
app.add_typer(build_app, name="build")


class Outline(str, Enum):
    """Whether a reader's outline pixels belong to the nodule mask."""

    include = "include"
    exclude = "exclude"


@build_app.command("lidc-idri")
@reports_errors
def build_lidc(
    raw: Path = typer.Argument(..., help="The archive: TCIA's download tree (patient/study/series) or a folder "
                               "of series folders."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (image/, nodule_mask/, lesions.csv, "
                                 "build_log.tsv); an earlier, interrupted build there is resumed."),
    workers: int = typer.Option(None, "--workers", help="Build on a local Dask cluster of N worker processes "
                                "of one thread each (N = cores uses them all). Default: one patient after the "
                                "other in this process."),
    scheduler: str = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler to build on "
                                  "(also MEDLENS_DASK_SCHEDULER), e.g. tcp://10.0.0.5:8786."),
    margin_mm: float = typer.Option(10.0, "--margin-mm", help="Margin around each lesion's marks in its VOI."),
    consensus: float = typer.Option(0.5, "--consensus", help="Fraction of a lesion's readers who must mark a voxel "
                                    "for its mask: 0.5 is LIDC's 50 % consensus, 0 the union of the readers "
                                    "(the shipped VOIs' masks, with `--outline exclude`)."),
    outline: Outline = typer.Option(Outline.include, "--outline", help="`include`: a reader's outline pixels are "
                                    "part of its mark (this command's masks so far); `exclude`: only the voxels "
                                    "inside the outline (LIDC's readers drew on the first voxels outside the "
                                    "nodule; pylidc's default; the shipped VOIs' masks, with `--consensus 0`)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Turn the LIDC-IDRI archive (DICOM series + reader XML) into the nodule study set.

    For each CT series with reader XML: the readers' ROIs are placed on their slices by SOP Instance UID, the
    marks grouped into lesions with their consensus mask, and each lesion written as a volume of interest
    in HU at the scan's native spacing with its mask (uncompressed NIfTI, read lazily), plus one table
    `lesions.csv` (centre and box in world mm, diameters, every reader's ratings with median, count and most
    frequent value, flags, provenance). A study reads the folder with `data: {builder: lidc_nodules, name:
    lidc-nodule-vois, path: DIR}`.

    Masks: by default the 50 % consensus of the readers' marks with their outline pixels.
    **`--consensus 0 --outline exclude` reproduces the masks of the shipped VOIs (`lidc-nodule-vois`)**: the
    union of the readers' marks, each without its outline pixels (voxel for voxel on the two shipped nodules of
    the shared series). `diameter_mm` is the readers' mean volume-equivalent diameter (the shipped sheet's
    measure, within 1 mm), `max_axial_diameter_mm` their mean greatest in-plane diameter.

    One task per patient, on Dask with `--workers`/`--scheduler`; each patient's files are written atomically
    and recorded, so the same command after a crash or `kill -9` builds only what is missing. What is not a CT
    series with LIDC XML (no DICOM, missing slices, uneven spacing, XML of another schema or naming slices the
    series lacks, non-CT series, unreadable files) is skipped and named in `build_log.tsv`.

    Exit status: 0 everything built, 1 something was skipped or a patient failed, 2 bad arguments.

    Example:

    ```
    medlens data fetch lidc-idri --patients 20 --out raw/
    medlens data build lidc-idri raw/ --out lidc_built/ --workers 2
    medlens data build lidc-idri raw/ --out lidc_like_shipped/ --consensus 0 --outline exclude
    ```
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from medlens.data.lidc_build import BuildOptions, build_lidc_idri, discover

    found = discover(raw)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet_requested(quiet)) as bar:
        task = bar.add_task("patients", total=len(found))
        options = BuildOptions(margin_mm=margin_mm, consensus=consensus, outline=outline is Outline.include)
        report = build_lidc_idri(raw, out_dir, options=options, workers=workers, reuse_memory=True,
                                 scheduler=scheduler, patients=found,
                                 on_patient=lambda patient, result: bar.advance(task))
    for patient, file, problem in report.skipped:
        console.print(f"[yellow]skipped[/] {patient} {file}: {problem}", highlight=False, soft_wrap=True)
    built = sum(not r.reused for r in report.patients.values())
    reused = sum(r.reused for r in report.patients.values())
    lesions = sum(r.lesions for r in report.patients.values())
    out.print(f"lidc-idri: {len(found)} patient(s): {built} built, {reused} already done, {len(report.failed)} "
              f"failed; {lesions} lesion(s), {len(report.skipped)} skipped input(s); {report.seconds:.1f} s; "
              f"at {out_dir}", highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("verify")
@reports_errors
def verify(
    name: str = typer.Argument(..., help="Catalogue name, e.g. breastmnist or lidc-nodule-vois."),
    path: Path = typer.Option(None, "--path", help=PATH_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Check the md5 of every file of a local dataset against the catalogue; exit 1 on any mismatch.

    Folder sets with a manifest.csv are checked in two steps: the manifest against the catalogue, then each
    file it lists against the manifest. Missing and differing files are listed.

    `lidc-idri` (the archive downloaded by `medlens data fetch lidc-idri`) has no list in the catalogue: each
    series folder is checked against the record the download wrote beside it (every file's md5, TCIA's,
    checked when it arrived). Series folders without a record (copied in, or from another download tool) and
    files a record does not list are named and make the check fail; whether every series TCIA has is present
    cannot be checked offline (`medlens data fetch lidc-idri` again fetches only what is missing).

    Exit status: 0 all match, 1 mismatch, missing file or unchecked series, 2 dataset not found or unknown.

    Examples:

    ```
    medlens data verify lidc-nodule-vois
    medlens data verify lidc-idri --path raw/
    ```
    """
    report = fetch.verify(name, path, progress=not quiet_requested(quiet))
    failures = report.failures
    if failures:
        table = Table(title=f"{report.name}: files that fail")
        for column in ("file", "expected md5", "actual md5"):
            table.add_column(column, overflow="fold")
        for check in failures[:20]:
            table.add_row(check.path, check.expected, check.actual or "missing")
        out.print(table)
        if len(failures) > 20:
            out.print(f"... and {len(failures) - 20} more", highlight=False)
    for note in report.notes:
        out.print(note, highlight=False, soft_wrap=True)
    out.print(report.summary(), highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)
