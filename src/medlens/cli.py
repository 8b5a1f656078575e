"""The ``medlens`` command line: one Typer app, each command a thin wrapper over library calls.

Run ``medlens COMMAND --help`` for the manual of each command.
"""

from __future__ import annotations

import typer

from medlens import __version__
from medlens.commands._common import set_debug, show_warnings_on_one_line
from medlens.commands import data as data_commands
from medlens.commands import denoise as denoise_commands
from medlens.commands import features as features_commands
from medlens.commands import inspect as inspect_command
from medlens.commands import pacs as pacs_commands
from medlens.commands import predict as predict_command
from medlens.commands import segment as segment_commands
from medlens.commands import serve as serve_command
from medlens.commands import study as study_command
from medlens.commands import synth as synth_commands
from medlens.commands import train as train_command

app = typer.Typer(
    name="medlens",
    help=(
        "medlens: deep-learning recognition of biomedical images.\n\n"
        "Reads DICOM series (to Hounsfield units), NIfTI, PNG/TIFF and MedMNIST archives; prepares them "
        "(tissue windows, Gabor texture features); trains and compares models (BP network, CNNs, SVM, "
        "two-stage) under stratified, patient-grouped k-fold cross-validation; and writes a report with "
        "sensitivity, specificity, accuracy and AUC with 95% confidence intervals.\n\n"
        "Data: named public datasets are looked up in an explicit path, then the folder named by the "
        "MEDLENS_DATA environment variable, then the user cache (~/.cache/medlens), then downloaded with "
        "an md5 check. Start with `medlens data list`, `medlens inspect FILE` and `medlens study --quick`.\n\n"
        "Errors: one line naming the file, exit status 2 (bad input or a refused output) or 3 (a defect of "
        "medlens); `medlens --debug COMMAND ...` shows the traceback."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medlens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="On an error, show the full traceback instead of the one-line message "
                               "(also MEDLENS_DEBUG=1). Example: `medlens --debug inspect scan.nii.gz`."
    ),
) -> None:
    """medlens: deep-learning recognition of biomedical images."""
    set_debug(debug)
    show_warnings_on_one_line()


app.add_typer(data_commands.app, name="data")
app.command(name="inspect")(inspect_command.inspect)
app.command(name="study")(study_command.study)
app.command(name="train")(train_command.train)
app.command(name="predict")(predict_command.predict)
app.command(name="serve")(serve_command.serve)
app.add_typer(segment_commands.app, name="segment")
app.add_typer(denoise_commands.app, name="denoise")
app.add_typer(features_commands.app, name="features")
app.add_typer(synth_commands.app, name="synth")
app.add_typer(pacs_commands.app, name="pacs")
