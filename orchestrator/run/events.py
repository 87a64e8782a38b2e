"""What a run reports: its progress events, and each prompt's queue wait and stage timings.

Owns :class:`RunEvent`, the one shape of everything ``charpack run`` tells its caller (the rich
progress display and the ``--json`` stream render the same events; the kinds are listed on the
class), and :class:`StageClocks`: per in-flight prompt, the moment it was posted, the moment
the server started it (``execution_start``) and the time between ``executing`` transitions,
summed by the node id's stage prefix (``base.``, ``faceid.``, ``instantid.``, ``detail.``,
``upscale.``, ``score.``, ``save.`` …; ids made by node expansion keep their parent's prefix).
Every time comes from the one local monotonic clock the events carry, so server and client
clocks never mix. When the websocket was down, a prompt has fewer (or no) stage timings; the
runner then falls back on the server's own start/end times from history.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..comfy.events import (
    Done,
    Event,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
)


@dataclass(frozen=True)
class RunEvent:
    """One thing that happened in a run. ``kind`` is one of:

    ``run_started`` (pack, folder, jobs, done, servers), ``server_up`` (server, version),
    ``server_down`` (server, reason), ``submitted`` (job, attempt, seed, server),
    ``started`` (job, server, queue_wait_s), ``node`` (job, server, node, stage),
    ``step`` (job, server, node, value, max), ``downloading`` (job, server),
    ``done`` (job, score, image, attempts), ``retry`` (job, reason, seed),
    ``requeued`` (job, reason), ``below_threshold`` (job, score, image), ``failed`` (job,
    error), ``stopping`` (downloads), ``cancelling`` (prompts), ``cancelled`` (job, server),
    ``contact_sheet`` (path), ``finished`` (the summary).

    Jobs are named by key (``<scene>/<index>``); servers by their display name, never with
    credentials.
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "time": round(self.at, 3), **self.data}


def stage_of(node_id: str) -> str:
    """The pipeline stage a node id belongs to: its prefix before the first dot."""
    head, dot, _ = node_id.partition(".")
    return head if dot and head else "other"


@dataclass
class _Clock:
    submitted: float
    started: float | None = None
    node: str | None = None
    since: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def close(self, now: float) -> None:
        if self.node is not None:
            stage = stage_of(self.node)
            self.stages[stage] = self.stages.get(stage, 0.0) + max(0.0, now - self.since)
            self.node = None


@dataclass(frozen=True)
class PromptTimes:
    """What the events told about one prompt (seconds; None when the events were missed)."""

    queue_wait_s: float | None
    stages: dict[str, float]


class StageClocks:
    """Stage timings of the in-flight prompts of every server (small state per prompt)."""

    def __init__(self) -> None:
        self._clocks: dict[str, _Clock] = {}

    def submitted(self, prompt_id: str, at: float) -> None:
        """``prompt_id`` is (about to be) posted at monotonic time ``at``. Called when the job
        is handed to its server, then again with the moment of the POST: the server may start
        it before the POST's answer arrives, so the clock must exist before."""
        clock = self._clocks.get(prompt_id)
        if clock is None:
            self._clocks[prompt_id] = _Clock(submitted=at)
        elif clock.started is None or at <= clock.started:
            clock.submitted = at

    def handle(self, event: Event) -> None:
        prompt_id = getattr(event, "prompt_id", None)
        clock = self._clocks.get(prompt_id) if isinstance(prompt_id, str) else None
        if clock is None:
            return
        now = event.received
        if isinstance(event, ExecutionStart):
            clock.started = now
        elif isinstance(event, Executing):
            clock.close(now)
            clock.node, clock.since = event.node, now
        elif isinstance(event, (ExecutionSuccess, ExecutionError, ExecutionInterrupted, Done)):
            clock.close(now)

    def pop(self, prompt_id: str) -> PromptTimes:
        """The timings of ``prompt_id`` (forgotten afterwards)."""
        clock = self._clocks.pop(prompt_id, None)
        if clock is None:
            return PromptTimes(None, {})
        wait = None if clock.started is None else max(0.0, clock.started - clock.submitted)
        return PromptTimes(wait, {k: round(v, 4) for k, v in clock.stages.items()})

    def forget(self, prompt_id: str) -> None:
        self._clocks.pop(prompt_id, None)

    def __len__(self) -> int:
        return len(self._clocks)
