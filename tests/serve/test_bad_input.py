"""Every kind of bad request gets its status and a one-line JSON error, and the server keeps serving."""

from __future__ import annotations

import io
import zipfile

import httpx
import pydicom
import pytest


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb(size: int) -> bytes:
    """One member of ``size`` zero bytes (deflate shrinks it about 1000 to one), written in pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("slice.dcm", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                member.write(block)
    return buffer.getvalue()


def dicom_without_pixels(series) -> bytes:
    dataset = pydicom.dcmread(next(p for p in sorted(series.iterdir()) if p.suffix == ".dcm"))
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_bad_requests_get_their_status_and_the_server_keeps_serving(service, token, lidc_zip, lidc_series,
                                                                     breast_png):
    url, svc = service
    auth = {"Authorization": f"Bearer {token}"}
    predict = f"{url}/api/v1/bundles/breast/predict"
    cases = {
        "empty upload": (400, predict, auth, {"file": ("empty.png", b"")}),
        "zip with ../../x": (400, predict, auth, {"file": ("evil.zip", zip_bytes({"../../x": b"owned"}))}),
        "zip bomb": (413, predict, auth, {"file": ("bomb.zip", zip_bomb(64 << 20))}),
        "non-image file": (415, predict, auth, {"file": ("notes.txt", b"not an image at all\n" * 40)}),
        "DICOM without pixel data": (422, f"{url}/api/v1/bundles/nodules/predict", auth,
                                     {"file": ("slice.dcm", dicom_without_pixels(lidc_series))}),
        "volume for a 2D bundle": (422, predict, auth, {"file": ("ct.zip", lidc_zip.read_bytes())}),
        "wrong token": (401, predict, {"Authorization": "Bearer not-the-token"},
                        {"file": ("a.png", breast_png.read_bytes())}),
        "unknown bundle": (404, f"{url}/api/v1/bundles/no-such-bundle/predict", auth,
                           {"file": ("a.png", breast_png.read_bytes())}),
        "body over the upload limit": (413, predict, auth, {"file": ("big.png", bytes(25 << 20))}),
        "no file field": (422, predict, auth, {"other": ("a.png", breast_png.read_bytes())}),
    }
    for what, (status, target, headers, files) in cases.items():
        answer = httpx.post(target, headers=headers, files=files, timeout=120)
        assert answer.status_code == status, (what, answer.text)
        assert answer.headers["content-type"] == "application/json", what
        body = answer.json()
        assert set(body) == {"error", "status"} and body["status"] == status, (what, body)
        assert body["error"] and "\n" not in body["error"] and "Traceback" not in answer.text, what
        assert str(svc.root.parent) not in body["error"], (what, body)  # no server path reaches the client
        assert list(svc.root.iterdir()) == [], what  # nothing left behind
    assert not (svc.root.parent / "x").exists() and not (svc.root / "x").exists()
    valid = httpx.post(predict, headers=auth, files={"file": ("a.png", breast_png.read_bytes())}, timeout=120)
    assert valid.status_code == 200 and valid.json()["rows"][0]["error"] is None


def test_messages_say_what_is_wrong(service, token, lidc_zip):
    url, _ = service
    auth = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(f"{url}/api/v1/bundles/breast/predict", headers=auth,
                        files={"file": ("ct.zip", lidc_zip.read_bytes())}, timeout=120)
    assert answer.json()["error"] == ("ct.zip: this bundle takes 2D images of shape (1, 28, 28); the upload is a "
                                      "volume of shape (16, 512, 512)")
    evil = httpx.post(f"{url}/api/v1/bundles/nodules/predict", headers=auth, timeout=120,
                      files={"file": ("evil.zip", zip_bytes({"series/../../x": b"owned"}))})
    assert "unsafe path" in evil.json()["error"] and "'series/../../x'" in evil.json()["error"]


@pytest.mark.parametrize("declared", [str(1 << 40)])
def test_declared_body_size_is_refused_before_reading(service, token, declared):
    """A Content-Length over the limit is answered at once, before the body is read."""
    import socket

    url, _ = service
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"POST /api/v1/bundles/breast/predict HTTP/1.1\r\nHost: {host}\r\n"
                           f"Authorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                           f"Content-Length: {declared}\r\n\r\n".encode())
        reply = b""
        while b'"status": 413}' not in reply and (chunk := connection.recv(65536)):
            reply += chunk  # headers and body may come in separate packets
    assert reply.startswith(b"HTTP/1.1 413") and b'"status": 413}' in reply
