"""What every test HTTP server here shares: a threaded server on 127.0.0.1 with a ``with``
lifecycle, a quiet JSON-answering handler, and the websocket handshake and text frames.

The servers built on it (:mod:`recording_server`, :mod:`hostile_comfy`, :mod:`echo_comfy`) are
not ComfyUI: they stand for what a real server cannot be made to do (record exactly what a
client sends, answer with hostile outputs, echo credentials). ComfyUI's own behaviour is tested
against the real CPU server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
S = TypeVar("S", bound="LoopbackServer")


def ws_frame(text: str) -> bytes:
    """One unmasked websocket text frame, as a server sends it."""
    payload = text.encode()
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log on stderr, JSON answers, the websocket handshake."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output clean

    def reply(self, body: Any, status: int = 200) -> None:
        """Answer ``body`` (JSON-encoded unless it is bytes already) with ``status``."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def accept_websocket(self, first_message: dict[str, Any]) -> None:
        """Complete the upgrade and send ``first_message`` as ComfyUI sends its ``status``."""
        key = self.headers["Sec-WebSocket-Key"] + _WS_GUID
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.write(ws_frame(json.dumps(first_message)))
        self.wfile.flush()

    def hold_socket(self) -> None:
        """Keep the websocket open until the client leaves."""
        try:
            while self.rfile.read1(65536):
                pass
        except OSError:
            pass
        self.close_connection = True


class LoopbackServer:
    """``with Server(...) as server: server.url`` — serves ``handler`` on a free loopback port
    until the block ends; handler threads are daemons, so a hung client never blocks exit."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def closing(self) -> None:
        """Called first when the block ends: stop what the server's answers keep doing."""

    def __enter__(self: S) -> S:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
