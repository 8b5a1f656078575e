"""The prepared sets' pinned GitHub sources: the recorded md5s against the real files, and downloads from a
loopback server that serves the shared copies at raw.githubusercontent.com's paths."""

from __future__ import annotations

import csv
import dataclasses
import hashlib

import pandas as pd
import pytest

from loopback import Server, serving
from realdata import need
from medlens.data import catalog, fetch, github
from medlens.errors import DownloadError

SETS = ["lidc-nodule-vois", "lidc-idri-ct", "lidc-idri-ct-more"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDLENS_CACHE", str(cache))
    monkeypatch.setenv("MEDLENS_DATA", str(tmp_path / "empty"))
    return cache


def _raw_server(data_root, xlsx=None):
    """Serve every file of the three sets at /<repo>/<commit>/<path in the repository>."""
    server = Server()
    for name in SETS:
        source = github.github_source(name)
        folder = data_root / catalog.get(name).local_path
        for item in source.files:
            key = f"/{source.repo}/{source.commit}/{item.source}"
            path = xlsx if item.sheet else folder / item.path
            server.routes[key] = (lambda q, path=path: (200, {}, path.read_bytes()))
    return server


@pytest.fixture
def xlsx(data_root, tmp_path, monkeypatch):
    """The metadata sheet as an xlsx made from the shipped CSV (the repository's xlsx is not in the shared data);
    its md5 replaces the recorded one, the CSV's md5 stays the recorded one."""
    sheet = need(data_root, "lidc_idri_nodule_vois/MetadatabyNoduleMaxVoting.csv")
    path = tmp_path / "MetadatabyNoduleMaxVoting.xlsx"
    pd.read_csv(sheet).to_excel(path, sheet_name="ML4PM_MetadatabyNoduleMaxVoting", index=False)
    source = github.github_source("lidc-nodule-vois")
    files = tuple(dataclasses.replace(f, source_md5=hashlib.md5(path.read_bytes()).hexdigest(),
                                      source_bytes=path.stat().st_size) if f.sheet else f for f in source.files)
    monkeypatch.setitem(github._table(), "lidc-nodule-vois", dataclasses.replace(source, files=files))
    return path


@pytest.mark.parametrize("name", SETS)
def test_recorded_md5s_equal_the_shared_copies(data_root, name):
    folder = need(data_root, catalog.get(name).local_path)
    source = github.github_source(name)
    assert source.commit and len(source.commit) == 40
    for item in source.files:
        assert fetch.md5sum(folder / item.path) == item.md5, item.path
    if source.manifest is not None:  # the manifest written after a download is the shared one, byte for byte
        text = github.manifest_text(source).encode()
        assert text == (folder / source.manifest).read_bytes()
        assert hashlib.md5(text).hexdigest() == catalog.get(name).md5


def test_every_shared_file_has_a_source(data_root):
    folder = need(data_root, "lidc_idri_nodule_vois")
    with (folder / "manifest.csv").open(newline="") as fh:
        listed = {row["path"] for row in csv.DictReader(fh)}
    assert listed == {f.path for f in github.github_source("lidc-nodule-vois").files}
    assert github.github_source("lidc-nodule-vois").files[0].source == "data/MetadatabyNoduleMaxVoting.xlsx"


def test_fetch_downloads_and_verifies_the_vois(data_root, xlsx, monkeypatch, private_cache):
    with serving(_raw_server(data_root, xlsx)) as server:
        monkeypatch.setattr(github, "RAW_BASE", server.url)
        folder = fetch.download_dataset("lidc-nodule-vois", progress=False)
        assert folder == private_cache / "lidc_idri_nodule_vois"
        report = fetch.verify("lidc-nodule-vois", strict=True)
        assert report.ok and len(report.checks) == 1 + 1989
        first = sum(server.hits.values())
        assert first == 1 + 1988  # every file once, the xlsx once
        # a second fetch downloads nothing; a damaged file is fetched again, alone
        (folder / "image" / "LIDC-IDRI-0001_R_1.nii.gz").write_bytes(b"broken")
        fetch.download_dataset("lidc-nodule-vois", progress=False)
        assert sum(server.hits.values()) == first + 1
        assert fetch.verify("lidc-nodule-vois", strict=True).ok
    assert not list(folder.rglob("*.part"))


def test_study_fetches_missing_data_after_saying_so(data_root, monkeypatch, private_cache):
    said = []
    with serving(_raw_server(data_root)) as server:
        monkeypatch.setattr(github, "RAW_BASE", server.url)
        where = fetch.ensure_dataset("lidc-idri-ct-more", progress=False, say=said.append)
    assert where == private_cache / "lidc_idri_ct_more"
    assert "25 files, 12.8 MB" in said[0] and "drivendataorg/concept-to-clinic" in said[0]
    assert fetch.verify("lidc-idri-ct-more", strict=True).ok
    assert fetch.ensure_dataset("lidc-idri-ct-more", say=said.append) == where and len(said) == 1


def test_a_wrong_byte_is_refused_and_named(data_root, monkeypatch, private_cache):
    server = _raw_server(data_root)
    source = github.github_source("lidc-idri-ct")
    bad = source.files[3]
    server.routes[f"/{source.repo}/{source.commit}/{bad.source}"] = lambda q: (200, {}, b"not the file")
    with serving(server):
        monkeypatch.setattr(github, "RAW_BASE", server.url)
        with pytest.raises(DownloadError, match=bad.md5) as err:
            fetch.download_dataset("lidc-idri-ct", progress=False)
    assert bad.source in str(err.value) and "again" in str(err.value)
    folder = private_cache / "lidc_idri_ct"
    assert not (folder / bad.path).exists() and (folder / source.files[0].path).is_file()


def test_the_study_entry_says_where_it_comes_from(monkeypatch, tmp_path):
    with pytest.raises(Exception, match="github.com/PabloLION/ct-slicing"):
        fetch.resolve("lidc-nodule-vois")
