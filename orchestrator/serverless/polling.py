"""The job side of :class:`~charpack.serverless.backend.EndpointWorker`: each attempt's payload
(its graph, ids, the S3 keys of its inputs, what to expect) queued with ``POST /run``
(``poll_parallel`` at a time, backing off exponentially on 429: nothing was queued), its job
polled with ``GET /status`` and cancelled on request, and each end turned into the run's messages:
``COMPLETED`` → the handler's output (:mod:`.fetching`); a handler ``error`` → an execution
error; a refused graph or input → :class:`~charpack.run.messages.Refused`; ``FAILED``,
``TIMED_OUT``, ``CANCELLED`` by someone else, or a job the endpoint forgot → **first the
attempt's ``done.json`` in S3 is checked** (RunPod forgets jobs 30 minutes after they end, and a
timed-out job may have finished after all), else the attempt is lost.

:class:`JobPolling` is a base of ``EndpointWorker`` and holds no state of its own (the
attributes below are the worker's). It does not decide when to post or poll (the control thread
in :mod:`.backend` does).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..comfy.auth import redact
from ..comfy.events import Executing, ExecutionStart, Progress
from ..errors import CharpackError
from ..pack.uploads import Upload
from ..run.messages import Cancelled, Finished, Posted, Refused, Submit
from . import objects
from .fetching import ResultFetching
from .jobs_api import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    RUNNING,
    TIMED_OUT,
    EndpointJobState,
    JobsApi,
    Throttled,
)
from .records import EndpointJob, Journal

__all__ = ["BACKOFF_MAX_S", "REFUSED", "JobPolling", "failure_of"]

log = logging.getLogger(__name__)

REFUSED = frozenset({"prompt_rejected", "invalid_input"})  # the worker's error types: no retry
BACKOFF_MAX_S = 30.0


def failure_of(error: str | None) -> tuple[str | None, str]:
    """A FAILED job's error as the worker writes it (a JSON string ``{"type", "message",
    "retry"}``), or the platform's own text."""
    if not error:
        return None, ""
    try:
        data = json.loads(error)
    except ValueError:
        return None, error[:500]
    if not isinstance(data, dict):
        return None, error[:500]
    return str(data.get("type") or "") or None, str(data.get("message") or error)[:2000]


class JobPolling(ResultFetching):
    """Posting, polling, settling and cancelling the attempts' jobs; see the module docstring."""

    api: JobsApi
    run_id: str
    uploads: tuple[Upload, ...]
    journal: Journal
    _unposted: deque[str]
    _poll_pool: ThreadPoolExecutor
    _next_poll: float
    _throttled_until: float
    _backoff: float

    # -- posting ---------------------------------------------------------------------------

    def _payload(self, item: Submit) -> dict[str, Any]:
        used = {
            v
            for node in item.graph.values()
            for v in node.get("inputs", {}).values()
            if isinstance(v, str)
        }
        expected = self.rules.of(item.key)
        return {
            "workflow": item.graph,
            "prompt_id": item.prompt_id,
            "job_key": item.key,
            "run_id": self.run_id,
            "inputs": [
                {
                    "name": u.image_value,
                    "s3_key": objects.input_key(self.store.prefix, u.image_value),
                }
                for u in self.uploads
                if u.image_value in used
            ],
            "expect": {"max_files": 2 * expected.images, "max_bytes": expected.max_image_bytes},
        }

    def _post_due(self) -> None:
        """POST /run the waiting attempts, ``poll_parallel`` at a time (a 50-GPU endpoint fills
        in a few round trips, not 150), in order; a 429 puts the rest back and backs off."""
        while self._unposted and time.monotonic() >= self._throttled_until:
            batch: list[EndpointJob] = []
            while self._unposted and len(batch) < self.config.poll_parallel:
                job = self._jobs.get(self._unposted.popleft())
                if job is None or job.payload is None:
                    continue
                if job.posts and self._done(job) is not None:
                    # An earlier POST got no answer but was queued and ran: take its result.
                    self._settle(job, "")
                    continue
                batch.append(job)
            answers = list(self._poll_pool.map(self._post_one, batch))
            failed: Exception | None = None
            for job, answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    failed = failed or answer
                    continue
                at, job.job_id = answer
                self.journal.add(job.prompt_id, job.job_id)
                self.inbox.put(Posted(self.name, job.key, job.prompt_id, at))
            again = [
                j.prompt_id for j, a in zip(batch, answers, strict=True) if isinstance(a, Exception)
            ]
            self._unposted.extendleft(reversed(again))  # first in line again, in order
            if isinstance(failed, Throttled):
                self._backoff = min(BACKOFF_MAX_S, max(1.0, self._backoff * 2))
                self._throttled_until = time.monotonic() + self._backoff
                log.info("%s; backing off %.0f s", failed, self._backoff)
                return
            if failed is not None:
                raise failed
            self._backoff = 0.0

    def _post_one(self, job: EndpointJob) -> tuple[float, str] | Exception:
        assert job.payload is not None
        at = time.monotonic()
        job.posts += 1
        try:
            return at, self.api.run(job.payload, policy=self.config.policy)
        except CharpackError as exc:
            return exc

    # -- polling ---------------------------------------------------------------------------

    def _poll(self) -> None:
        watched = [j for j in self._jobs.values() if j.job_id is not None and not j.fetching]
        if not watched:
            return
        answers = list(self._poll_pool.map(self._status, watched))
        for job, answer in zip(watched, answers, strict=True):
            if isinstance(answer, Throttled):
                self._next_poll = time.monotonic() + max(1.0, self._backoff * 2)
                continue
            if isinstance(answer, Exception):
                raise answer
            if self._jobs.get(job.prompt_id) is not job:
                continue
            self._polled(job, answer)

    def _status(self, job: EndpointJob) -> EndpointJobState | None | Exception:
        assert job.job_id is not None
        try:
            return self.api.status(job.job_id)
        except CharpackError as exc:
            return exc

    def _polled(self, job: EndpointJob, status: EndpointJobState | None) -> None:
        if status is not None and status.execution_ms is not None:
            job.worker_s = status.execution_ms / 1000
        if status is None:
            self._settle(job, f"the endpoint no longer knows job {job.job_id}")
        elif status.status in (IN_PROGRESS, RUNNING):
            if not job.started:
                job.started = True
                self.inbox.put(ExecutionStart(self.name, time.monotonic(), job.prompt_id))
            if isinstance(status.output, dict):
                self._progress(job, status.output)
        elif status.status == COMPLETED:
            if isinstance(status.output, dict):
                self._take(job, status.output)
            else:
                self._settle(job, f"job {job.job_id} completed without the handler's output")
        elif status.final:
            kind, message = failure_of(status.error)
            if status.status == FAILED and kind in REFUSED:
                # The worker's ComfyUI refused the graph (or the input): running it again
                # cannot help; the loop fails the job (and its scene, for a refused graph).
                self._jobs.pop(job.prompt_id, None)
                said = redact(f"{self.config.label}: {message}")
                self.inbox.put(Refused(self.name, job.key, job.prompt_id, said))
                return
            why = {TIMED_OUT: "timed out", CANCELLED: "was cancelled"}.get(status.status, "failed")
            detail = f": {message}" if message else ""
            self._settle(job, f"{self.config.label}: job {job.job_id} {why}{detail}")

    def _progress(self, job: EndpointJob, update: dict[str, Any]) -> None:
        """The worker's last progress update (its ``progress_update``, shown by ``/status``
        while the job runs) as the events a pod's websocket gives: node started, sampler step."""
        if update.get("prompt_id") != job.prompt_id or update == job.progress:
            return
        job.progress = update
        node, now = update.get("node"), time.monotonic()
        if update.get("stage") == "node" and isinstance(node, str):
            self.inbox.put(Executing(self.name, now, job.prompt_id, node))
        elif update.get("stage") == "sampling":
            value, most = update.get("value"), update.get("max")
            if isinstance(value, int | float) and isinstance(most, int | float):
                where = node if isinstance(node, str) else None
                self.inbox.put(Progress(self.name, now, job.prompt_id, where, value, most))

    def _done(self, job: EndpointJob) -> dict[str, Any] | None:
        found = self.store.get_json(
            objects.done_key(self.store.prefix, self.run_id, job.key, job.prompt_id)
        )
        return found if isinstance(found, dict) else None

    def _settle(self, job: EndpointJob, why: str) -> None:
        """The job ended without an output from the API: S3's ``done.json`` decides."""
        done = self._done(job)
        if done is not None:
            self._take(job, done)
            return
        self._jobs.pop(job.prompt_id, None)
        self.inbox.put(
            Finished(self.name, job.key, job.prompt_id, lost=redact(why), worker_s=job.worker_s)
        )

    # -- cancelling ------------------------------------------------------------------------

    def _quiet_cancel(self, job_id: str) -> None:
        try:
            self.api.cancel(job_id)
        except CharpackError as exc:
            log.info("%s: could not cancel job %s: %s", self.config.label, job_id, exc)

    def _cancel_all(self) -> None:
        gone = []
        try:
            for job in list(self._jobs.values()):
                if job.fetching:
                    continue
                if job.job_id is not None:
                    self.api.cancel(job.job_id)
                    after = self.api.status(job.job_id)
                    if after is not None and after.status == COMPLETED:
                        continue  # finished first: the next run downloads it
                gone.append(job.prompt_id)
        except CharpackError as exc:
            self.inbox.put(Cancelled(self.name, (), error=str(exc)))
            return
        for prompt_id in gone:
            self._jobs.pop(prompt_id, None)
        self.inbox.put(Cancelled(self.name, tuple(gone)))
