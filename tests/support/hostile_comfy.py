"""A small HTTP server on 127.0.0.1 that answers like ComfyUI, with hostile outputs.

It serves what ``charpack run`` needs from a server: ``/system_stats``, ``/upload/image``,
``POST /prompt`` (keeping the client's prompt id), ``/queue`` (always empty: every prompt is
done at once), ``/history/{id}``, ``/interrupt``, ``/free``; ``/ws`` answers 404, so the client
follows prompts by polling. What a finished prompt reports and what ``/view`` sends are the
test's: ``outputs(prompt_id)`` returns the history ``outputs`` (and may put files into
:attr:`HostileComfy.files`), ``view(handler, params)`` answers a ``/view`` (the default serves
:attr:`files`, 404 otherwise). Helpers build a saver-like output (:func:`saver_outputs`) and
hostile ``/view`` answers (:func:`endless`, :func:`trickle`).

Bounded: handler threads are daemons, every hostile answer stops when :attr:`stopping` is set
(on exit), and the server shuts down with the ``with`` block.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image

from .loopback import LoopbackServer, QuietHandler

Outputs = Callable[[str], dict[str, Any]]
View = Callable[[Any, dict[str, str]], None]


def png_bytes(width: int = 64, height: int = 96, seed: int = 0) -> bytes:
    picture = Image.new("RGB", (width, height), ((seed * 40) % 255, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class HostileComfy(LoopbackServer):
    """See the module docstring; ``with HostileComfy(outputs=...) as server: server.url``."""

    def __init__(self, *, outputs: Outputs, view: View | None = None) -> None:
        self.outputs = outputs
        self.view = view or self.serve_files
        self.files: dict[tuple[str, str], bytes] = {}
        self.prompts: list[str] = []
        self.views: list[dict[str, str]] = []
        self.stopping = threading.Event()
        self._history: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                if url.path == "/system_stats":
                    self.reply({"system": {"comfyui_version": "0.3.75"}, "devices": []})
                elif url.path == "/queue":
                    self.reply({"queue_running": [], "queue_pending": []})
                elif url.path.startswith("/history/"):
                    prompt_id = url.path.rsplit("/", 1)[1]
                    with outer._lock:
                        entry = outer._history.get(prompt_id)
                    self.reply({prompt_id: entry} if entry else {})
                elif url.path == "/view":
                    params = {k: v[0] for k, v in parse_qs(url.query).items()}
                    outer.views.append(params)
                    outer.view(self, params)
                else:
                    self.reply({"error": "not found"}, status=404)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                if url.path == "/prompt":
                    prompt_id = json.loads(body)["prompt_id"]
                    outer._finish(prompt_id)
                    self.reply({"prompt_id": prompt_id, "number": 1, "node_errors": {}})
                elif url.path == "/upload/image":
                    name = body.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
                    self.reply({"name": name, "subfolder": "charpack", "type": "input"})
                else:
                    self.reply({})

        super().__init__(Handler)

    def _finish(self, prompt_id: str) -> None:
        now = int(time.time() * 1000)
        entry = {
            "outputs": self.outputs(prompt_id),
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": [
                    ["execution_start", {"prompt_id": prompt_id, "timestamp": now}],
                    ["execution_success", {"prompt_id": prompt_id, "timestamp": now + 5}],
                ],
            },
        }
        with self._lock:
            self.prompts.append(prompt_id)
            self._history[prompt_id] = entry

    def serve_files(self, handler: Any, params: dict[str, str]) -> None:
        data = self.files.get((params.get("subfolder", ""), params.get("filename", "")))
        if data is None:
            handler.reply({"error": "no such file"}, status=404)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def saver_outputs(
        self, prompt_id: str, subfolder: str, stem: str, *, sidecar_prompt: str | None = None,
        image: bytes | None = None, claimed: bytes | None = None, older: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Outputs as CharpackSavePack reports them, with the files registered for ``/view``:
        ``sidecar_prompt`` (default ``prompt_id``; ``""``: none) is the prompt the sidecar names,
        ``claimed`` the bytes the sidecar describes (default: the image served); ``older``: as
        the saver reported them before its previews (the pack file under ``images``)."""
        image = png_bytes() if image is None else image
        claimed = image if claimed is None else claimed
        name = f"{stem}.{prompt_id}"
        sidecar = {
            "prompt_id": prompt_id if sidecar_prompt is None else sidecar_prompt,
            "file": f"{name}.png",
            "sha256": hashlib.sha256(claimed).hexdigest(),
            "size": len(claimed),
        }
        if sidecar_prompt == "":  # as the saver wrote it before it named the prompt
            del sidecar["prompt_id"]
        self.files[(subfolder, f"{name}.png")] = image
        self.files[(subfolder, f"{name}.json")] = json.dumps(sidecar).encode()
        ref = {"subfolder": subfolder, "type": "output"}
        preview = {"filename": f"{name}.png", "subfolder": f"charpack/{subfolder}", "type": "temp"}
        saver: dict[str, Any] = {
            "images": [preview],
            "pack_images": [{"filename": f"{name}.png", **ref}],
        }
        if older:
            saver = {"images": [{"filename": f"{name}.png", **ref}]}
        saver["sidecars"] = [{"filename": f"{name}.json", **ref}]
        return {"save.run": saver, "score.run": {"scores": [0.9]}}

    def closing(self) -> None:
        self.stopping.set()  # every hostile answer still streaming ends


def endless(server: HostileComfy) -> View:
    """A ``/view`` that streams zeros (chunked, no length) until the client leaves."""

    def view(handler: Any, params: dict[str, str]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        block = b"\0" * 65536
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        try:
            while not server.stopping.is_set():
                handler.wfile.write(chunk)
        except OSError:
            pass
        handler.close_connection = True

    return view


def trickle(server: HostileComfy, every_s: float = 20.0) -> View:
    """A ``/view`` that promises a megabyte and sends one byte every ``every_s`` seconds."""

    def view(handler: Any, params: dict[str, str]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
        try:
            while True:
                handler.wfile.write(b"\x89")
                handler.wfile.flush()
                if server.stopping.wait(every_s):
                    break
        except OSError:
            pass
        handler.close_connection = True

    return view
