"""Dataset resolution, md5 verification and downloads (from file:// URLs and a local http server only)."""

from __future__ import annotations

import dataclasses
import http.server
import shutil
import socket
import threading

import pytest

from realdata import need
from medlens.data import catalog, fetch
from medlens.errors import ChecksumError, DatasetError, DownloadError, MissingPathError

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache of its own, never ~/.cache/medlens."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDLENS_CACHE", str(cache))
    return cache


@pytest.fixture
def breast(data_root):
    return need(data_root, "medmnist/breastmnist.npz")


def _with_url(monkeypatch, name: str, url: str, md5: str | None = None) -> None:
    """Point catalogue entry ``name`` at ``url`` (and optionally another md5) for one test."""
    entry = catalog.get(name)
    monkeypatch.setitem(catalog._catalog(), name, dataclasses.replace(entry, url=url, md5=md5 or entry.md5))


def _flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- md5 and verify on the real files --------------------------------------------------------------------------
def test_md5sum_of_a_real_file(breast):
    assert fetch.md5sum(breast) == BREAST_MD5
    with pytest.raises(MissingPathError):
        fetch.md5sum(breast.parent / "absent.npz")


@pytest.mark.parametrize(
    "name", ["pneumoniamnist", "breastmnist", "adrenalmnist3d", "adrenalmnist3d_64", "lidc-idri-ct",
             "isbi2012-membrane", "lidc-nodule-vois", "montgomery-cxr"]
)
def test_verify_passes_on_the_real_data(data_root, monkeypatch, name):
    need(data_root, catalog.get(name).local_path)
    monkeypatch.setenv("MEDLENS_DATA", str(data_root))
    report = fetch.verify(name, strict=True)
    assert report.ok and not report.failures
    manifest_rows = {"lidc-nodule-vois": 1989, "montgomery-cxr": 277}
    assert len(report.checks) == len(catalog.get(name).files) + manifest_rows.get(name, 0)


def test_verify_fails_on_a_corrupted_copy(breast, tmp_path):
    copy = tmp_path / "breastmnist.npz"
    shutil.copyfile(breast, copy)
    _flip_byte(copy, 1000)
    report = fetch.verify("breastmnist", path=copy)
    assert not report.ok and report.failures[0].expected == BREAST_MD5
    assert report.failures[0].actual == fetch.md5sum(copy)
    with pytest.raises(ChecksumError, match=BREAST_MD5):
        fetch.verify("breastmnist", path=copy, strict=True)


def test_verify_names_the_bad_and_missing_files_of_a_folder(data_root, tmp_path):
    copy = tmp_path / "isbi"
    shutil.copytree(need(data_root, "isbi2012_membrane"), copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    _flip_byte(copy / "train/label/7.png", 200)
    (copy / "train/image/3.png").unlink()
    report = fetch.verify("isbi2012-membrane", path=copy)
    assert {c.path for c in report.failures} == {"train/label/7.png", "train/image/3.png"}
    assert report.missing == ["train/image/3.png"]
    assert "58/60" in report.summary()


def test_verify_checks_files_against_the_manifest(data_root, tmp_path):
    copy = tmp_path / "more"
    shutil.copytree(need(data_root, "lidc_idri_ct_more"), copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    dicom = sorted(copy.rglob("*.dcm"))[3]
    _flip_byte(dicom, dicom.stat().st_size - 10)  # inside the pixel data
    report = fetch.verify("lidc-idri-ct-more", path=copy)
    assert [c.path for c in report.failures] == [str(dicom.relative_to(copy))]
    _flip_byte(copy / "manifest.csv", 40)  # a manifest that fails its own md5 is not trusted further
    report = fetch.verify("lidc-idri-ct-more", path=copy)
    assert [c.path for c in report.failures] == ["manifest.csv"] and len(report.checks) == 1


# --- resolution order -----------------------------------------------------------------------------------------
def test_explicit_path_wins_over_medlens_data(breast, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLENS_DATA", str(data_root))
    copy = tmp_path / "mine.npz"
    shutil.copyfile(breast, copy)
    assert fetch.resolve("breastmnist", path=copy) == copy
    root = tmp_path / "root"
    (root / "medmnist").mkdir(parents=True)
    shutil.copyfile(breast, root / "medmnist" / "breastmnist.npz")
    assert fetch.resolve("breastmnist", path=root) == root / "medmnist" / "breastmnist.npz"
    with pytest.raises(MissingPathError):
        fetch.resolve("breastmnist", path=tmp_path / "typo.npz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="without breastmnist's file"):
        fetch.resolve("breastmnist", path=empty)


def test_medlens_data_then_cache(breast, data_root, tmp_path, monkeypatch, private_cache):
    cached = private_cache / "medmnist" / "breastmnist.npz"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(breast, cached)
    monkeypatch.setenv("MEDLENS_DATA", str(data_root))
    assert fetch.resolve("breastmnist") == data_root / "medmnist" / "breastmnist.npz"
    monkeypatch.setenv("MEDLENS_DATA", str(tmp_path / "empty"))
    assert fetch.resolve("breastmnist") == cached
    monkeypatch.delenv("MEDLENS_DATA")
    assert fetch.resolve("breastmnist") == cached


def test_absent_everywhere_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLENS_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="MEDLENS_DATA") as err:
        fetch.resolve("nodulemnist3d")
    assert "8755a7e9e05a4d9ce80a24c3e7a256f3" in str(err.value) and "zenodo.org" in str(err.value)
    with pytest.raises(DownloadError, match="no verified direct download") as err:
        fetch.resolve("montgomery-cxr", download=True)
    assert "nlm.nih.gov" in str(err.value) and "MEDLENS_DATA" in str(err.value)


# --- downloads --------------------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` at /full and only its first half (while announcing all of it) at /truncated."""

    payload = b""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        body = self.payload if self.path == "/full" else self.payload[: len(self.payload) // 2]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(breast):
    handler = type("Handler", (_Handler,), {"payload": breast.read_bytes()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/breastmnist.npz"


def test_download_from_a_file_url(breast, tmp_path, monkeypatch, private_cache):
    monkeypatch.setenv("MEDLENS_DATA", str(tmp_path / "empty"))
    _with_url(monkeypatch, "breastmnist", breast.as_uri())
    path = fetch.resolve("breastmnist", download=True, progress=False)
    assert path == private_cache / "medmnist" / "breastmnist.npz"
    assert fetch.md5sum(path) == BREAST_MD5
    assert _leftovers(path.parent) == ["breastmnist.npz"]


def test_download_over_http_with_progress(server, tmp_path, monkeypatch):
    _with_url(monkeypatch, "breastmnist", f"{server}/full")
    path = fetch.download_dataset("breastmnist", dest=tmp_path / "dest", progress=True)
    assert path == tmp_path / "dest" / "medmnist" / "breastmnist.npz"
    assert fetch.md5sum(path) == BREAST_MD5 and _leftovers(path.parent) == ["breastmnist.npz"]


def test_wrong_md5_leaves_nothing(server, tmp_path, monkeypatch):
    _with_url(monkeypatch, "breastmnist", f"{server}/full", md5="0" * 32)
    with pytest.raises(DownloadError, match="0{32}") as err:
        fetch.download_dataset("breastmnist", dest=tmp_path / "dest", progress=False)
    assert isinstance(err.value, ChecksumError) and BREAST_MD5 in str(err.value)
    assert _leftovers(tmp_path / "dest" / "medmnist") == []


def test_server_failing_midway_leaves_nothing(server, tmp_path, monkeypatch):
    _with_url(monkeypatch, "breastmnist", f"{server}/truncated")
    with pytest.raises(DownloadError, match="ended after 279790 of 559580 bytes") as err:
        fetch.download_dataset("breastmnist", dest=tmp_path / "dest", progress=False)
    assert f"{server}/truncated" in str(err.value)
    assert _leftovers(tmp_path / "dest" / "medmnist") == []


def test_offline_error_names_url_md5_and_medlens_data(tmp_path, monkeypatch):
    url = _closed_port_url()
    _with_url(monkeypatch, "breastmnist", url)
    with pytest.raises(DownloadError) as err:
        fetch.download_dataset("breastmnist", dest=tmp_path / "dest", progress=False)
    message = str(err.value)
    assert url in message and BREAST_MD5 in message and "MEDLENS_DATA" in message
    assert _leftovers(tmp_path / "dest" / "medmnist") == []


def test_a_verified_file_is_not_downloaded_again(breast, tmp_path, monkeypatch):
    target = tmp_path / "dest" / "medmnist" / "breastmnist.npz"
    target.parent.mkdir(parents=True)
    shutil.copyfile(breast, target)
    _with_url(monkeypatch, "breastmnist", _closed_port_url())  # any network use would fail
    assert fetch.download_dataset("breastmnist", dest=tmp_path / "dest", progress=False) == target
