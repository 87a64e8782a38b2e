"""A small fake of RunPod's Serverless ``/v2/{endpoint_id}/…`` job API, for tests and benchmarks.

It follows the documented shapes and states (``/work/shared/reference/serverless.md`` §1–3,
docs.runpod.io ``serverless/endpoints/send-requests`` and ``job-states``), which the SDK's local
test server does not (it runs a job inside the first ``POST /status`` and forgets it):

- ``POST /v2/{id}/run`` ``{"input": …, "policy": {"executionTimeout": ms, "ttl": ms}}`` →
  ``{"id", "status": "IN_QUEUE"}``; ``executionTimeout`` must be > 5000, ``ttl`` ≥ 10000
  (400 otherwise); **429** while the queue holds more than ``queue_limit`` jobs (the platform:
  more than 50 and more than max workers × 500);
- ``GET /v2/{id}/status/{job}`` → ``{"id", "status", "delayTime", "executionTime", "output"
  | "error"}``; states ``IN_QUEUE`` → ``IN_PROGRESS`` → ``COMPLETED`` / ``FAILED`` /
  ``TIMED_OUT`` (ran past its execution timeout, or waited in the queue past its ttl) /
  ``CANCELLED``; a finished job is forgotten ``retention_s`` after it ended (404 then, as for an
  id the endpoint never had);
- ``POST /v2/{id}/cancel/{job}``, ``GET /v2/{id}/health``, ``POST /v2/{id}/purge-queue``;
- the API key in the ``authorization`` header (``Bearer KEY`` or ``KEY``), else 401; another
  endpoint id → 404.

``workers`` threads take queued jobs in order and run each through ``handler(job)`` — the job as
a worker gets it, ``{"id", "input"}`` — which returns ``{"output": …}`` (the job COMPLETED with
that output) or ``{"error": …}`` (FAILED); a handler that raises fails the job too.
:func:`runsync` makes a handler that forwards to the REAL worker served by the runpod SDK's
local API (``POST /runsync``): a worker process that dies mid-job fails that job, as on the
platform. Faults a test can inject: :meth:`FakeServerless.throttle`
(the next requests answer 429), :meth:`FakeServerless.time_out_next` (the next jobs picked up end
``TIMED_OUT`` without running), :meth:`FakeServerless.lose_next` (they run to their end, then
end ``TIMED_OUT``: the result was lost on the way), :meth:`FakeServerless.expire` (forget every
finished job now, as 30 minutes later), and :meth:`FakeServerless.pause` / :meth:`resume`
(workers take no job: a cold endpoint). :meth:`FakeServerless.wait_for` waits on a condition of
its state with a deadline; :meth:`FakeServerless.progress` is a handler's progress update.
Standard library only, plus ``requests`` for :func:`runsync`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import requests

from tests.support.loopback import LoopbackServer, QuietHandler

Handler = Callable[[dict[str, Any]], dict[str, Any]]

FINAL = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})
DEFAULT_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 86_400_000


@dataclass
class FakeJob:
    """One job as the fake endpoint keeps it."""

    id: str
    input: dict[str, Any]
    policy: dict[str, Any]
    status: str = "IN_QUEUE"
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ended_at: float | None = None
    output: Any = None
    error: str | None = None
    worker: int | None = None
    lose: bool = False  # run it, then report TIMED_OUT (the result never reached the platform)

    def view(self) -> dict[str, Any]:
        """The job as ``GET /status`` answers it."""
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            out["delayTime"] = int((self.started_at - self.queued_at) * 1000)
            if self.ended_at is not None:
                out["executionTime"] = int((self.ended_at - self.started_at) * 1000)
            if self.worker is not None:
                out["workerId"] = f"fake-worker-{self.worker}"
        if self.status == "COMPLETED" or (self.status == "IN_PROGRESS" and self.output):
            out["output"] = self.output  # while in progress: the last progress update
        elif self.error is not None:
            out["error"] = self.error
        return out


def runsync(url: str, *, timeout_s: float = 900.0) -> Handler:
    """A handler that runs each job on the runpod SDK's local API at ``url`` (``POST
    /runsync``): the real handler in its own process. A dropped connection (the worker process
    died) fails the job, with the error the platform gives a crashed worker."""
    session = requests.Session()
    lock = threading.Lock()

    def handle(job: dict[str, Any]) -> dict[str, Any]:
        with lock:  # the local API serves one job at a time
            try:
                response = session.post(
                    f"{url.rstrip('/')}/runsync",
                    json={"id": job["id"], "input": job["input"]},
                    timeout=timeout_s,
                )
            except requests.RequestException as exc:
                return {"error": f"worker exited unexpectedly: {type(exc).__name__}"}
        if response.status_code != 200:
            return {"error": f"worker answered {response.status_code}: {response.text[:200]}"}
        body = response.json()
        if body.get("status") == "COMPLETED" and "error" not in body:
            output = body.get("output")
            if isinstance(output, dict) and "error" in output:
                return {"error": json.dumps(output["error"])[:2000]}
            return {"output": output}
        error = body.get("error") or body.get("output") or body
        return {"error": error if isinstance(error, str) else json.dumps(error)[:2000]}

    return handle


class FakeServerless:
    """The fake endpoint; a context manager (starts its server and workers, stops them)."""

    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 1,
        endpoint_id: str = "charpack-test",
        api_key: str = "fake-runpod-key",
        retention_s: float = 1800.0,
        queue_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.retention_s = retention_s
        self.workers = workers
        self.queue_limit = max(50, workers * 500) if queue_limit is None else queue_limit
        self.clock = clock
        self.jobs: dict[str, FakeJob] = {}
        self.runs: list[FakeJob] = []  # every job ever submitted, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.throttled = 0  # requests answered 429
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._throttle = 0
        self._time_out = 0
        self._lose = 0
        self._paused = False
        self._closing = False
        self._server = LoopbackServer(self._request_handler())
        self._threads = [
            threading.Thread(target=self._serve_jobs, args=(n,), name=f"fake-sls-{n}", daemon=True)
            for n in range(workers)
        ]

    # -- the test's side -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What ``RUNPOD_ENDPOINT_BASE_URL`` points at (``…/v2``)."""
        return f"{self._server.url}/v2"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client needs to use this endpoint."""
        return {"RUNPOD_ENDPOINT_BASE_URL": self.base_url, "RUNPOD_API_KEY": self.api_key}

    def __enter__(self) -> FakeServerless:
        self._server.__enter__()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.__exit__()
        for thread in self._threads:
            thread.join(timeout=5)

    def throttle(self, requests_: int) -> None:
        """The next ``requests_`` requests answer 429 (the rate limit)."""
        with self._cond:
            self._throttle += requests_

    def time_out_next(self, jobs: int = 1) -> None:
        """The next ``jobs`` jobs a worker picks up end TIMED_OUT without running."""
        with self._cond:
            self._time_out += jobs

    def progress(self, job_id: str, update: dict[str, Any]) -> None:
        """A handler's ``runpod.serverless.progress_update(job, update)``: ``GET /status`` shows
        ``update`` as the job's output while it is in progress."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is not None and job.status == "IN_PROGRESS":
                job.output = update
                self._cond.notify_all()

    def lose_next(self, jobs: int = 1) -> None:
        """The next ``jobs`` jobs a worker picks up run to their end, but end TIMED_OUT (the
        worker did not report back in time): only what the handler stored says they finished."""
        with self._cond:
            self._lose += jobs

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def expire(self) -> int:
        """Forget every finished job now (as ``retention_s`` after it ended); returns how many."""
        with self._cond:
            gone = [j for j, job in self.jobs.items() if job.status in FINAL]
            for job_id in gone:
                del self.jobs[job_id]
            return len(gone)

    def wait_for(
        self, condition: Callable[[FakeServerless], bool], timeout_s: float = 120.0
    ) -> None:
        """Wait until ``condition(self)`` holds (checked on every change), or raise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    states = {j.id: j.status for j in self.runs}
                    raise TimeoutError(f"fake endpoint: condition not met; jobs {states}")
                self._cond.wait(min(left, 0.5))

    def statuses(self) -> list[str]:
        with self._cond:
            return [job.status for job in self.runs]

    def inputs(self) -> list[dict[str, Any]]:
        """The input of every job submitted, in order."""
        with self._cond:
            return [job.input for job in self.runs]

    # -- the workers -----------------------------------------------------------------------

    def _next_job(self, worker: int) -> FakeJob | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                self._expire_queued()
                if self._queue and not self._paused:
                    job = self.jobs.get(self._queue.popleft())
                    if job is None or job.status != "IN_QUEUE":
                        continue
                    job.status, job.started_at, job.worker = "IN_PROGRESS", self.clock(), worker
                    if self._time_out:
                        self._time_out -= 1
                        self._end(job, "TIMED_OUT", error="job timed out")
                        continue
                    if self._lose:
                        self._lose -= 1
                        job.lose = True
                    self._cond.notify_all()
                    return job
                self._cond.wait(0.5)

    def _serve_jobs(self, worker: int) -> None:
        while (job := self._next_job(worker)) is not None:
            result: dict[str, Any] = {}
            done = threading.Event()

            def work(
                job: FakeJob = job, result: dict[str, Any] = result, done: threading.Event = done
            ) -> None:
                try:
                    result.update(self.handler({"id": job.id, "input": job.input}))
                except Exception as exc:  # the handler raised: the job fails, as on the platform
                    result["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    done.set()

            threading.Thread(target=work, daemon=True).start()
            timeout_ms = job.policy.get("executionTimeout", DEFAULT_TIMEOUT_MS)
            finished = done.wait(timeout_ms / 1000)
            with self._cond:
                if job.status != "IN_PROGRESS":
                    continue  # cancelled meanwhile
                if not finished or job.lose:
                    self._end(job, "TIMED_OUT", error="job timed out")
                elif "error" in result:
                    self._end(job, "FAILED", error=str(result["error"]))
                else:
                    self._end(job, "COMPLETED", output=result.get("output"))

    def _end(
        self, job: FakeJob, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        job.status, job.output, job.error, job.ended_at = status, output, error, self.clock()
        self._cond.notify_all()

    def _expire_queued(self) -> None:
        now = self.clock()
        for job in list(self.jobs.values()):
            if (
                job.status == "IN_QUEUE"
                and now - job.queued_at > job.policy.get("ttl", DEFAULT_TTL_MS) / 1000
            ):
                self._end(job, "TIMED_OUT", error="job expired in the queue (ttl)")
            elif job.status in FINAL and job.ended_at is not None:
                if now - job.ended_at > self.retention_s:
                    del self.jobs[job.id]

    # -- the API ---------------------------------------------------------------------------

    def _answer(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        with self._cond:
            self.requests.append((method, path))
            if self._throttle:
                self._throttle -= 1
                self.throttled += 1
                return 429, {"error": "rate limit exceeded, retry with backoff"}
            key = auth.removeprefix("Bearer ").strip()
            if key != self.api_key:
                return 401, {"error": "Unauthorized"}
            match = re.fullmatch(r"/v2/([^/]+)/([a-z-]+)(?:/([^/?]+))?(?:\?.*)?", path)
            if match is None or match[1] != self.endpoint_id:
                return 404, {"error": "endpoint not found"}
            op, job_id = match[2], match[3]
            self._expire_queued()
            if (method, op) == ("POST", "run") and job_id is None:
                return self._run(body)
            if (method, op) == ("GET", "status") and job_id is not None:
                job = self.jobs.get(job_id)
                return (200, job.view()) if job else (404, {"error": "job not found"})
            if (method, op) == ("POST", "cancel") and job_id is not None:
                job = self.jobs.get(job_id)
                if job is None:
                    return 404, {"error": "job not found"}
                if job.status not in FINAL:
                    self._end(job, "CANCELLED")
                return 200, {"id": job.id, "status": job.status}
            if (method, op) == ("GET", "health"):
                return 200, self._health()
            if (method, op) == ("POST", "purge-queue"):
                removed = [j for j in self._queue if self.jobs[j].status == "IN_QUEUE"]
                for job_id in removed:
                    self._end(self.jobs[job_id], "CANCELLED")
                self._queue.clear()
                return 200, {"removed": len(removed), "status": "completed"}
            return 404, {"error": f"no route {method} {path}"}

    def _run(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or "input" not in body:
            return 400, {"error": "request body must be a JSON object with 'input'"}
        policy = dict(body.get("policy") or {})
        if policy.get("executionTimeout", DEFAULT_TIMEOUT_MS) <= 5000:
            return 400, {"error": "policy.executionTimeout must be more than 5000 ms"}
        if not 10_000 <= policy.get("ttl", DEFAULT_TTL_MS) <= 7 * 86_400_000:
            return 400, {"error": "policy.ttl must be from 10000 ms to one week"}
        queued = sum(1 for j in self._queue if j in self.jobs and self.jobs[j].status == "IN_QUEUE")
        if queued >= self.queue_limit:
            self.throttled += 1
            return 429, {"error": "too many jobs in the queue, retry with backoff"}
        job = FakeJob(id=f"{uuid.uuid4()}-u1", input=body["input"], policy=policy)
        job.queued_at = self.clock()
        self.jobs[job.id] = job
        self.runs.append(job)
        self._queue.append(job.id)
        self._cond.notify_all()
        return 200, {"id": job.id, "status": "IN_QUEUE"}

    def _health(self) -> dict[str, Any]:
        def count(*states: str) -> int:
            return sum(1 for job in self.runs if job.status in states)

        running = count("IN_PROGRESS")
        return {
            "jobs": {
                "completed": count("COMPLETED"),
                "failed": count("FAILED", "TIMED_OUT"),
                "inProgress": running,
                "inQueue": count("IN_QUEUE"),
                "retried": 0,
            },
            "workers": {"idle": max(0, self.workers - running), "running": running},
        }

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def _handle(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, answer = 400, {"error": "body is not JSON"}
                else:
                    status, answer = fake._answer(
                        method, self.path, self.headers.get("authorization") or "", body
                    )
                self.reply(answer, status)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        return Handler
