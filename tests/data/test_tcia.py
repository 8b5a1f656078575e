"""`medlens data fetch lidc-idri`: the three local LIDC-IDRI series served in the NBIA API's shape
(getSeries JSON, getImageWithMD5Hash zip with md5hashes.csv, byte ranges) from a loopback server."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from typer.testing import CliRunner

from loopback import Server, serving
from realdata import need
from medlens.cli import app
from medlens.data import tcia
from medlens.errors import DownloadError

API = "/nbia-api/services/v4"


def local_series(data_root):
    """{series uid: (record as getSeries gives it, folder)} of the shared LIDC series."""
    out = {}
    for root in ("lidc_idri_ct", "lidc_idri_ct_more"):
        for folder in sorted(need(data_root, root).glob("LIDC-IDRI-*/*/*")):
            files = sorted(folder.iterdir())
            out[folder.name] = ({"PatientID": folder.parent.parent.name, "StudyInstanceUID": folder.parent.name,
                                 "SeriesInstanceUID": folder.name, "Modality": "CT", "Collection": "LIDC-IDRI",
                                 "ImageCount": sum(f.suffix == ".dcm" for f in files),
                                 "FileSize": sum(f.stat().st_size for f in files)}, folder)
    return out


def series_zip(folder, corrupt: str | None = None) -> bytes:
    """The series as getImageWithMD5Hash sends it: its files and md5hashes.csv."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        rows = ["filename,md5hash"]
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            rows.append(f"{path.name},{hashlib.md5(data).hexdigest()}")
            archive.writestr(path.name, data + (b"x" if path.name == corrupt else b""))
        archive.writestr("md5hashes.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()


@pytest.fixture
def nbia(data_root):
    series = local_series(data_root)
    server = Server()
    server.cut = {}  # series uid -> bytes after which the next transfer breaks (once)
    server.corrupt = {}

    def get_series(query):
        assert query["Collection"] == ["LIDC-IDRI"] and query["Modality"] == ["CT"]
        return 200, {"Content-Type": "application/json"}, json.dumps([r for r, _ in series.values()]).encode()

    def get_image(query):
        uid = query["SeriesInstanceUID"][0]
        if uid not in series:
            return 200, {"Content-Type": "application/zip"}, b""
        headers = {"Content-Type": "application/zip", "Accept-Ranges": "bytes"}
        if uid in server.cut:
            headers["X-Cut-After"] = str(server.cut.pop(uid))
        return 200, headers, series_zip(series[uid][1], server.corrupt.get(uid))

    server.routes[f"{API}/getSeries"] = get_series
    server.routes[f"{API}/getImageWithMD5Hash"] = get_image
    server.series = series
    with serving(server):
        server.base = server.url + API
        yield server


def _same_files(downloaded, original):
    names = sorted(p.name for p in original.iterdir())
    assert sorted(p.name for p in downloaded.iterdir() if p.name != tcia.RECORD) == names
    for name in names:
        assert (downloaded / name).read_bytes() == (original / name).read_bytes()


def test_first_n_patients_in_the_download_tool_tree(nbia, tmp_path):
    report = tcia.fetch_lidc_idri(tmp_path / "raw", 2, base=nbia.base)
    assert report.ok and len(report.downloaded) == 2 and not report.present
    for uid, (record, folder) in nbia.series.items():
        target = tmp_path / "raw" / record["PatientID"] / record["StudyInstanceUID"] / uid
        if record["PatientID"] in ("LIDC-IDRI-0001", "LIDC-IDRI-0002"):
            _same_files(target, folder)
            assert tcia.is_complete(target)
        else:
            assert not target.exists()
    again = tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0002", "LIDC-IDRI-0003"], base=nbia.base)
    assert len(again.present) == 1 and len(again.downloaded) == 1  # 0002 is kept, only 0003 is fetched
    assert nbia.hits[f"{API}/getImageWithMD5Hash"] == 3


def test_a_broken_transfer_resumes_from_its_last_byte(nbia, tmp_path):
    uid = next(u for u, (r, _) in nbia.series.items() if r["PatientID"] == "LIDC-IDRI-0003")
    nbia.cut[uid] = 100_000
    first = tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0003"], base=nbia.base)
    assert uid in first.failed and "resume" in first.failed[uid]
    assert (tmp_path / "raw" / ".partial" / f"{uid}.zip.part").stat().st_size == 100_000
    second = tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0003"], base=nbia.base)
    assert second.downloaded == [uid] and nbia.ranges == ["bytes=100000-"]
    record, folder = nbia.series[uid]
    _same_files(tmp_path / "raw" / "LIDC-IDRI-0003" / record["StudyInstanceUID"] / uid, folder)
    assert not list((tmp_path / "raw" / ".partial").iterdir())


def test_a_file_that_fails_its_md5_is_not_kept(nbia, tmp_path):
    uid = next(u for u, (r, _) in nbia.series.items() if r["PatientID"] == "LIDC-IDRI-0001")
    nbia.corrupt[uid] = "69.xml"
    report = tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0001"], base=nbia.base)
    assert "69.xml has md5" in report.failed[uid]
    assert not (tmp_path / "raw" / "LIDC-IDRI-0001").exists()
    nbia.corrupt.clear()
    assert tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0001"], base=nbia.base).downloaded == [uid]


def test_a_damaged_file_of_a_complete_series_is_fetched_again(nbia, tmp_path):
    tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0001"], base=nbia.base)
    dcm = next((tmp_path / "raw" / "LIDC-IDRI-0001").rglob("*.dcm"))
    dcm.write_bytes(dcm.read_bytes()[:-10])
    report = tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-0001"], base=nbia.base)
    assert len(report.downloaded) == 1 and dcm.stat().st_size > 500_000


def test_unknown_patient_and_offline_are_clear_errors(nbia, tmp_path):
    with pytest.raises(DownloadError, match="LIDC-IDRI-9999"):
        tcia.fetch_lidc_idri(tmp_path / "raw", ["LIDC-IDRI-9999"], base=nbia.base)
    with pytest.raises(DownloadError, match="could not be reached"):
        tcia.list_series("http://127.0.0.1:9/nbia-api/services/v4")


def test_cli_fetch_lidc_idri(nbia, tmp_path, monkeypatch):
    monkeypatch.setattr(tcia, "NBIA_BASE", nbia.base)
    result = CliRunner().invoke(app, ["data", "fetch", "lidc-idri", "--patients", "1", "--out", str(tmp_path / "raw"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 series downloaded" in result.output
    assert len(list((tmp_path / "raw" / "LIDC-IDRI-0001").rglob("*.dcm"))) == 16


def test_verify_checks_a_downloaded_archive_against_its_records(nbia, tmp_path):
    raw = tmp_path / "raw"
    assert tcia.fetch_lidc_idri(raw, None, base=nbia.base).ok
    runner = CliRunner()
    result = runner.invoke(app, ["data", "verify", "lidc-idri", "--path", str(raw), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 series with a download record, 42/42 files match" in result.output
    assert "not checked: whether every series" in result.output  # what it cannot check, said
    # a damaged file, a file the download did not bring, a series copied in without a record
    dcm = sorted((raw / "LIDC-IDRI-0003").rglob("*.dcm"))[2]
    dcm.write_bytes(dcm.read_bytes()[:-1] + b"\0")
    (dcm.parent / "extra.dcm").write_bytes(b"not from TCIA")
    copied = raw / "LIDC-IDRI-0009" / "study" / "series"
    copied.mkdir(parents=True)
    (copied / "1.dcm").write_bytes(b"x")
    result = runner.invoke(app, ["data", "verify", "lidc-idri", "--path", str(raw), "--quiet"])
    assert result.exit_code == 1
    assert dcm.name in result.output and "41/42 files match" in result.output
    assert "not in its series' download record" in result.output and "extra.dcm" in result.output
    assert "no download record, not checked: LIDC-IDRI-0009/study/series/" in result.output
    report = tcia.verify_archive(raw)
    assert not report.ok and report.series == 3 and report.unrecorded == ["LIDC-IDRI-0009/study/series"]
    assert [c.path.rsplit("/", 1)[1] for c in report.failures] == [dcm.name]


def test_verify_of_a_folder_without_records_fails_and_says_why(data_root, tmp_path):
    raw = tmp_path / "raw"
    for patient, root in (("LIDC-IDRI-0001", "lidc_idri_ct"),):
        (raw / patient).parent.mkdir(parents=True, exist_ok=True)
        (raw / patient).symlink_to(need(data_root, f"{root}/{patient}"))
    report = tcia.verify_archive(raw)
    assert not report.ok and report.series == 0 and len(report.unrecorded) == 1
    assert "0 series with a download record" in report.summary() and "NOT verified" in report.summary()
