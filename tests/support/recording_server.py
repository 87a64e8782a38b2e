"""A tiny HTTP + websocket-handshake server on 127.0.0.1 that records what clients send.

For checking what leaves the client (auth headers, query tokens, the websocket upgrade) without
a proxy: every request's method, path and headers are kept in :attr:`RecordingServer.seen`.
It answers JSON to any GET/POST, completes websocket upgrades on ``/ws`` (then sends one
ComfyUI-style ``status`` frame), and answers 401 when ``require`` rejects a request.
It is not a ComfyUI stand-in: behaviour of ComfyUI itself is tested against the real server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


def _text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


class RecordingServer:
    """Records requests; ``require(seen) -> bool`` decides 200 vs 401 (default: allow all)."""

    def __init__(self, *, require: Callable[[Seen], bool] | None = None) -> None:
        self.seen: list[Seen] = []
        self.require = require or (lambda seen: True)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

            def _handle(self) -> None:
                seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()})
                outer.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if not outer.require(seen):
                    self._reply(401, b'{"error": "unauthorized"}')
                    return
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self._upgrade()
                    return
                self._reply(200, json.dumps({"system": {"comfyui_version": "recorder"}}).encode())

            do_GET = do_POST = _handle  # noqa: N815

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _upgrade(self) -> None:
                key = self.headers["Sec-WebSocket-Key"] + _WS_GUID
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                status = {"type": "status", "data": {"status": {"exec_info": {}}, "sid": "r"}}
                self.wfile.write(_text_frame(json.dumps(status)))
                self.wfile.flush()
                while self.rfile.read1(65536):  # hold the socket until the client leaves
                    pass
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
