"""A tiny HTTP + websocket-handshake server on 127.0.0.1 that records what clients send.

For checking what leaves the client (auth headers, query tokens, the websocket upgrade) without
a proxy: every request's method, path and headers are kept in :attr:`RecordingServer.seen`.
It answers JSON to any GET/POST, completes websocket upgrades on ``/ws`` (then sends one
ComfyUI-style ``status`` frame), and answers 401 when ``require`` rejects a request.
It is not a ComfyUI stand-in: behaviour of ComfyUI itself is tested against the real server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .loopback import LoopbackServer, QuietHandler


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class RecordingServer(LoopbackServer):
    """Records requests; ``require(seen) -> bool`` decides 200 vs 401 (default: allow all)."""

    def __init__(self, *, require: Callable[[Seen], bool] | None = None) -> None:
        self.seen: list[Seen] = []
        self.require = require or (lambda seen: True)
        outer = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()})
                outer.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if not outer.require(seen):
                    self.reply({"error": "unauthorized"}, status=401)
                    return
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    status = {"type": "status", "data": {"status": {"exec_info": {}}, "sid": "r"}}
                    self.accept_websocket(status)
                    self.hold_socket()
                    return
                self.reply({"system": {"comfyui_version": "recorder"}})

            do_GET = do_POST = _handle  # noqa: N815

        super().__init__(Handler)
