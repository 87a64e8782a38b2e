"""Knowing when prompts on one server are finished: websocket first, polling as the fallback.

Owns :class:`Completion`, a non-blocking tracker of the in-flight prompts of one server that a
run's server worker (:mod:`charpack.run.worker`) feeds with events and asks to poll when due;
nothing here blocks on one prompt. The rules (``reference/comfyui-api.md`` §9-§10):

- done = the websocket's :class:`~charpack.comfy.events.Done` for the id, then a history read with
  a short retry (history can lag);
- while the socket is down, after it reconnects, or when the server has been silent for
  ``poll_interval``, ``/history`` and ``/queue`` decide instead;
- an id in neither history nor queue is lost (the server restarted): :class:`Lost`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .client import ComfyClient
from .events import Done, Event, Reconnected
from .results import JobResult
from .stream import EventStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lost:
    """The server no longer knows ``prompt_id`` (not in history, not queued): resubmit it."""

    prompt_id: str
    server: str


Outcome = JobResult | Lost


class Completion:
    """The in-flight prompts of one server and the decision of when each one is finished.

    Not thread-safe: drive it from one loop. :meth:`handle` each event of this server's stream,
    call :meth:`reconcile` when :meth:`poll_due`; both return the prompts that finished.
    """

    def __init__(
        self,
        *,
        client: ComfyClient,
        stream: EventStream | None = None,
        poll_interval: float = 10.0,
        history_retry_s: float = 5.0,
    ) -> None:
        self.client = client
        self.stream = stream
        self.poll_interval = poll_interval
        self.history_retry_s = history_retry_s
        self._inflight: set[str] = set()
        now = time.monotonic()
        self._last_poll = now
        self._last_event = now
        self._reconcile = False

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._inflight)

    def add(self, prompt_id: str) -> None:
        """Track ``prompt_id`` (subscribe to the stream before submitting it)."""
        self._inflight.add(prompt_id)

    def discard(self, prompt_id: str) -> None:
        self._inflight.discard(prompt_id)

    def reconcile_soon(self) -> None:
        """Make the next :meth:`poll_due` true (after a restart, or a prompt tracked late)."""
        self._reconcile = True

    def handle(self, event: Event) -> list[Outcome]:
        """Take one event of this server; returns the prompts it finished."""
        self._last_event = event.received
        if isinstance(event, Reconnected):
            self._reconcile = True  # anything may have finished while we were away
        elif isinstance(event, Done) and event.prompt_id in self._inflight:
            result = self.client.fetch_result(event.prompt_id, retry_s=self.history_retry_s)
            if result is not None:
                self._inflight.discard(event.prompt_id)
                return [result]
            log.warning("%s: %s done but not in history; polling", event.server, event.prompt_id)
            self._reconcile = True
        return []

    def poll_due(self, now: float | None = None) -> bool:
        """True when :meth:`reconcile` should run now."""
        if not self._inflight:
            return False
        if self._reconcile:
            return True
        now = time.monotonic() if now is None else now
        if now - self._last_poll < self.poll_interval:
            return False
        socket_down = self.stream is None or not self.stream.connected
        return socket_down or now - self._last_event >= self.poll_interval

    def reconcile(self) -> list[Outcome]:
        """Ask the server about every in-flight prompt; returns those finished or lost.

        Raises :class:`ServerUnavailable` when the server cannot be reached (nothing is
        decided then; call again later).
        """
        self._last_poll = time.monotonic()
        found: list[Outcome] = []
        unknown: list[str] = []
        for prompt_id in sorted(self._inflight):
            result = self.client.result(prompt_id)
            if result is not None:
                found.append(result)
            else:
                unknown.append(prompt_id)
        if unknown:
            queued = self.client.queue()
            for prompt_id in unknown:
                if prompt_id in queued:
                    continue
                # It may have finished between the history read and the queue read.
                result = self.client.result(prompt_id)
                found.append(result or Lost(prompt_id, self.client.config.name))
        for outcome in found:
            self._inflight.discard(outcome.prompt_id)
        self._reconcile = False
        return found
