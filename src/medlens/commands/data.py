"""``medlens data``: list, describe, download and check the catalogued public datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medlens.commands._common import quiet_requested, reports_errors
from medlens.data import catalog, fetch
from medlens.data.catalog import DatasetInfo
from medlens.data.readers.medmnist import medmnist_counts
from medlens.files import claim_output

app = typer.Typer(
    help=(
        "Named public datasets: list them, describe one, download it with an md5 check, verify a local copy.\n\n"
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
        ("download", entry.url or "no verified direct download"),
        ("md5", entry.md5 or f"per file ({len(entry.files)} files)"),
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
    name: str = typer.Argument(..., help="Catalogue name of a set with a download URL (the MedMNIST sets)."),
    dest: Path = typer.Option(
        None, "--dest", help="Data folder to download into (as DEST/medmnist/NAME.npz); default: the user cache."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Download a dataset and check its md5; print where it is.

    Without `--dest`, a copy already under MEDLENS_DATA or in the cache is used as is. The file is written
    to a temporary name beside its target and renamed only after its md5 matches the catalogue, so a failed
    download leaves nothing behind. Sets without a verified direct download (the prepared folder sets) fail
    with where to get them; put them under MEDLENS_DATA.
    """
    progress = not quiet_requested(quiet)
    if dest is None:
        found = fetch.find_local(name)
        where = found if found is not None else fetch.resolve(name, download=True, progress=progress)
        state = "present" if found is not None else "downloaded"
    else:
        with claim_output(dest, kind="folder"):
            where = fetch.download_dataset(name, dest=dest, progress=progress)
        state = "ready"
    out.print(f"{catalog.get(name).name}: {state} at {where}", highlight=False)


@app.command("verify")
@reports_errors
def verify(
    name: str = typer.Argument(..., help="Catalogue name, e.g. breastmnist or lidc-nodule-vois."),
    path: Path = typer.Option(None, "--path", help=PATH_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """Check the md5 of every file of a local dataset against the catalogue; exit 1 on any mismatch.

    Folder sets with a manifest.csv are checked in two steps: the manifest against the catalogue, then each
    file it lists against the manifest. Missing and differing files are listed. Exit status: 0 all match,
    1 mismatch or missing file, 2 dataset not found or unknown.
    """
    report = fetch.verify(name, path, progress=not quiet_requested(quiet))
    failures = report.failures
    if failures:
        table = Table(title=f"{report.name}: files that fail")
        for column in ("file", "expected md5", "actual md5"):
            table.add_column(column)
        for check in failures[:20]:
            table.add_row(check.path, check.expected, check.actual or "missing")
        out.print(table)
        if len(failures) > 20:
            out.print(f"... and {len(failures) - 20} more", highlight=False)
    out.print(report.summary(), highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)
