"""A small HTTP server on 127.0.0.1 (a free port) for download tests: routes map a path to a function that
returns ``(status, headers, body)``; every request is counted, byte ranges are honoured where a route allows,
and a header ``X-Cut-After: N`` makes the server hang up after N bytes of a longer announced body."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections import Counter
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

Route = Callable[[dict[str, list[str]]], "tuple[int, dict[str, str], bytes]"]


class Server:
    """Routes by URL path (without query); ``hits`` counts requests per path; ``ranges`` lists Range headers seen."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.prefix_routes: list[tuple[str, Callable[[str, dict], tuple[int, dict[str, str], bytes]]]] = []
        self.hits: Counter[str] = Counter()
        self.ranges: list[str] = []
        self.url = ""


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            server.hits[parts.path] += 1
            route = server.routes.get(parts.path)
            if route is not None:
                status, headers, body = route(query)
            else:
                match = next(((p, f) for p, f in server.prefix_routes if parts.path.startswith(p)), None)
                status, headers, body = (match[1](parts.path[len(match[0]):], query) if match
                                         else (404, {}, b"not found"))
            wanted = self.headers.get("Range")
            if wanted and status == 200 and headers.get("Accept-Ranges") == "bytes":
                server.ranges.append(wanted)
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                headers = {**headers, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                status, body = 206, body[start:]
            cut = headers.pop("X-Cut-After", None)  # announce the whole body, send only this many bytes, hang up
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if cut is None else body[: int(cut)])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Run ``server`` on 127.0.0.1 at a port the OS chooses, for the duration of the block."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
