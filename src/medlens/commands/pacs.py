"""``medlens pacs``: search, pull and push over DICOMweb or DIMSE; and the PACS mode of ``medlens predict``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medlens.commands._common import console, quiet_requested, reports_errors
from medlens.errors import ConfigError

app = typer.Typer(
    help=(
        "A PACS in and out: search studies, pull a study into a folder, push DICOM objects back.\n\n"
        "URL is a DICOMweb base (`http://host:port/dicom-web`: QIDO-RS, WADO-RS, STOW-RS) or a DIMSE address "
        "(`dimse://AET@host:port`: C-FIND, C-GET or C-MOVE, C-STORE), where AET is the PACS's AE title; medlens "
        "calls it as --aet (default MEDLENS). Files other than DICOM objects name the patient by a pseudonym "
        "(a keyed hash of the patient ID; `medlens pacs pseudonym --help`) unless --keep-identifiers. To run "
        "a bundle on a study and store SEG and SR objects beside it: `medlens predict BUNDLE --pacs URL --study "
        "UID --push`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
URL_HELP = "DICOMweb base `http://host:port/dicom-web` or DIMSE address `dimse://AET@host:port`."
AET_HELP = "medlens's own AE title (DIMSE): the calling title and the C-MOVE destination."
MOVE_HELP = ("DIMSE: retrieve with C-MOVE to a storage listener medlens opens on this port (the PACS must know --aet "
             "at this host and port). Default: C-GET.")
KEEP_HELP = "Write the patient's ID, name and birth date in tables and logs instead of a pseudonym."


@app.command("query")
@reports_errors
def query(
    url: str = typer.Argument(..., help=URL_HELP),
    patient: str = typer.Option(None, "--patient", help="Patient ID to match."),
    modality: str = typer.Option(None, "--modality", help="A modality in the study, e.g. CT."),
    date: str = typer.Option(None, "--date", help="Study date `YYYYMMDD` or range `YYYYMMDD-YYYYMMDD`."),
    study: str = typer.Option(None, "--study", help="StudyInstanceUID to match."),
    table_file: Path = typer.Option(None, "--out", "-o", help="Also write the studies to this CSV file."),
    aet: str = typer.Option("MEDLENS", "--aet", help=AET_HELP),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers", help=KEEP_HELP),
) -> None:
    """Search a PACS for studies (QIDO-RS or C-FIND) and list them as CSV: study UID, date, modalities, series
    and instance counts, description and the patient's pseudonym (with --keep-identifiers the patient's ID,
    name and birth date instead).

    Example: `medlens pacs query http://localhost:8042/dicom-web --patient LIDC-IDRI-0001 --modality CT`.
    Over DIMSE: `medlens pacs query dimse://ORTHANC@localhost:4242 --date 20000101-20001231 --out studies.csv`.
    """
    from medlens.pacs.client import StudyQuery, connect
    from medlens.data.identifiers import redact_identifiers

    if table_file is not None:
        from medlens.files import check_output

        check_output(table_file, kind="file")
    records = connect(url, aet=aet).find_studies(StudyQuery(patient, modality, date, study))
    rows = [redact_identifiers({"study_uid": r.study_uid, "date": r.date, "modalities": "/".join(r.modalities),
                                "series": r.n_series, "instances": r.n_instances, "description": r.description,
                                "patient_id": r.patient_id, "patient_name": r.patient_name,
                                "patient_birth_date": r.birth_date}, keep=keep_identifiers)
            for r in records]
    import pandas as pd

    columns = ["study_uid", "date", "modalities", "series", "instances", "description", "patient_pseudonym"]
    from medlens.files import claim_output, csv_text, write_csv_atomically

    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else columns)
    if table_file is not None:
        with claim_output(table_file, kind="file"):
            write_csv_atomically(table_file, frame)
        console.print(f"wrote {table_file}: {len(rows)} stud{'y' if len(rows) == 1 else 'ies'}", highlight=False)
    else:
        typer.echo(csv_text(frame), nl=False)


@app.command("pull")
@reports_errors
def pull(
    url: str = typer.Argument(..., help=URL_HELP),
    study: str = typer.Option(..., "--study", help="StudyInstanceUID of the study to pull."),
    folder: Path = typer.Option(..., "--out", "-o", help="New (or empty) folder for the series."),
    series: list[str] = typer.Option(None, "--series", help="Pull only this SeriesInstanceUID (repeatable)."),
    modality: str = typer.Option(None, "--modality", help="Pull only series of this modality, e.g. CT."),
    aet: str = typer.Option("MEDLENS", "--aet", help=AET_HELP),
    move_port: int = typer.Option(None, "--move-port", min=1, max=65535, help=MOVE_HELP),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers", help=KEEP_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Pull a study (WADO-RS, C-GET or C-MOVE) into `DIR/<series-uid>/<sop-uid>.dcm`, checked first.

    The download goes to a private temporary folder and is checked before it is moved to DIR: every
    instance the PACS listed arrived and no other, the PACS lists the same instances after the download
    (a study that changes while being pulled is refused), and every instance of an image series has pixel
    data (reports and other non-image series are exempt). DIR also gets
    `pull.json` (server, UIDs, counts, the patient's pseudonym). On any error nothing is left behind.
    Example: `medlens pacs pull http://localhost:8042/dicom-web --study 1.2.3.4 --out study/`.
    Over DIMSE with C-MOVE:
    `medlens pacs pull dimse://ORTHANC@pacs:4242 --study 1.2.3.4 --move-port 11113 --out study/`.
    """
    from medlens.files import claim_output
    from medlens.pacs.client import connect

    quiet = quiet_requested(quiet)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: exists and is not an empty folder; pull into a new folder")
    pacs = connect(url, aet=aet, move_port=move_port)
    with claim_output(folder, kind="folder"):
        _pull_into(pacs, url, study, folder, series, modality, keep_identifiers, quiet)


def _pull_into(pacs, url: str, study: str, folder: Path, series: list[str] | None, modality: str | None,
               keep_identifiers: bool, quiet: bool) -> None:
    import medlens
    from medlens.files import write_text_atomically
    from medlens.pacs.pull import pull_study
    from medlens.pacs.run import patient_fields

    def listed(record, instances) -> None:
        if not quiet:
            console.print(f"series {record.series_uid} ({record.modality}): {len(instances)} instances",
                          highlight=False)

    pulled = pull_study(pacs, study, series_uids=series or None, modality=modality,
                        workdir=folder.resolve().parent, every_series_an_image=False, on_listed=listed)
    patient = patient_fields(pulled, keep_identifiers)
    try:
        moved = pulled.move_to(folder)
    finally:
        pulled.close()
    manifest = {"server": url, "study_uid": study, **patient, "medlens_version": medlens.__version__,
                "series": [{"series_uid": s.record.series_uid, "modality": s.record.modality,
                            "instances": len(s.files), "folder": s.folder.name} for s in pulled.series]}
    write_text_atomically(folder / "pull.json", json.dumps(manifest, indent=2))
    console.print(f"pulled {pulled.n_instances} instances in {len(moved)} series into {folder}", highlight=False)


@app.command("push")
@reports_errors
def push(
    url: str = typer.Argument(..., help=URL_HELP),
    files: list[Path] = typer.Argument(..., help="DICOM files to store (e.g. the seg.dcm and sr.dcm of a run)."),
    aet: str = typer.Option("MEDLENS", "--aet", help=AET_HELP),
) -> None:
    """Validate DICOM files, store them (STOW-RS or C-STORE), then ask the PACS whether each one arrived.

    Nothing is sent unless every file is a readable DICOM object with its UIDs, and every SEG and SR passes
    dciodvfy (package dicom3tools) and reads back with highdicom. After the push, each object's SOP
    Instance UID is searched for on the server; one acknowledged but not found is an error.
    Example: `medlens pacs push http://localhost:8042/dicom-web results/seg.dcm results/sr.dcm`.
    """
    from medlens.pacs.client import connect
    from medlens.pacs.push import push_objects
    from medlens.pacs.validate import validate_for_push

    validations = [validate_for_push(path) for path in files]
    result = push_objects(connect(url, aet=aet), validations)
    console.print(f"stored {len(result.found)} object(s) on {result.server}; each found there afterwards",
                  highlight=False)


@app.command("pseudonym")
@reports_errors
def pseudonym(
    patient_ids: list[str] = typer.Argument(..., help="Patient IDs."),
) -> None:
    """Print the pseudonym medlens writes for each patient ID: `anon-` and the first 16 hex digits of
    HMAC-SHA256(key, ID).

    The key is the MEDLENS_PSEUDONYM_KEY environment variable (the key as text) when set, else the file named
    by MEDLENS_PSEUDONYM_KEY_FILE, else `~/.config/medlens/pseudonym.key` (created on first use, readable by
    its owner only). With the same key the same ID always gives the same pseudonym: whoever holds the key
    finds a patient's rows again. Example: `medlens pacs pseudonym LIDC-IDRI-0001`.
    """
    from medlens.data.identifiers import pseudonym as make

    for patient_id in patient_ids:
        typer.echo(f"{patient_id}\t{make(patient_id)}")


def predict_on_pacs(bundle: Path, url: str, study: str, *, segmenter: Path | None, series: str | None,
                    at: str | None, push: bool, push_to: str | None, out: Path | None, min_diameter: float,
                    segment_names: list[str] | None, aet: str, move_port: int | None, keep_identifiers: bool,
                    quiet: bool) -> None:
    """``medlens predict BUNDLE --pacs URL --study UID``: run :func:`medlens.pacs.run.predict_study` and report."""
    from datetime import datetime

    from medlens.pacs.models import parse_position
    from medlens.pacs.run import Request, predict_study

    folder = out or Path("runs") / f"pacs-{datetime.now():%Y%m%d-%H%M%S}"
    request = Request(study_uid=study, out=folder, series_uid=series, at=parse_position(at) if at else None,
                      min_diameter_mm=min_diameter, class_names=segment_names or None,
                      keep_identifiers=keep_identifiers)
    bundles = [bundle] + ([segmenter] if segmenter is not None else [])

    def say(message: str) -> None:
        if not quiet:
            console.print(message, highlight=False)

    from medlens.files import claim_output

    with claim_output(folder, kind="folder", inputs=bundles):
        report = predict_study(bundles, url, request, push=push, push_url=push_to, aet=aet, move_port=move_port,
                               say=say)
    for finding in report.findings:
        size = f"{finding['diameter_mm']:.1f} mm" if finding["diameter_mm"] is not None else "size not measured"
        console.print(f"{finding['finding']}: {size}, p(malignant) = {finding['p_malignant']:.3f} -> "
                      f"{finding['label']}", highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    written = ", ".join(f"{o['kind']} {o['file']}" for o in report.objects) or "no DICOM object"
    console.print(f"wrote {written} into {folder} (validated: dciodvfy, highdicom read-back)", highlight=False)
    if report.pushed_to:
        console.print(f"pushed {len(report.pushed)} object(s) to {report.pushed_to}; each found there afterwards",
                      highlight=False)
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())
    say(f"time: {stages}")
