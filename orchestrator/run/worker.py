"""One server's side of a run: its connection, the prompts on it, and the files it made.

Owns :class:`ServerWorker`, two threads per ComfyUI server that do every blocking call to it, so
a slow or dead server never holds up the others or the runner:

- the **worker** thread connects (health check, the pack's uploads once per server by content
  hash), posts the prompts the runner hands it under their recorded ``prompt_id``, follows them
  with :class:`~charpack.comfy.completion.Completion` (websocket end marker, then history;
  polling while the socket is down; lost = in neither history nor queue), and probes a server
  that stopped answering until it answers again. A server that answers 5xx to ``POST /prompt``
  without queueing it (a 500 storm) is down for the runner, with what it answered as the reason;
  its prompt is held, not lost, and posted again under the same id once the server takes
  prompts (history and queue showed it was never queued);
- the **download** thread streams each finished prompt's files into the pack folder (into
  ``rejected/`` when the identity score is below the threshold), hashing them on the way.

It decides nothing about jobs: every outcome goes to the runner's inbox as a message
(:class:`Posted`, :class:`Finished` …) and the runner records it. After a first Ctrl-C it stops
taking outcomes and gives the downloads under way a short grace to finish (:class:`Drained`);
after a second it also cancels its prompts on the server (:class:`Cancelled`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from ..comfy.auth import ServerConfig, redact, redact_url
from ..comfy.client import ComfyClient
from ..comfy.completion import Completion, Lost
from ..comfy.events import Event
from ..comfy.results import JobResult
from ..comfy.stream import EventStream
from ..errors import AuthError, CharpackError, PromptNotTaken, PromptRejected, ServerUnavailable
from ..pack.packfile import IdentityGate
from ..pack.uploads import Upload
from .control import ControlLoop
from .fetcher import DownloadRules, Fetcher, Tracked
from .messages import (
    Adopt,
    Cancel,
    Cancelled,
    Close,
    Drain,
    Finished,
    Forget,
    Posted,
    Refused,
    ServerDown,
    ServerUp,
    Submit,
    Unusable,
)

log = logging.getLogger(__name__)


def substitute(graph: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``graph`` with upload names replaced by the names a server gave (rarely any differ)."""
    if not names:
        return graph
    out: dict[str, Any] = {}
    for node_id, node in graph.items():
        inputs = {
            k: names.get(v, v) if isinstance(v, str) else v for k, v in node["inputs"].items()
        }
        out[node_id] = {**node, "inputs": inputs}
    return out


class ServerWorker(ControlLoop):
    """Every blocking call to one server, on its own threads; see the module docstring."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        inbox: queue.SimpleQueue[Any],
        folder: Path,
        uploads: tuple[Upload, ...],
        gate: IdentityGate,
        poll_interval: float = 5.0,
        probe_interval: float = 2.0,
        downloads: DownloadRules | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.url = redact_url(config.url)
        self.inbox = inbox
        self.folder = folder
        self.uploads = uploads
        self.probe_interval = probe_interval
        self.version: str | None = None  # as the server says it (redacted: server text)
        self.names: dict[str, str] = {}
        self.client = ComfyClient(config=config)
        self.stream = EventStream(config=config)
        self.commands: queue.Queue[Any] = queue.Queue()
        self.stream.subscribe(self.commands)
        self.stream.subscribe(inbox.put)  # the runner times stages and shows progress
        self.completion = Completion(
            client=self.client, stream=self.stream, poll_interval=poll_interval
        )
        self._tracked: dict[str, Tracked] = {}
        self._orphans: set[str] = set()
        self._held: dict[str, Submit] = {}  # refused with 5xx, never queued: post again later
        self._refusing_since: float | None = None  # first 5xx of the current storm
        self.fetcher = Fetcher(
            server=self.name,
            client=lambda: self.client,  # replaced after an outage
            inbox=inbox,
            folder=folder,
            gate=gate,
            rules=downloads,
        )
        self._up: bool | None = None
        self._stopping = False
        self._next_probe = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"charpack-run-{self.name}", daemon=True),
            self.fetcher.thread,
        ]

    # -- the runner's side -----------------------------------------------------------------

    def start(self) -> ServerWorker:
        self.stream.start()
        for thread in self._threads:
            thread.start()
        return self

    @property
    def reconnects(self) -> int:
        return self.stream.reconnects

    def close(self, timeout: float = 10.0) -> None:
        self.commands.put(Close())
        self.fetcher.close()
        for thread in self._threads:
            thread.join(timeout)
        self.stream.close()
        self.client.close()

    # -- the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._up and time.monotonic() >= self._next_probe:
                if not self._probe():
                    return
            try:
                item = self.commands.get(timeout=0.2)
            except queue.Empty:
                item = None
            if isinstance(item, Close) or not self._turn(self._step, item):
                return

    def _step(self, item: Any) -> None:
        outcomes: list[JobResult | Lost] = []
        if isinstance(item, Event):
            if not self._stopping:
                outcomes.extend(self.completion.handle(item))
        elif isinstance(item, Submit):
            self._post(item)
        elif isinstance(item, Adopt):
            self._tracked[item.prompt_id] = Tracked(item.key, item.scene, item.stem)
            self.completion.add(item.prompt_id)
            self.completion.reconcile_soon()
        elif isinstance(item, Forget):
            for prompt_id in item.prompt_ids:
                self.completion.discard(prompt_id)
                self._tracked.pop(prompt_id, None)
                if self._held.pop(prompt_id, None) is None:
                    self._orphans.add(prompt_id)
        elif isinstance(item, Drain):
            self._stopping = True
            self.fetcher.drain()
        elif isinstance(item, Cancel):
            self._cancel_all()
        if not self._stopping and self._up and self.completion.poll_due():
            outcomes.extend(self.completion.reconcile())
            self._set_up(True)
        for outcome in outcomes:
            self._finished(outcome)

    def _probe(self) -> bool:
        """Health check and uploads; False when the server refused our credentials."""
        self._next_probe = time.monotonic() + self.probe_interval
        try:
            if self._up is False:  # back after an outage (maybe a restart): fresh connections
                self.client.close()
                self.client = ComfyClient(config=self.config)
                self.completion.client = self.client
            stats = self.client.system_stats()
            version = (stats.get("system") or {}).get("comfyui_version")
            self.version = redact(str(version))[:64] if version else None
            names = {}
            for upload in self.uploads:
                done = self.client.upload_image(upload)  # named when the pack loaded
                if done.image_value != upload.image_value:
                    names[upload.image_value] = done.image_value
            self.names = names
            for held in list(self._held.values()):  # up only once it takes prompts again
                self._post(held)
        except AuthError as exc:
            self.inbox.put(Unusable(self.name, str(exc)))
            return False
        except (ServerUnavailable, OSError) as exc:
            self._set_up(False, str(exc))
            return True
        self._set_up(True)
        self.completion.reconcile_soon()  # anything may have finished or been lost meanwhile
        if self._orphans:
            self._cancel_orphans()
        return True

    def _set_up(self, up: bool, reason: str = "") -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            self.inbox.put(ServerUp(self.name, self.version, dict(self.names)))
        else:
            self._next_probe = time.monotonic() + self.probe_interval
            self.inbox.put(ServerDown(self.name, reason or "not answering"))

    def _post(self, item: Submit) -> None:
        self._tracked[item.prompt_id] = Tracked(item.key, item.scene, item.stem)
        self.completion.add(item.prompt_id)  # before the POST: its end marker can come at once
        at = time.monotonic()
        try:
            self.client.submit(
                item.graph, prompt_id=item.prompt_id, client_id=self.stream.client_id
            )
        except PromptNotTaken as exc:
            # Nothing was queued: not a lost prompt (that would count against the job as a
            # server restart). Hold it; the probe posts it again once the server takes prompts.
            self._held[item.prompt_id] = item
            since = self._refusing_since = self._refusing_since or exc.since
            raise ServerUnavailable(
                f"{self.config.label} answered {exc.status} to POST /prompt for "
                f"{time.monotonic() - since:.0f} s: {exc.body or 'no body'} (nothing was "
                "queued; charpack posts it again once the server takes prompts — check the "
                "server's log)"
            ) from None
        except PromptRejected as exc:
            self._held.pop(item.prompt_id, None)
            self._refusing_since = None
            self.completion.discard(item.prompt_id)
            self._tracked.pop(item.prompt_id, None)
            self.inbox.put(Refused(self.name, item.key, item.prompt_id, str(exc)))
            return
        except ServerUnavailable:
            # It may or may not be queued: history and queue decide once the server answers.
            self._held.pop(item.prompt_id, None)
            self.inbox.put(Posted(self.name, item.key, item.prompt_id, at))
            self.completion.reconcile_soon()
            raise
        self._held.pop(item.prompt_id, None)
        self._refusing_since = None
        self.inbox.put(Posted(self.name, item.key, item.prompt_id, at))

    def _finished(self, outcome: JobResult | Lost) -> None:
        tracked = self._tracked.pop(outcome.prompt_id, None)
        if tracked is None:
            return
        if isinstance(outcome, Lost):
            reason = f"{self.config.label}: the server no longer knows the prompt (restarted?)"
            self.inbox.put(Finished(self.name, tracked.key, outcome.prompt_id, lost=reason))
        elif not outcome.ok:
            self.inbox.put(Finished(self.name, tracked.key, outcome.prompt_id, result=outcome))
        else:
            self.fetcher.put(tracked, outcome)

    def _cancel_all(self) -> None:
        ids = sorted(self._tracked)
        if not ids:
            self.inbox.put(Cancelled(self.name, ()))
            return
        try:
            self.client.cancel(ids)
            gone: list[str] = []
            for prompt_id in ids:
                # One that finished before the cancel keeps its result for the next run.
                result = self.client.result(prompt_id)
                if result is None or not result.ok:
                    gone.append(prompt_id)
        except CharpackError as exc:
            self.inbox.put(Cancelled(self.name, (), error=str(exc)))
            return
        for prompt_id in gone:
            self.completion.discard(prompt_id)
            self._tracked.pop(prompt_id, None)
            self._held.pop(prompt_id, None)
        self.inbox.put(Cancelled(self.name, tuple(gone)))

    def _cancel_orphans(self) -> None:
        try:
            self.client.cancel(sorted(self._orphans))
            self._orphans.clear()
        except CharpackError as exc:
            log.info("%s: could not cancel moved prompts yet: %s", self.config.label, exc)
