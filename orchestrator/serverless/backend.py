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

This module holds the configuration, the runner's side and the control thread (probing,
commands, draining); posting, polling and cancelling the jobs are :mod:`.polling`'s, taking and
fetching their results :mod:`.fetching`'s, the job records and the journal :mod:`.records`'.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfy.limits import STOP_GRACE_S
from ..errors import AuthError, CharpackError
from ..pack.packfile import IdentityGate
from ..pack.uploads import Upload
from ..run.control import ControlLoop
from ..run.fetcher import DownloadRules
from ..run.messages import (
    Adopt,
    Cancel,
    Close,
    Drain,
    Drained,
    Forget,
    ServerDown,
    ServerUp,
    Submit,
    Unusable,
)
from . import objects
from .jobs_api import EndpointNotFound, JobsApi, Policy
from .polling import JobPolling
from .records import JOURNAL, EndpointJob, Journal

__all__ = ["JOURNAL", "EndpointConfig", "EndpointWorker", "Journal"]

log = logging.getLogger(__name__)


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


class EndpointWorker(JobPolling, ControlLoop):
    """Every call to one endpoint and its bucket, on its own threads; see the module docstring."""

    down_errors = (CharpackError,)  # the jobs API or S3 stopped answering: probe it again

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
        self._jobs: dict[str, EndpointJob] = {}
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

    # -- the runner's side -----------------------------------------------------------------

    def start(self) -> EndpointWorker:
        self._thread.start()
        return self

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
            if isinstance(items[-1], Close) or not self._turn(self._step, items):
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
            self._jobs[item.prompt_id] = EndpointJob(
                item.key, item.scene, item.stem, item.prompt_id, payload=self._payload(item)
            )
            self._unposted.append(item.prompt_id)
        elif isinstance(item, Adopt):
            if self._known is None:
                self._known = self.journal.load()
            job = EndpointJob(item.key, item.scene, item.stem, item.prompt_id)
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
