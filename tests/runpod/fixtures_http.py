"""A real HTTP file server on 127.0.0.1 for provisioning tests.

Serves small fake model files with the behaviours a download meets in the wild: Range resume,
a connection cut part-way, a token requirement (401), an HTML login page, a redirect to another
host. Every request is recorded (path, host, headers) so tests can assert on what was sent.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    data: bytes
    token: str | None = None  # Bearer token required, or None
    cut_after: int | None = None  # close the connection after this many body bytes...
    cuts_left: int = 0  # ...this many times
    html: bool = False  # answer with a login page instead of the file
    redirect_host: str | None = None  # 302 to the same path on this host:port


@dataclass
class Seen:
    method: str
    path: str
    host: str
    headers: dict[str, str] = field(default_factory=dict)


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def add(self, path: str, data: bytes, **behaviour: object) -> str:
        self.files[path] = Served(data, **behaviour)  # type: ignore[arg-type]
        return self.url(path)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet: tests assert on server.requests instead

        def do_GET(self) -> None:  # noqa: N802
            seen = Seen("GET", self.path, self.headers.get("Host", ""), dict(self.headers))
            with server._lock:
                server.requests.append(seen)
            served = server.files.get(self.path)
            if served is None:
                return self._plain(404, b"not found")
            if served.redirect_host and not self.headers.get("Host", "").startswith(
                served.redirect_host
            ):
                self.send_response(302)
                self.send_header("Location", f"http://{served.redirect_host}{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if served.token is not None:
                if self.headers.get("Authorization") != f"Bearer {served.token}":
                    return self._plain(401, b"unauthorized")
            if served.html:
                return self._plain(200, b"<html>please log in</html>", "text/html; charset=utf-8")
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match and int(match.group(1)) < len(served.data):
                start = int(match.group(1))
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(served.data) - 1}/{len(served.data)}"
                )
            else:
                self.send_response(200)
            body = served.data[start:]
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.cut_after is not None and served.cuts_left > 0:
                served.cuts_left -= 1
                self.wfile.write(body[: served.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return None
            self.wfile.write(body)
            return None

        def _plain(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
