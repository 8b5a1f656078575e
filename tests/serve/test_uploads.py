"""Upload handling without a server: recognition by content, archive checks, pixel limits from headers,
server-chosen names and workspaces that disappear."""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from medlens.serve.errors import RequestError
from medlens.serve.uploads import Limits, Workspace, display_name, receive, sniff


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` × ``height`` 8-bit gray pixels, with one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def receive_bytes(workspace: Workspace, data: bytes, name: str = "upload", limits: Limits = Limits()):
    return receive([(name, io.BytesIO(data))], workspace, limits)


@pytest.fixture()
def workspace(tmp_path):
    ws = Workspace(tmp_path)
    yield ws
    ws.close()


def test_display_name_is_only_a_printable_base_name():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\x\\scan\x00\n.png") == "scan.png"
    assert display_name("") == "upload" and len(display_name("a" * 500)) == 120


def test_format_comes_from_the_content_not_the_name(workspace, breast_npz):
    buffer = io.BytesIO()
    Image.fromarray(np.load(breast_npz)["test_images"][0]).save(buffer, format="PNG")
    upload = receive_bytes(workspace, buffer.getvalue(), name="../../looks_like.nii.gz")
    assert upload.format == "picture" and upload.path == workspace.path / "image.png"
    assert upload.shape == (28, 28) and not upload.volume and upload.name == "looks_like.nii.gz"
    assert sorted(p.name for p in workspace.path.iterdir()) == ["image.png"]
    assert sniff(b"\x00" * 400) is None


def test_zip_members_never_choose_where_files_go(workspace, lidc_series):
    files = sorted(lidc_series.iterdir())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in files:
            archive.write(file, f"deep/folder/{file.name}")
        archive.writestr("__MACOSX/._junk", b"resource fork")
    upload = receive_bytes(workspace, buffer.getvalue(), name="series.zip")
    written = sorted(p.name for p in upload.path.iterdir())
    assert upload.format == "dicom" and upload.shape == (16, 512, 512) and upload.volume
    assert written == [f"{i:05d}.dcm" for i in range(16)] + ["00016.xml"]
    assert workspace.names["00016.xml"] == "69.xml"
    assert workspace.scrub(f"{upload.path}/00016.xml: no nodule") == "series.zip/69.xml: no nodule"


@pytest.mark.parametrize("member", ["../../x", "/etc/cron.d/x", "a/../../x", "C:/x", "a\\..\\x"])
def test_unsafe_member_paths_are_refused(workspace, member):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, b"data")
    with pytest.raises(RequestError, match="unsafe path") as caught:
        receive_bytes(workspace, buffer.getvalue())
    assert caught.value.status == 400


def test_symbolic_link_members_are_refused(workspace):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("slice.dcm")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(RequestError, match="symbolic link"):
        receive_bytes(workspace, buffer.getvalue())


def test_archives_that_expand_too_far_are_refused_before_extraction(workspace):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", bytes(4 << 20))
        archive.writestr("b.dcm", bytes(4 << 20))
    with pytest.raises(RequestError, match="expands to 8388608 bytes") as caught:
        receive_bytes(workspace, buffer.getvalue(), limits=Limits(max_unzipped_bytes=6 << 20))
    assert caught.value.status == 413 and not (workspace.path / "series").exists()


def test_a_lying_archive_is_stopped_by_what_is_written(workspace):
    """A member that declares 1 KiB but holds 9 MiB: extraction counts the real bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.dcm", os.urandom(9 << 20))
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size field
        at = data.find(signature)
        data[at + offset:at + offset + 4] = struct.pack("<I", 1024)
    with pytest.raises(RequestError) as caught:
        receive_bytes(workspace, bytes(data), limits=Limits(max_unzipped_bytes=4 << 20))
    assert caught.value.status in (400, 413)  # a bad CRC or the byte count: refused either way
    assert sum(p.stat().st_size for p in (workspace.path / "series").iterdir()) <= 4 << 20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_bombs_are_refused_from_the_header(workspace):
    """10000 × 10000 pixels announced by a 100-byte PNG: refused by the header, never decoded."""
    bomb = png_header_only(10_000, 10_000)
    assert len(bomb) < 200
    with pytest.raises(RequestError, match="100000000 pixel values") as caught:
        receive_bytes(workspace, bomb, limits=Limits(max_voxels=50_000_000))
    assert caught.value.status == 413
    with pytest.raises(RequestError, match="refused before decoding"):  # past Pillow's own bomb limit too
        receive_bytes(Workspace(workspace.path.parent), png_header_only(60_000, 60_000))


def test_npz_shapes_come_from_the_array_headers(workspace):
    buffer = io.BytesIO()
    np.savez(buffer, images=np.zeros((300, 100, 100), np.uint8))
    with pytest.raises(RequestError, match="3000000 pixel values"):
        receive_bytes(workspace, buffer.getvalue(), limits=Limits(max_voxels=1_000_000))
    buffer = io.BytesIO()
    np.savez(buffer, test_images=np.zeros((4, 28, 28), np.uint8))
    upload = receive_bytes(Workspace(workspace.path.parent), buffer.getvalue())
    assert upload.format == "npz" and upload.shape == (4, 28, 28) and not upload.volume


def test_upload_size_is_counted(workspace):
    with pytest.raises(RequestError, match="upload limit") as caught:
        receive_bytes(workspace, b"x" * 2048, limits=Limits(max_upload_bytes=1024))
    assert caught.value.status == 413


def test_workspace_is_private_and_outlives_a_running_step(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.path.stat().st_mode & 0o777 == 0o700 and ws.path.name.startswith("req-")
    inside, release = threading.Event(), threading.Event()

    def step():
        with ws.use() as folder:
            (folder / "partial").write_bytes(b"1")
            inside.set()
            release.wait(10)
            (folder / "more").write_bytes(b"2")  # still there although the request was closed

    worker = threading.Thread(target=step)
    worker.start()
    inside.wait(10)
    ws.close()
    assert ws.path.exists()
    release.set()
    worker.join(10)
    assert not ws.path.exists()
    with pytest.raises(RequestError):  # a step after close is refused and recreates nothing
        with ws.use():
            pass
    assert not ws.path.exists()
