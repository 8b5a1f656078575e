"""The outermost middleware on its own: time limit, body counted as it arrives, errors that escape, headers."""

from __future__ import annotations

import anyio
import httpx

from medlens.serve.app import Guard
from medlens.serve.uploads import Limits


async def reply(send, status: int = 200, body: bytes = b"{}") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def request(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return anyio.run(go)


def test_a_request_past_its_time_limit_gets_504():
    async def slow(scope, receive, send):
        await anyio.sleep(30)
        await reply(send)

    answer = request(Guard(slow, Limits(request_seconds=0.2)), "GET", "/api/v1/slow")
    assert answer.status_code == 504 and answer.json() == {
        "error": "the request did not finish within the time limit of 0.2 s", "status": 504}


def test_a_body_without_length_is_counted_and_cut_at_the_limit():
    async def reads_everything(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await reply(send)

    async def chunks():
        for _ in range(10):
            yield bytes(1024)

    guard = Guard(reads_everything, Limits(max_upload_bytes=4096))
    answer = request(guard, "POST", "/api/v1/upload", content=chunks())
    assert answer.status_code == 413 and "upload limit of 4096 bytes" in answer.json()["error"]
    assert request(guard, "POST", "/api/v1/upload", content=bytes(100)).status_code == 200


def test_an_error_that_escapes_is_a_json_500_without_traceback():
    async def broken(scope, receive, send):
        raise RuntimeError("secret internal detail")

    answer = request(Guard(broken, Limits()), "GET", "/api/v1/broken")
    assert answer.status_code == 500 and answer.json()["status"] == 500
    assert "secret" not in answer.text and "Traceback" not in answer.text


def test_headers_protect_answers_and_the_page():
    async def ok(scope, receive, send):
        await reply(send)

    guard = Guard(ok, Limits())
    api = request(guard, "GET", "/api/v1/bundles").headers
    assert api["cache-control"] == "no-store" and api["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api
    page = request(guard, "GET", "/").headers
    assert "default-src 'self'" in page["content-security-policy"] and page["x-frame-options"] == "DENY"


def test_only_the_names_of_a_loopback_server_are_answered():
    async def ok(scope, receive, send):
        await reply(send)

    guard = Guard(ok, Limits(), allowed_hosts=("127.0.0.1", "localhost", "[::1]"))
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert request(guard, "GET", "/api/v1/health", headers={"host": host}).status_code == 200
    rebound = request(guard, "GET", "/api/v1/health", headers={"host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "'attacker.example' is not a name of this server" in rebound.json()["error"]
