"""Progress bars for long work (rich), silenced by ``--quiet`` or ``MEDLENS_QUIET=1``."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


_silenced = False


@contextmanager
def silenced(quiet: bool = True) -> Iterator[None]:
    """Within the block, every progress bar (the trainer's too) stays off when ``quiet``."""
    global _silenced
    before, _silenced = _silenced, _silenced or quiet
    try:
        yield
    finally:
        _silenced = before


def progress_disabled(disable: bool = False) -> bool:
    """True for ``disable``, inside :func:`silenced`, under ``MEDLENS_QUIET=1`` and in CI."""
    return disable or _silenced or os.environ.get("MEDLENS_QUIET") == "1" or os.environ.get("CI") == "true"


@contextmanager
def progress_bar(total: int, title: str, disable: bool = False) -> Iterator[Callable[[str], Callable[[], None]]]:
    """A bar of ``total`` steps; yields ``advance_for(label)`` which returns a one-step advancer.

    Examples
    --------
    >>> with progress_bar(4, "study", disable=True) as advance_for:
    ...     step = advance_for("bp")
    ...     step()
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=progress_disabled(disable), transient=False,
    )
    task = progress.add_task(title, total=total)

    def advance_for(label: str) -> Callable[[], None]:
        def advance() -> None:
            progress.update(task, advance=1, description=f"{title}: {label}")

        progress.update(task, description=f"{title}: {label}")
        return advance

    with progress:
        yield advance_for
