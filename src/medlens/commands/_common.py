"""What every command shares: one console, and MedlensError turned into a clean message and exit code."""

from __future__ import annotations

import functools
import os
from typing import Callable, TypeVar

import typer
from rich.console import Console

from medlens.errors import MedlensError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def quiet_requested(quiet: bool = False) -> bool:
    """True when output should be minimal: ``--quiet`` or ``MEDLENS_QUIET=1`` (CI and scripts)."""
    return quiet or os.environ.get("MEDLENS_QUIET") == "1"


def reports_errors(command: F) -> F:
    """Run ``command``; a :class:`MedlensError` prints ``error: <message>`` and exits with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MedlensError as exc:
            # soft_wrap: the terminal wraps the line; no newline is inserted into a path or a field name
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from exc

    return wrapper  # type: ignore[return-value]
