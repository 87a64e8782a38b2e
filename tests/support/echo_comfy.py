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

import json
import re
import threading
import time
import uuid
from typing import Any

from .loopback import LoopbackServer, QuietHandler, ws_frame

_FILENAME = re.compile(rb'filename="([^"]+)"')


def _scene(graph: Any) -> str:
    for node in (graph or {}).values():
        if isinstance(node, dict) and node.get("class_type") == "CharpackSavePack":
            return str(node.get("inputs", {}).get("scene", ""))
    return ""


class EchoComfy(LoopbackServer):
    """See the module docstring. ``posts`` counts ``POST /prompt`` per scene."""

    def __init__(self, *, storm: int = 3) -> None:
        self.storm = storm
        self.posts: dict[str, int] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def echo(self) -> str:
                return f"Authorization: {self.headers.get('Authorization')}; request {self.path}"

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    self._upgrade()
                elif path == "/system_stats":
                    self.reply({"system": {"comfyui_version": "0.3.75"}, "devices": []})
                elif path == "/queue":
                    self.reply({"queue_running": [], "queue_pending": []})
                elif path.startswith("/history/"):
                    pid = path.rsplit("/", 1)[1]
                    with outer._lock:
                        entry = outer.history.get(pid)
                    self.reply({pid: entry} if entry else {})
                else:
                    self.reply({"error": f"no route {path}"}, status=404)

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path == "/upload/image":
                    found = _FILENAME.search(body)
                    name = found.group(1).decode() if found else f"{uuid.uuid4().hex}.png"
                    self.reply({"name": name, "subfolder": "", "type": "input"})
                elif path == "/prompt":
                    self._prompt(json.loads(body))
                else:
                    self.reply({})

            def _prompt(self, body: dict[str, Any]) -> None:
                scene = _scene(body.get("prompt"))
                pid = str(body.get("prompt_id") or uuid.uuid4())
                with outer._lock:
                    outer.posts[scene] = n = outer.posts.get(scene, 0) + 1
                if scene == "storm" and n <= outer.storm:
                    self.reply({"error": f"upstream failed; {self.echo()}"}, status=500)
                elif scene == "storm":
                    error = {"type": "custom_validation_failed", "message": self.echo(),
                             "details": self.echo(), "extra_info": {}}  # fmt: skip
                    self.reply(status=400, body={
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
                    self.reply({"prompt_id": pid, "number": n, "node_errors": {}})
                    done = {"type": "executing", "data": {"node": None, "prompt_id": pid}}
                    outer._broadcast(json.dumps(done))

            def _upgrade(self) -> None:
                status = {"type": "status", "data": {"status": {"exec_info": {}}, "sid": "e"}}
                self.accept_websocket(status)
                with outer._lock:
                    outer._sockets.append(self.wfile)
                try:
                    self.hold_socket()
                finally:
                    with outer._lock:
                        outer._sockets.remove(self.wfile)

        super().__init__(Handler)

    def _broadcast(self, text: str) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for wfile in sockets:
            try:
                wfile.write(ws_frame(text))
                wfile.flush()
            except OSError:
                pass
