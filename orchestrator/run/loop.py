"""The runner's loop: one thread that owns the pack's state and reacts to what the servers report.

Owns :class:`RunLoop`. Every message (websocket events, worker reports, Ctrl-C) arrives in one
inbox and is handled here, in order, on one thread, so the manifest and the scheduler need no
locks. Each turn it hands waiting jobs to servers with room (recording each attempt in the
manifest, and saving it, **before** the worker posts it), writes what the last message changed
once (:meth:`~charpack.run.state.PackState.flush`), turns finished prompts into the job's
next step (:meth:`~charpack.run.state.PackState.end`), takes back the prompts of a server
that stayed unreachable (:mod:`charpack.run.fleet` says when) and notices when the run is
over: every job finished, Ctrl-C handled, a full disk (stopped like one Ctrl-C, nothing
retried: :attr:`RunLoop.disk_full`), or no server left.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from charpack_nodes.pipelines.stages import stage_name

from ..comfy.events import Event, Executing, ExecutionStart, Progress
from ..errors import DiskFull
from .events import RunEvent, StageClocks, stage_of
from .fleet import Fleet, Worker
from .messages import (
    Adopt,
    Cancelled,
    DownloadStarted,
    Drained,
    Finished,
    Posted,
    Refused,
    ServerDown,
    ServerUp,
    Submit,
    Unusable,
)
from .options import Interrupt, RunControl, RunOptions, RunSummary
from .retry_rules import Decision, Ending
from .scheduler import Scheduler
from .state import Begin, PackState, model_group
from .worker import substitute

log = logging.getLogger(__name__)


@dataclass
class _Flight:
    key: str
    server: str


class RunLoop:
    """See the module docstring. Built and driven by :func:`charpack.run.runner.run_pack`."""

    def __init__(
        self,
        *,
        state: PackState,
        workers: Sequence[Worker],
        control: RunControl,
        options: RunOptions,
    ) -> None:
        self.state = state
        self.control = control
        self.options = options
        self.scheduler = Scheduler(
            servers=[w.name for w in workers],
            backlog=options.backlog,
            capacities={w.name: w.capacity for w in workers if hasattr(w, "capacity")},
        )
        self.fleet = Fleet(
            workers=workers, scheduler=self.scheduler, options=options, emit=self.emit
        )
        self.clocks = StageClocks()
        self.flights: dict[str, _Flight] = {}
        self.posted = 0
        self.cancelled = 0
        self.error: str | None = None
        self.disk_full: str | None = None  # the first full-disk message; the run stops

    def emit(self, kind: str, **data: Any) -> None:
        if self.options.on_event is not None:
            self.options.on_event(RunEvent(kind, data))

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._seed()
        except DiskFull as exc:
            self._disk_full(str(exc))
        try:
            while not self._over():
                try:
                    self._turn()
                except DiskFull as exc:  # a manifest save found the disk full
                    self._disk_full(str(exc))
        finally:
            try:
                self.state.flush()  # what the last message changed
            except DiskFull as exc:
                self._disk_full(str(exc))

    def _turn(self) -> None:
        if not self.fleet.presses and self.error is None:
            self._dispatch()  # each begin saves, taking along what the last message changed
        self.state.flush()  # ... or this does, once, before waiting for the next message
        try:
            self.handle(self.control.inbox.get(timeout=0.25))
        except queue.Empty:
            pass
        busy = {f.server for f in self.flights.values()}
        for server in self.fleet.overdue(busy):
            wait = self.options.dead_after_s
            self._move_away(server, f"{server} did not answer for {wait:.0f} s; moved")
        if not self.fleet.presses:
            self.error = self.error or self.fleet.given_up()

    def _disk_full(self, message: str) -> None:
        """Stop as on one Ctrl-C: no new prompts, nothing retried; the prompts on the servers
        stay there (recorded as submitted) for the next run to download."""
        if self.disk_full is not None:
            return
        self.disk_full = message
        log.info("%s", message)
        self.emit("disk_full", error=message)
        if not self.fleet.presses:
            self.fleet.stop(1, len(self.flights))

    def _seed(self) -> None:
        """Queue the waiting jobs; follow the prompts an earlier run left on the servers."""
        state = self.state
        by_url = {w.url: w for w in self.fleet.workers.values()}
        for key, attempt in list(state.in_flight()):
            worker = by_url.get(str(attempt.get("server")))
            if worker is None:
                reason = f"its server {attempt.get('server')} is not part of this run"
                ending = Ending("lost", error=reason)
                self._decide(key, state.end(key, attempt["prompt_id"], ending))
                continue
            job = state.jobs[key].with_seed(int(attempt["seed"]))
            worker.submit(Adopt(key, attempt["prompt_id"], job.scene, job.stem))
            self.flights[attempt["prompt_id"]] = _Flight(key, worker.name)
            self.scheduler.started(worker.name)
        for key in state.todo():
            self.scheduler.add(key, model_group(state.jobs[key]))
        state.save()
        self.emit(
            "run_started",
            pack=state.pack.name,
            folder=str(state.folder),
            jobs=len(state.jobs),
            done=state.counts()["done"],
            waiting=self.scheduler.waiting(),
            in_flight=len(self.flights),
            servers=list(self.fleet.workers),
        )

    def _over(self) -> bool:
        if self.fleet.presses:
            return self.fleet.stopped()
        return self.error is not None or not (self.flights or self.scheduler.waiting())

    def _dispatch(self) -> None:
        state = self.state
        planned = []
        for server, key in self.scheduler.assign():
            worker = self.fleet.workers[server]
            seed = state.seed_for(key)
            job = state.jobs[key].with_seed(seed)
            graph = substitute(dict(job.graph), worker.names)
            planned.append((server, job, Begin(key, worker.url, worker.version, seed, graph)))
        if not planned:
            return
        # One save for every attempt of this turn, before any of them is posted.
        prompt_ids = state.begin_all([begin for _, _, begin in planned])
        for (server, job, begin), prompt_id in zip(planned, prompt_ids, strict=True):
            self.flights[prompt_id] = _Flight(begin.key, server)
            self.clocks.submitted(prompt_id, time.monotonic())
            self.posted += 1
            submit = Submit(begin.key, prompt_id, begin.workflow, job.scene, job.stem)
            self.fleet.workers[server].submit(submit)
            attempt = len(state.entry(begin.key).get("attempts") or [])
            self.emit("submitted", job=begin.key, attempt=attempt, seed=begin.seed, server=server)

    # -- messages --------------------------------------------------------------------------

    def handle(self, message: Any) -> None:
        fleet = self.fleet
        if isinstance(message, Event):
            self._event(message)
        elif isinstance(message, Posted):
            self.clocks.submitted(message.prompt_id, message.at)
        elif isinstance(message, DownloadStarted):
            self.emit("downloading", job=message.key, server=message.server)
        elif isinstance(message, Finished):
            self._finished(message)
        elif isinstance(message, Refused):
            self._refused(message)
        elif isinstance(message, ServerUp):
            fleet.up(message, self.state.manifest)
        elif isinstance(message, ServerDown):
            fleet.down(message)
        elif isinstance(message, Unusable):
            self.error = fleet.lost(message) or self.error
            self._move_away(message.server, message.message)
        elif isinstance(message, Drained):
            fleet.drained(message.server)
        elif isinstance(message, Cancelled):
            fleet.replied(message)
            self._cancelled(message)
        elif isinstance(message, Interrupt):
            fleet.stop(message.count, len(self.flights))

    def _event(self, event: Event) -> None:
        self.clocks.handle(event)
        prompt_id = getattr(event, "prompt_id", None)
        flight = self.flights.get(prompt_id) if isinstance(prompt_id, str) else None
        if flight is None:
            return
        where = {"job": flight.key, "server": flight.server}
        if isinstance(event, ExecutionStart):
            self.emit("started", **where)
        elif isinstance(event, Executing):
            # The pack file's stage names, as the report shows them (the manifest keeps prefixes).
            self.emit("node", **where, node=event.node, stage=stage_name(stage_of(event.node)))
        elif isinstance(event, Progress):
            self.emit("step", **where, node=event.node, value=event.value, max=event.max)

    def _land(self, prompt_id: str) -> _Flight | None:
        """The prompt left its server; None when it was moved or cancelled meanwhile."""
        flight = self.flights.pop(prompt_id, None)
        if flight is not None:
            self.scheduler.finished(flight.server)
        return flight

    def _finished(self, message: Finished) -> None:
        flight = self._land(message.prompt_id)
        if flight is None:
            return
        if message.disk_full is not None:
            # Its files did not fit: the attempt stays submitted, so the next run downloads
            # this prompt's result instead of generating it again.
            self.clocks.forget(message.prompt_id)
            self._disk_full(message.disk_full)
            return
        times = self.clocks.pop(message.prompt_id)
        if message.lost is not None or message.result is None:
            error = message.lost or message.refused or "no result"
            ending = Ending("lost", error=error, worker_s=message.worker_s)
        else:
            attempt = self.state.attempt(flight.key, message.prompt_id)
            submitted = attempt.get("submitted_at") if attempt is not None else None
            ending = Ending.of(
                message.result,
                score=message.score,
                rejected=message.rejected,
                files=message.files,
                times=times,
                submitted_at=submitted,
            )
            if message.worker_s is not None:  # an endpoint's attempt: what its bill counts
                ending = replace(ending, worker_s=message.worker_s)
        self._decide(flight.key, self.state.end(flight.key, message.prompt_id, ending))

    def _decide(self, key: str, decision: Decision) -> None:
        entry = self.state.entry(key)
        if decision.action in ("retry", "requeue"):
            self.scheduler.add(key, model_group(self.state.jobs[key]), front=True)
            kind = "retry" if decision.action == "retry" else "requeued"
            self.emit(kind, job=key, reason=decision.message, seed=decision.seed)
        elif decision.action in ("done", "below_threshold"):
            self.emit(
                decision.action,
                job=key,
                score=entry.get("score"),
                image=entry.get("image"),
                attempts=len(entry.get("attempts") or []),
                reason=decision.message,
            )
        elif decision.action == "failed":
            self.emit("failed", job=key, error=decision.message)

    def _refused(self, message: Refused) -> None:
        flight = self._land(message.prompt_id)
        if flight is None:
            return
        self.clocks.forget(message.prompt_id)
        decision = self.state.rejected(flight.key, message.prompt_id, message.message)
        self._decide(flight.key, decision)
        # The scene's other jobs differ only by seed: the server would refuse them too.
        scene = self.state.jobs[flight.key].scene
        note = f"not run: the server refused this scene's workflow (see {flight.key})"
        for key, job in self.state.jobs.items():
            if job.scene == scene and self.scheduler.remove(key):
                self.state.fail(key, note)
                self.emit("failed", job=key, error=note)

    def _move_away(self, server: str, reason: str) -> None:
        """Give ``server``'s prompts to the other servers (recorded as lost attempts)."""
        moved = [pid for pid, f in self.flights.items() if f.server == server]
        for prompt_id in moved:
            flight = self._land(prompt_id)
            assert flight is not None
            self.clocks.forget(prompt_id)
            ending = Ending("lost", error=reason)
            self._decide(flight.key, self.state.end(flight.key, prompt_id, ending))
        if moved:
            self.fleet.workers[server].forget(tuple(moved))

    def _cancelled(self, message: Cancelled) -> None:
        for prompt_id in message.prompt_ids:
            flight = self._land(prompt_id)
            if flight is None:
                continue
            self.clocks.forget(prompt_id)
            if self.state.cancelled(flight.key, prompt_id):
                self.cancelled += 1
                self.emit("cancelled", job=flight.key, server=flight.server)

    # -- the end ---------------------------------------------------------------------------

    def summary(self, *, elapsed_s: float) -> RunSummary:
        state = self.state
        attempts: dict[str, int] = {}
        failures = []
        for key in state.jobs:
            entry = state.entry(key)
            if entry.get("status") == "failed":
                failures.append((key, str(entry.get("error") or "")))
            for attempt in entry.get("attempts") or []:
                url = str(attempt.get("server"))
                attempts[url] = attempts.get(url, 0) + 1
        return RunSummary(
            pack=state.pack.name,
            folder=state.folder,
            jobs=len(state.jobs),
            counts=state.counts(),
            attempts=self.posted,
            elapsed_s=elapsed_s,
            interrupted=bool(self.fleet.presses),
            cancelled=self.cancelled,
            error=self.error,
            servers=self.fleet.summaries(attempts),
            failures=failures,
        )
