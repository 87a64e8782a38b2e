"""A RunPod Serverless queue endpoint as one "server" of a run's fleet.

Owns :class:`EndpointConfig` (which endpoint, how many of its GPUs this run keeps busy, the
per-job policy) and :class:`EndpointWorker`, which the runner's loop drives exactly as it drives a
:class:`~charpack.run.worker.ServerWorker` (the same commands, the same messages back), with room
for ``workers × (backlog + 1)`` attempts at once: the endpoint looks like one server with many
GPUs. Its threads:

- the **control** thread checks the endpoint (``/health``: the API key and the id), uploads the
  pack's input pictures to S3 once (HEAD first), queues each attempt with ``POST /run`` under
  its recorded ``prompt_id`` with the per-job ``policy`` (execution timeout, ttl), backs off
  exponentially on 429 (nothing was queued), polls ``GET /status`` of its jobs (a few polls at
  once), and turns each end into the run's messages: ``COMPLETED`` → the handler's output
  judged as a pod's history is; a handler ``error`` → an execution error (new seed, by the retry
  rules); ``FAILED`` (the worker crashed or could not upload), ``TIMED_OUT``, ``CANCELLED`` by
  someone else, or a job the endpoint forgot → **first the attempt's ``done.json`` in S3 is
  checked** (RunPod forgets jobs 30 minutes after they end, and a timed-out job may have
  finished after all): when it is there its result is taken, otherwise the attempt is lost and
  the loop runs it again (same seed, bounded as lost prompts are);
- a **fetch pool** (``fetch_parallel`` threads) streams finished attempts' files from S3 into
  the pack folder (:func:`charpack.serverless.results.fetch_result`: the pod downloads'
  integrity rules) and reports :class:`~charpack.run.messages.Finished`.

Each attempt's RunPod job id is appended to ``serverless-jobs.jsonl`` in the pack folder as soon
as ``/run`` answers, so a resumed run polls the jobs a killed one queued; an attempt with no job
id recorded (killed between ``/run`` and the record) is settled by its ``done.json``. It decides
nothing about jobs (the loop does) and spells no S3 key (:mod:`charpack.serverless.objects`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfy.auth import redact
from ..comfy.events import Executing, ExecutionStart, Progress
from ..comfy.limits import STOP_GRACE_S, DownloadCancelled
from ..comfy.results import JobResult
from ..errors import AuthError, CharpackError, DiskFull, OutputRefused, PackFolderError
from ..pack.packfile import IdentityGate
from ..pack.uploads import Upload
from ..run.fetcher import DownloadRules, score_of
from ..run.messages import (
    Adopt,
    Cancel,
    Cancelled,
    Close,
    DownloadStarted,
    Drain,
    Drained,
    Finished,
    Forget,
    Posted,
    Refused,
    ServerDown,
    ServerUp,
    Submit,
    Unusable,
)
from ..run.retry_rules import below
from ..run.state import image_dir
from . import objects
from .jobs_api import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    RUNNING,
    TIMED_OUT,
    EndpointNotFound,
    JobsApi,
    JobStatus,
    Policy,
    Throttled,
)
from .results import FetchLimits, fetch_result, result_of

log = logging.getLogger(__name__)

JOURNAL = "serverless-jobs.jsonl"
REFUSED = frozenset({"prompt_rejected", "invalid_input"})  # the worker's error types: no retry
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class EndpointConfig:
    """One endpoint of a run: ``workers`` is how many of its GPUs the run keeps busy (set it to
    the endpoint's max workers)."""

    endpoint_id: str
    workers: int = 10
    policy: Policy = field(default_factory=Policy)
    fetch_parallel: int = 4
    poll_interval: float = 2.0
    poll_parallel: int = 16

    def __post_init__(self) -> None:
        if self.workers < 1 or self.fetch_parallel < 1 or self.poll_parallel < 1:
            raise ValueError("workers, fetch_parallel and poll_parallel must be 1 or more")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")

    @property
    def name(self) -> str:
        return f"endpoint-{self.endpoint_id}"

    @property
    def url(self) -> str:
        """What the manifest records as the attempts' server (stable across runs)."""
        return f"runpod-endpoint:{self.endpoint_id}"

    @property
    def label(self) -> str:
        return f"endpoint {self.endpoint_id}"


@dataclass
class _Job:
    key: str
    scene: str
    stem: str
    prompt_id: str
    payload: dict[str, Any] | None = None  # None: adopted (already queued by an earlier run)
    job_id: str | None = None
    started: bool = False
    fetching: bool = False
    posts: int = 0  # POST /run tries; after an ambiguous one, S3 is asked first
    worker_s: float | None = None  # what RunPod bills: the handler's time, else executionTime
    progress: dict[str, Any] | None = None  # the last progress update seen


def _failure(error: str | None) -> tuple[str | None, str]:
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


class Journal:
    """``serverless-jobs.jsonl``: prompt id → RunPod job id, one line per ``/run`` answered."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL
        self._lock = threading.Lock()

    def load(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(item, dict) and isinstance(item.get("job_id"), str):
                out[str(item.get("prompt_id"))] = item["job_id"]
        return out

    def add(self, prompt_id: str, job_id: str) -> None:
        """Append one record (never through a symbolic link). A failed write is logged, not
        raised: without the id a resumed run settles the attempt by its done.json instead."""
        line = (json.dumps({"prompt_id": prompt_id, "job_id": job_id}) + "\n").encode()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._lock:
            try:
                fd = os.open(self.path, flags, 0o644)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("%s: job %s of prompt %s not recorded: %s", self.path, job_id,
                            prompt_id, exc)  # fmt: skip


class EndpointWorker:
    """Every call to one endpoint and its bucket, on its own threads; see the module docstring."""

    def __init__(
        self,
        *,
        config: EndpointConfig,
        inbox: queue.SimpleQueue[Any],
        folder: Path,
        uploads: tuple[Upload, ...],
        gate: IdentityGate,
        run_id: str,
        backlog: int = 2,
        downloads: DownloadRules | None = None,
        api: JobsApi | None = None,
        store: objects.ObjectStore | None = None,
        probe_interval: float = 2.0,
    ) -> None:
        self.config = config
        self.name = config.name
        self.url = config.url
        self.capacity = config.workers * (backlog + 1)
        self.inbox = inbox
        self.folder = folder
        self.uploads = uploads
        self.gate = gate
        self.run_id = run_id
        self.rules = downloads or DownloadRules()
        self.probe_interval = probe_interval
        self.version: str | None = None
        self.names: dict[str, str] = {}  # inputs keep their content names in S3
        self.reconnects = 0
        self.api = api or JobsApi.from_env(config.endpoint_id)
        self._store = store
        self.journal = Journal(folder)
        self.commands: queue.Queue[Any] = queue.Queue()
        self._jobs: dict[str, _Job] = {}
        self._unposted: deque[str] = deque()  # prompt ids waiting for POST /run
        self._known: dict[str, str] | None = None  # the journal's job ids, read once
        self._unsettled: deque[str] = deque()  # adopted with no job id: done.json decides
        self._outcomes: queue.Queue[Any] = queue.Queue()  # from the pools to the control thread
        self._up: bool | None = None
        self._next_probe = 0.0
        self._next_poll = 0.0
        self._throttled_until = 0.0
        self._backoff = 0.0
        self._stopping = False
        self._drained_at: float | None = None
        self._drained = False
        self._cancel = threading.Event()  # closing, or the drain's grace ran out
        self._fetches = 0
        self._fetch_pool = ThreadPoolExecutor(config.fetch_parallel, f"charpack-s3-{self.name}")
        self._poll_pool = ThreadPoolExecutor(config.poll_parallel, f"charpack-poll-{self.name}")
        self._thread = threading.Thread(target=self._run, name=f"charpack-run-{self.name}")
        self._thread.daemon = True

    @property
    def store(self) -> objects.ObjectStore:
        if self._store is None:
            self._store = objects.ObjectStore.from_env()
        return self._store

    # -- the runner's side -----------------------------------------------------------------

    def start(self) -> EndpointWorker:
        self._thread.start()
        return self

    def submit(self, command: Submit | Adopt) -> None:
        self.commands.put(command)

    def forget(self, prompt_ids: tuple[str, ...]) -> None:
        self.commands.put(Forget(prompt_ids))

    def drain(self) -> None:
        self.commands.put(Drain())

    def cancel(self) -> None:
        self.commands.put(Cancel())

    def close(self, timeout: float = 10.0) -> None:
        self._cancel.set()
        self.commands.put(Close())
        self._thread.join(timeout)
        self._fetch_pool.shutdown(wait=True, cancel_futures=True)
        self._poll_pool.shutdown(wait=True, cancel_futures=True)
        self.api.close()

    # -- the control thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._up and time.monotonic() >= self._next_probe:
                if not self._probe():
                    return
            try:
                items = [self.commands.get(timeout=0.1)]
            except queue.Empty:
                items = [None]
            # Take every command waiting (a turn of the loop hands over up to hundreds of
            # attempts), so they are posted together rather than one per round trip.
            while not isinstance(items[-1], Close) and len(items) < 1000:
                try:
                    items.append(self.commands.get_nowait())
                except queue.Empty:
                    break
            if isinstance(items[-1], Close):
                return
            try:
                self._step(items)
            except AuthError as exc:
                self.inbox.put(Unusable(self.name, str(exc)))
                return
            except CharpackError as exc:  # the endpoint stopped answering: probe it again
                self._set_up(False, str(exc))
            except Exception as exc:  # a bug must not silently stall the whole run
                log.exception("%s: worker failed", self.config.label)
                self.inbox.put(Unusable(self.name, redact(f"{self.config.label}: {exc!r}"), False))
                return

    def _step(self, items: list[Any]) -> None:
        for item in items:
            self._command(item)
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                break
            self._outcome(*outcome)
        if self._stopping:
            self._drain_step()
            return
        if not self._up:
            return
        self._settle_adopted()
        self._post_due()
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.config.poll_interval
            self._poll()

    def _command(self, item: Any) -> None:
        if isinstance(item, Submit):
            self._jobs[item.prompt_id] = _Job(
                item.key, item.scene, item.stem, item.prompt_id, payload=self._payload(item)
            )
            self._unposted.append(item.prompt_id)
        elif isinstance(item, Adopt):
            if self._known is None:
                self._known = self.journal.load()
            job = _Job(item.key, item.scene, item.stem, item.prompt_id)
            job.job_id = self._known.get(item.prompt_id)
            self._jobs[item.prompt_id] = job
            if job.job_id is None:
                self._unsettled.append(item.prompt_id)
        elif isinstance(item, Forget):
            for prompt_id in item.prompt_ids:
                gone = self._jobs.pop(prompt_id, None)
                if gone is not None and gone.job_id is not None:
                    self._quiet_cancel(gone.job_id)
        elif isinstance(item, Drain):
            self._stopping = True
            self._drained_at = time.monotonic()
        elif isinstance(item, Cancel):
            self._cancel_all()

    def _settle_adopted(self) -> None:
        """Adopted attempts with no job id recorded (a client killed between ``/run`` and the
        record): their done.json says whether they finished; else they are lost."""
        while self._unsettled:
            adopted = self._jobs.get(self._unsettled[0])
            if adopted is not None:
                self._settle(adopted, "no RunPod job id was recorded for it (client killed?)")
            self._unsettled.popleft()

    def _probe(self) -> bool:
        """``/health`` and the input pictures; False when the endpoint cannot be used at all."""
        self._next_probe = time.monotonic() + self.probe_interval
        try:
            self.api.health()
            for upload in self.uploads:
                key = objects.input_key(self.store.prefix, upload.image_value)
                if self.store.head(key) is None:
                    self.store.upload_file(upload.path, key, sha256=upload.sha256)
        except AuthError as exc:
            self.inbox.put(Unusable(self.name, str(exc)))
            return False
        except (EndpointNotFound, objects.ObjectStoreConfigError) as exc:
            self.inbox.put(Unusable(self.name, str(exc), auth=False))
            return False
        except (CharpackError, OSError) as exc:
            self._set_up(False, str(exc))
            return True
        self._set_up(True)
        return True

    def _set_up(self, up: bool, reason: str = "") -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            self.inbox.put(ServerUp(self.name, self.version, {}))
        else:
            self._next_probe = time.monotonic() + self.probe_interval
            self.inbox.put(ServerDown(self.name, reason or f"{self.config.label}: not answering"))

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

    # -- posting ---------------------------------------------------------------------------

    def _post_due(self) -> None:
        """POST /run the waiting attempts, ``poll_parallel`` at a time (a 50-GPU endpoint fills
        in a few round trips, not 150), in order; a 429 puts the rest back and backs off."""
        while self._unposted and time.monotonic() >= self._throttled_until:
            batch: list[_Job] = []
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

    def _post_one(self, job: _Job) -> tuple[float, str] | Exception:
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

    def _status(self, job: _Job) -> JobStatus | None | Exception:
        assert job.job_id is not None
        try:
            return self.api.status(job.job_id)
        except CharpackError as exc:
            return exc

    def _polled(self, job: _Job, status: JobStatus | None) -> None:
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
            kind, message = _failure(status.error)
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

    def _progress(self, job: _Job, update: dict[str, Any]) -> None:
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

    def _done(self, job: _Job) -> dict[str, Any] | None:
        found = self.store.get_json(
            objects.done_key(self.store.prefix, self.run_id, job.key, job.prompt_id)
        )
        return found if isinstance(found, dict) else None

    def _settle(self, job: _Job, why: str) -> None:
        """The job ended without an output from the API: S3's ``done.json`` decides."""
        done = self._done(job)
        if done is not None:
            self._take(job, done)
            return
        self._jobs.pop(job.prompt_id, None)
        self.inbox.put(
            Finished(self.name, job.key, job.prompt_id, lost=redact(why), worker_s=job.worker_s)
        )

    # -- results ---------------------------------------------------------------------------

    def _take(self, job: _Job, output: dict[str, Any]) -> None:
        try:
            result, files = result_of(job.prompt_id, output)
        except OutputRefused as exc:
            self._jobs.pop(job.prompt_id, None)
            self.inbox.put(Finished(*self._where(job), refused=str(exc), worker_s=job.worker_s))
            return
        worker_s = output.get("worker_s")
        if isinstance(worker_s, int | float) and not isinstance(worker_s, bool):
            job.worker_s = float(worker_s)
        version = output.get("comfyui_version")
        if isinstance(version, str):
            self.version = redact(version)[:64]
        if not result.ok:
            self._jobs.pop(job.prompt_id, None)
            self.inbox.put(Finished(*self._where(job), result=result, worker_s=job.worker_s))
            return
        job.fetching = True
        self._fetches += 1
        self._fetch_pool.submit(self._fetch, job, result, files)

    def _where(self, job: _Job) -> tuple[str, str, str]:
        return self.name, job.key, job.prompt_id

    def _fetch(self, job: _Job, result: JobResult, files: Any) -> None:
        where = self._where(job)
        try:
            if self._cancel.is_set():
                return
            self.inbox.put(DownloadStarted(*where))
            score = score_of(result)
            rejected = below(self.gate, score)
            records = fetch_result(
                self.store,
                result,
                files,
                folder=self.folder,
                rel_dir=image_dir(job.scene, rejected=rejected),
                stem=job.stem,
                expected=self.rules.of(job.key),
                label=self.config.label,
                limits=FetchLimits(deadline_s=self.rules.deadline_s),
                cancel=self._cancel,
            )
            message = Finished(
                *where,
                result=result,
                score=score,
                rejected=rejected,
                files=records,
                worker_s=job.worker_s,
            )
        except DownloadCancelled:
            log.info("%s: %s: download left to the next run", self.name, job.key)
            return
        except DiskFull as exc:
            message = Finished(*where, disk_full=str(exc))
        except (OutputRefused, PackFolderError) as exc:
            log.warning("%s: %s: output refused: %s", self.name, job.key, exc)
            message = Finished(*where, refused=str(exc), worker_s=job.worker_s)
        except Exception as exc:  # reported, never the end of the pool
            log.warning("%s: %s: download failed: %s", self.name, job.key, exc)
            message = Finished(
                *where, lost=redact(f"download from S3 failed: {exc}"), worker_s=job.worker_s
            )
        finally:
            self._outcomes.put(("fetched", job))
            self.commands.put(None)  # wake the control thread
        self.inbox.put(message)

    def _outcome(self, kind: str, job: _Job) -> None:
        if kind == "fetched":
            self._fetches -= 1
            self._jobs.pop(job.prompt_id, None)

    # -- stopping --------------------------------------------------------------------------

    def _drain_step(self) -> None:
        assert self._drained_at is not None
        if self._drained:
            return
        if self._fetches and time.monotonic() - self._drained_at < STOP_GRACE_S:
            return
        self._cancel.set()  # what has not arrived is left to the next run
        self.inbox.put(Drained(self.name))
        self._drained = True

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
