"""A hostile server on 127.0.0.1 that answers like ComfyUI and quotes the request's credentials.

For checking that charpack never shows or stores a secret a server echoes back: error pages and
proxies often quote the request (its ``Authorization`` header, its URL with ``?token=``). It
speaks just enough of ComfyUI's API for ``charpack run``: ``/system_stats``, ``/upload/image``,
the ``/ws`` upgrade (sending the end marker of each prompt it takes), ``/queue`` and
``/history/{id}``. What ``POST /prompt`` does depends on the scene the graph saves (the
``scene`` input of its ``CharpackSavePack`` node):

- ``storm``: the first :attr:`EchoComfy.storm` posts answer 500 with the echo in the body (a
  500 storm); later ones answer 400 with the echo in a ``node_errors`` message;
- any other scene: queued (200); its history entry is an ``execution_error`` whose
  ``exception_message`` holds the echo.

It is not ComfyUI: ComfyUI's own behaviour is tested against the real server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_FILENAME = re.compile(rb'filename="([^"]+)"')


def _frame(text: str) -> bytes:
    payload = text.encode()
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


def _scene(graph: Any) -> str:
    for node in (graph or {}).values():
        if isinstance(node, dict) and node.get("class_type") == "CharpackSavePack":
            return str(node.get("inputs", {}).get("scene", ""))
    return ""


class EchoComfy:
    """See the module docstring. ``posts`` counts ``POST /prompt`` per scene."""

    def __init__(self, *, storm: int = 3) -> None:
        self.storm = storm
        self.posts: dict[str, int] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def echo(self) -> str:
                return f"Authorization: {self.headers.get('Authorization')}; request {self.path}"

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self._upgrade()
                elif path == "/system_stats":
                    self._reply(200, {"system": {"comfyui_version": "0.3.75"}, "devices": []})
                elif path == "/queue":
                    self._reply(200, {"queue_running": [], "queue_pending": []})
                elif path.startswith("/history/"):
                    pid = path.rsplit("/", 1)[1]
                    with outer._lock:
                        entry = outer.history.get(pid)
                    self._reply(200, {pid: entry} if entry else {})
                else:
                    self._reply(404, {"error": f"no route {path}"})

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path == "/upload/image":
                    found = _FILENAME.search(body)
                    name = found.group(1).decode() if found else f"{uuid.uuid4().hex}.png"
                    self._reply(200, {"name": name, "subfolder": "", "type": "input"})
                elif path == "/prompt":
                    self._prompt(json.loads(body))
                else:
                    self._reply(200, {})

            def _prompt(self, body: dict[str, Any]) -> None:
                scene = _scene(body.get("prompt"))
                pid = str(body.get("prompt_id") or uuid.uuid4())
                with outer._lock:
                    outer.posts[scene] = n = outer.posts.get(scene, 0) + 1
                if scene == "storm" and n <= outer.storm:
                    self._reply(500, {"error": f"upstream failed; {self.echo()}"})
                elif scene == "storm":
                    error = {"type": "custom_validation_failed", "message": self.echo(),
                             "details": self.echo(), "extra_info": {}}  # fmt: skip
                    self._reply(400, {
                        "error": {"type": "prompt_outputs_failed_validation",
                                  "message": f"Prompt outputs failed validation: {self.echo()}",
                                  "details": self.echo()},
                        "node_errors": {"save.run": {"class_type": "CharpackSavePack",
                                                     "errors": [error]}},
                    })  # fmt: skip
                else:
                    now = int(time.time() * 1000)
                    failure = {"prompt_id": pid, "node_id": "base.sampler",
                               "node_type": "KSampler", "exception_type": "RuntimeError",
                               "exception_message": f"upstream said {self.echo()}",
                               "traceback": [self.echo()], "timestamp": now}  # fmt: skip
                    entry = {"outputs": {}, "status": {
                        "status_str": "error", "completed": False,
                        "messages": [["execution_start", {"prompt_id": pid, "timestamp": now}],
                                     ["execution_error", failure]]}}  # fmt: skip
                    with outer._lock:
                        outer.history[pid] = entry
                    self._reply(200, {"prompt_id": pid, "number": n, "node_errors": {}})
                    done = {"type": "executing", "data": {"node": None, "prompt_id": pid}}
                    outer._broadcast(json.dumps(done))

            def _upgrade(self) -> None:
                key = self.headers["Sec-WebSocket-Key"] + _WS_GUID
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                status = {"type": "status", "data": {"status": {"exec_info": {}}, "sid": "e"}}
                self.wfile.write(_frame(json.dumps(status)))
                self.wfile.flush()
                with outer._lock:
                    outer._sockets.append(self.wfile)
                try:
                    while self.rfile.read1(65536):  # hold the socket until the client leaves
                        pass
                except OSError:
                    pass
                finally:
                    with outer._lock:
                        outer._sockets.remove(self.wfile)
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _broadcast(self, text: str) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for wfile in sockets:
            try:
                wfile.write(_frame(text))
                wfile.flush()
            except OSError:
                pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EchoComfy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
