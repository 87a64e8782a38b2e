"""The values around a run: its options, its remote control, and its summary.

Owns :class:`RunOptions` (how to run a pack), :class:`RunControl` (stop a run from another
thread or a signal handler, like Ctrl-C) and :class:`RunSummary` (what a run did, with the CLI's
exit code). Plain data; the run itself is :func:`charpack.run.runner.run_pack`.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ServerUnavailable
from .events import RunEvent

EXIT_INTERRUPTED = 130


class RunControl:
    """Stops a run from another thread (or a signal handler): see :meth:`interrupt`."""

    def __init__(self) -> None:
        # A SimpleQueue: its put() may be called from a signal handler. A Queue's put() takes the
        # lock its get() holds, so a Ctrl-C landing while the loop's main thread was inside
        # inbox.get() deadlocked the run (seen once in a full-suite run: no "stopping" event).
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.presses = 0

    def interrupt(self) -> int:
        """Like Ctrl-C: the 1st stops the run after the downloads under way (what has not arrived
        2 s later is left to the next run), the 2nd also cancels its prompts on the servers; returns
        how many times it was called."""
        self.presses += 1
        self.inbox.put(Interrupt(self.presses))
        return self.presses


@dataclass(frozen=True)
class Interrupt:
    count: int


@dataclass(frozen=True)
class RunOptions:
    """How to run a pack. Times in seconds."""

    out: Path | None = None  # the pack folder; default ./<pack name>
    backlog: int = 2  # prompts queued behind the running one on each server
    max_retries: int = 2  # new-seed retries after an execution error
    poll_interval: float = 5.0  # history/queue polling while a websocket is down or silent
    probe_interval: float = 2.0  # health checks of a server that stopped answering
    dead_after_s: float = 60.0  # a server down this long gives its prompts to the others
    give_up_s: float = 600.0  # no server answering this long ends the run (resume later)
    connect_s: float = 60.0  # how long the first health check of the servers may take
    download_wait_s: float = 60.0  # a reported file may still be being written (404)
    download_idle_s: float = 30.0  # a download that gets no byte this long is refused
    download_deadline_s: float = 600.0  # one file taking longer than this is refused
    download_max_mb: float | None = None  # cap per image; None: from the job's picture size
    contact_sheet: bool = True
    on_event: Callable[[RunEvent], None] | None = None
    control: RunControl | None = None
    handle_signals: bool = True  # install the SIGINT handler when run in the main thread

    def __post_init__(self) -> None:
        if self.backlog < 0 or self.max_retries < 0:
            raise ValueError("backlog and max_retries must be 0 or more")
        if min(self.poll_interval, self.probe_interval) <= 0:
            raise ValueError("poll_interval and probe_interval must be positive")
        if min(self.download_idle_s, self.download_deadline_s) <= 0:
            raise ValueError("download_idle_s and download_deadline_s must be positive")
        if self.download_max_mb is not None and self.download_max_mb <= 0:
            raise ValueError("download_max_mb must be positive (or None: from the job)")


@dataclass(frozen=True)
class ServerSummary:
    url: str  # redacted
    version: str | None
    attempts: int
    reconnects: int
    usable: bool


@dataclass(frozen=True)
class RunSummary:
    """What a run did; ``exit_code`` is the CLI's."""

    pack: str
    folder: Path
    jobs: int
    counts: dict[str, int]
    attempts: int  # posted by this run
    elapsed_s: float
    interrupted: bool = False
    cancelled: int = 0
    error: str | None = None
    servers: dict[str, ServerSummary] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.error is not None:
            return ServerUnavailable.exit_code
        if self.counts.get("failed") or self.counts.get("pending") or self.counts.get("submitted"):
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "folder": str(self.folder),
            "jobs": self.jobs,
            **{k: v for k, v in self.counts.items()},
            "attempts": self.attempts,
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            "cancelled": self.cancelled,
            "error": self.error,
            "exit_code": self.exit_code,
            "servers": {k: vars(v) for k, v in self.servers.items()},
            "failures": [{"job": k, "error": e} for k, e in self.failures],
        }
