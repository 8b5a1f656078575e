"""`medlens data` through Typer's CliRunner, on the real data."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from typer.testing import CliRunner

from realdata import need
from medlens.commands.data import app
from medlens.data import catalog

runner = CliRunner()


@pytest.fixture(autouse=True)
def environment(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLENS_DATA", str(data_root))
    monkeypatch.setenv("MEDLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_shows_every_name_and_presence():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for name in ("pneumoniamnist_224", "adrenalmnist3d_64", "nodulemnist3d", "lidc-nodule-vois", "dsb2018-stardist"):
        assert name in result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert rows["breastmnist"].rstrip(" │").endswith("yes")
    assert rows["chestmnist"].rstrip(" │").endswith("no")
    local = invoke("list", "--local")
    assert "breastmnist " in local.output and "chestmnist " not in local.output


def test_info_counts_classes_in_the_local_file():
    result = invoke("info", "breastmnist")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    row = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("│ ").split("│")] for line in lines)}
    assert row["0 malignant"] == ["147", "21", "42"]
    assert row["1 normal, benign"] == ["399", "57", "114"]
    assert row["total"] == ["546", "78", "156"]
    assert "counted in" in result.output and "CC BY 4.0" in result.output
    assert "750601b1f35ba3300ea97c75c52ff8f6" in result.output


def test_info_falls_back_to_the_catalogue():
    result = invoke("info", "chestmnist")
    assert result.exit_code == 0, result.output
    assert "78468" in result.output and "(catalogue)" in result.output and "not present" in result.output
    assert "650" in invoke("info", "lidc-nodule-vois").output


def test_verify_exit_codes(data_root, tmp_path):
    ok = invoke("verify", "breastmnist")
    assert ok.exit_code == 0 and "1/1 files" in ok.output
    copy = tmp_path / "breastmnist.npz"
    shutil.copyfile(need(data_root, "medmnist/breastmnist.npz"), copy)
    copy.chmod(0o644)
    with copy.open("r+b") as fh:
        fh.seek(500)
        byte = fh.read(1)
        fh.seek(500)
        fh.write(bytes([byte[0] ^ 0xFF]))
    bad = invoke("verify", "breastmnist", "--path", str(copy))
    assert bad.exit_code == 1 and "750601b1f35ba3300ea97c75c52ff8f6" in bad.output and "0/1" in bad.output
    unknown = invoke("verify", "breastmnst")
    assert unknown.exit_code == 2 and "breastmnist" in unknown.output


def test_fetch(data_root, tmp_path, monkeypatch):
    present = invoke("fetch", "breastmnist")
    assert present.exit_code == 0 and "present" in present.output
    no_url = invoke("fetch", "montgomery-cxr", "--dest", str(tmp_path / "d"))
    assert no_url.exit_code == 2 and "no verified direct download" in no_url.output
    entry = catalog.get("breastmnist")
    source = need(data_root, entry.local_path)
    monkeypatch.setitem(catalog._catalog(), "breastmnist", dataclasses.replace(entry, url=source.as_uri()))
    fetched = invoke("fetch", "breastmnist", "--dest", str(tmp_path / "d"), "--quiet")
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "d" / "medmnist" / "breastmnist.npz").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("command", ["list", "info", "fetch", "verify"])
def test_help_reads_as_a_manual(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "MEDLENS_DATA" in result.output or "catalogue" in result.output


def test_top_level_app_mounts_the_data_commands():
    from medlens.cli import app as medlens_app

    result = runner.invoke(medlens_app, ["data", "info", "adrenalmnist3d"])
    assert result.exit_code == 0, result.output
    assert "929" in result.output and "259" in result.output
