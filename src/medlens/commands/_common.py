"""What every command shares: one console, errors turned into one line and an exit code, warnings shown
as one line each, and the global ``--debug`` switch."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from medlens.errors import MedlensError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)

EXIT_ERROR = 2
"""Exit status of a command stopped by a :class:`MedlensError` (bad input, refused output...)."""
EXIT_INTERNAL = 3
"""Exit status of a command stopped by any other exception (a defect of medlens)."""

_debug = False
_PASS_THROUGH = (typer.Exit, typer.Abort, typer.exceptions.TyperException, click.exceptions.Exit,
                 click.exceptions.Abort, click.ClickException)
"""Typer's (and click's) own exits and usage errors: they print and exit by themselves."""


def set_debug(value: bool) -> None:
    """Switch the traceback of errors on or off (the ``medlens --debug`` option)."""
    global _debug
    _debug = bool(value)


def debug_requested() -> bool:
    """True when errors should show their traceback: ``medlens --debug`` or ``MEDLENS_DEBUG=1``."""
    return _debug or os.environ.get("MEDLENS_DEBUG") == "1"


def quiet_requested(quiet: bool = False) -> bool:
    """True when output should be minimal: ``--quiet`` or ``MEDLENS_QUIET=1`` (CI and scripts)."""
    return quiet or os.environ.get("MEDLENS_QUIET") == "1"


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined by ``; `` (a config error lists one field per line)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _paths_given(arguments: dict[str, Any]) -> list[str]:
    """The path arguments of a command call (inputs, --out...), to name them in an unexpected error."""
    found = []
    for value in arguments.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Path):
                found.append(str(item))
    return found


def describe_error(exc: BaseException, arguments: dict[str, Any] | None = None) -> str:
    """The one-line message of an error that reached the command line.

    A :class:`MedlensError` already names its file. Any other exception is a defect of medlens; its line
    names the file where Python knows it (``OSError.filename``), else the paths the command was given, and
    says how to get the traceback.
    """
    if isinstance(exc, MedlensError):
        return one_line(str(exc))
    filename = getattr(exc, "filename", None)
    where = f"{filename}: " if filename else ""
    given = _paths_given(arguments or {})
    context = f" (files given: {', '.join(given[:4])}{' ...' if len(given) > 4 else ''})" if given and not where else ""
    return one_line(f"{where}unexpected {type(exc).__name__}: {exc}{context} (a defect of medlens; rerun with "
                    "`medlens --debug ...` for the traceback and report it)")


def reports_errors(command: F) -> F:
    """Run ``command``; any exception prints one line ``error: <message>`` and exits.

    Exit status :data:`EXIT_ERROR` (2) for a :class:`MedlensError`, :data:`EXIT_INTERNAL` (3) for any other
    exception. With ``medlens --debug`` (or ``MEDLENS_DEBUG=1``) the exception propagates with its
    traceback instead. Ctrl-C and Typer's own exits and usage errors pass through unchanged.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if debug_requested():
                raise
            # soft_wrap: the terminal wraps the line; no newline is inserted into a path or a field name
            console.print(f"[bold red]error:[/] {escape(describe_error(exc, kwargs))}", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(code=EXIT_ERROR if isinstance(exc, MedlensError) else EXIT_INTERNAL) from exc

    return wrapper  # type: ignore[return-value]


def show_warnings_on_one_line() -> None:
    """Print Python warnings as ``warning: <message>`` on stderr (no source line) for the command line."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 (the hook's signature)
        console.print(f"[yellow]warning:[/] {escape(one_line(str(message)))}", highlight=False, soft_wrap=True)

    warnings.showwarning = show
