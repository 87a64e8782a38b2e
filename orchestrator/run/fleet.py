"""The servers of a run as the runner's loop sees them: up, down, unusable, and stopping.

Owns :class:`Fleet`: each server's health as its worker reports it (kept in the scheduler, so a
server that is down gets no new jobs), how long it has been down (after ``dead_after_s`` its
prompts go to the others, when there are others), how long no server at all has answered (after
``give_up_s`` the run ends and can be resumed), the servers that refused our credentials, and
the two steps of stopping a run (drain the downloads, then cancel the prompts) with their
replies. It never touches jobs; the loop moves them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..folder.manifest import Manifest
from .messages import Cancelled, ServerDown, ServerUp, Unusable
from .options import RunOptions, ServerSummary
from .scheduler import Scheduler

log = logging.getLogger(__name__)


class Worker(Protocol):
    """What the loop needs of a server's worker: a ComfyUI server's
    (:class:`~charpack.run.worker.ServerWorker`) or a Serverless endpoint's
    (:class:`~charpack.serverless.backend.EndpointWorker`, with its own ``capacity``)."""

    name: str
    url: str
    version: str | None
    names: dict[str, str]

    @property
    def config(self) -> Any: ...  # its label names it in messages

    @property
    def reconnects(self) -> int: ...

    def start(self) -> Any: ...

    def submit(self, command: Any) -> None: ...

    def forget(self, prompt_ids: tuple[str, ...]) -> None: ...

    def drain(self) -> None: ...

    def cancel(self) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


STOP_LIMIT_S = 600.0  # downloads after Ctrl-C are bounded by HTTP timeouts; this is a backstop


class Fleet:
    """See the module docstring."""

    def __init__(
        self,
        *,
        workers: Iterable[Worker],
        scheduler: Scheduler,
        options: RunOptions,
        emit: Callable[..., None],
    ) -> None:
        self.workers = {w.name: w for w in workers}
        self.scheduler = scheduler
        self.options = options
        self.emit = emit
        now = time.monotonic()
        for name in self.workers:
            scheduler.set_healthy(name, False)  # until its worker says it is up
        self.down_since: dict[str, float] = dict.fromkeys(self.workers, now)
        self.why_down: dict[str, str] = {}  # the last reason each server gave for being down
        self.none_since: float | None = None
        self.unusable: dict[str, Unusable] = {}
        self._heard: set[str] = set()
        self.presses = 0
        self._stop_at = 0.0
        self._drained: set[str] = set()
        self._replied: set[str] = set()

    @property
    def usable(self) -> list[str]:
        return [name for name in self.workers if name not in self.unusable]

    # -- reports from the workers ----------------------------------------------------------

    def up(self, message: ServerUp, manifest: Manifest) -> None:
        worker = self.workers[message.server]
        worker.version, worker.names = message.version, message.names
        manifest.set_server(worker.url, {"name": worker.name, "comfyui_version": message.version})
        self._heard.add(message.server)
        if message.server not in self.unusable:
            self.scheduler.set_healthy(message.server, True)
        self.down_since.pop(message.server, None)
        self.emit("server_up", server=message.server, version=message.version)

    def down(self, message: ServerDown) -> None:
        slot = self.scheduler.slots[message.server]
        if slot.healthy or message.server not in self._heard:
            self.emit("server_down", server=message.server, reason=message.reason)
        self._heard.add(message.server)
        self.why_down[message.server] = message.reason
        slot.healthy = False
        self.down_since.setdefault(message.server, time.monotonic())

    def lost(self, message: Unusable) -> str | None:
        """A server is out for good; returns the run's error when no server is left."""
        self.unusable[message.server] = message
        self.scheduler.set_healthy(message.server, False)
        self.emit("server_down", server=message.server, reason=message.message)
        if self.usable:
            return None
        return "\n".join(m.message for m in self.unusable.values())

    # -- outages ---------------------------------------------------------------------------

    def overdue(self, busy: set[str]) -> list[str]:
        """Servers with prompts that stayed down past ``dead_after_s`` while others are up."""
        if not self.scheduler.healthy():
            return []  # nowhere to move them: wait for a server to come back
        now = time.monotonic()
        return [
            name
            for name, since in self.down_since.items()
            if name in busy and now - since > self.options.dead_after_s
        ]

    def given_up(self) -> str | None:
        """The run's error once no server has answered for ``give_up_s``."""
        now = time.monotonic()
        if self.scheduler.healthy():
            self.none_since = None
            return None
        if self.none_since is None:
            self.none_since = now
        if now - self.none_since <= self.options.give_up_s:
            return None
        # Say what they did answer: "answered 500 to POST /prompt" is not "not answering".
        why = "".join(f"\n{reason}" for reason in self.why_down.values())
        return (
            f"no server answered for {self.options.give_up_s:.0f} s; the manifest is saved: run "
            f"the same command again to resume once a server is back{why}"
        )

    # -- stopping --------------------------------------------------------------------------

    def stop(self, presses: int, in_flight: int) -> None:
        """Ctrl-C number ``presses``: 1 drain the downloads, 2 cancel the prompts."""
        self.presses = presses
        if presses == 1:
            self._stop_at = time.monotonic()
            self.emit("stopping", in_flight=in_flight)
            for name in self.usable:
                self.workers[name].drain()
        elif presses == 2:
            self.emit("cancelling", prompts=in_flight)
            for name in self.usable:
                self.workers[name].cancel()

    def drained(self, server: str) -> None:
        self._drained.add(server)

    def replied(self, message: Cancelled) -> None:
        self._replied.add(message.server)
        if message.error:
            log.warning("%s: could not cancel its prompts: %s", message.server, message.error)

    def stopped(self) -> bool:
        """True once every usable server drained (and, after a 2nd Ctrl-C, cancelled)."""
        usable = self.usable
        drained = all(n in self._drained for n in usable)
        replied = self.presses < 2 or all(n in self._replied for n in usable)
        return (drained and replied) or time.monotonic() - self._stop_at > STOP_LIMIT_S

    # -- the end ---------------------------------------------------------------------------

    def summaries(self, attempts: dict[str, int]) -> dict[str, ServerSummary]:
        """Per server: URL, version, attempts (by redacted URL), websocket reconnects."""
        out = {}
        for name, w in self.workers.items():
            out[name] = ServerSummary(
                url=w.url,
                version=w.version,
                attempts=attempts.get(w.url, 0),
                reconnects=w.reconnects,
                usable=name not in self.unusable,
            )
        return out
