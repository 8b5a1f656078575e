"""Every `medlens ... --help` page shows the placeholders its source text names.

The CLI renders help as Markdown, where a bare ``<study>`` is read as an HTML tag and dropped: the page
then says ``runs/-`` instead of ``runs/<study>-<date-time>``. A placeholder survives inside backticks.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from medlens.cli import app

PLACEHOLDER = re.compile(r"<[a-z][\w-]*>")


def leaf_commands(group, path: tuple[str, ...] = ()) -> list:
    """Every runnable command under ``group`` (a Typer command group) with its path of sub-command names."""
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += leaf_commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = leaf_commands(typer.main.get_command(app))


def source_text(command) -> str:
    """The command's help and its parameters' help, as written in the source."""
    return " ".join([command.help or ""] + [getattr(p, "help", None) or "" for p in command.params])


def test_every_command_is_found():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"study", "predict", "data list", "segment train", "synth sample"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_keeps_placeholders(path, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per paragraph: nothing is split by wrapping
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    missing = [p for p in PLACEHOLDER.findall(source_text(command)) if p not in result.output]
    assert not missing, f"`medlens {' '.join(path)} --help` drops {missing}"
