"""charpack's Serverless handler: one attempt's API graph on the worker's own ComfyUI, its files
to S3, every UI output back.

Owns :func:`handle` (what ``serverless/handler.py`` gives ``runpod.serverless.start``) and
:class:`ServerlessWorker`. One job is one attempt of one pack job; its input is checked by
:func:`~charpack.serverless.job_request.parse_request` (the shape is in :mod:`.job_request`), its
files moved by :mod:`.transfers`.

The worker talks to ComfyUI with the pods' client code (:class:`~charpack.comfy.client.ComfyClient`
submitting under the given prompt id, the websocket as a hint, ``/history`` as the truth,
:class:`~charpack.comfy.completion.Completion` deciding when it is done) and reattaches instead of
submitting when ComfyUI already has the prompt in its queue or history, so a retried job on the
same worker never runs twice; an attempt whose ``done.json`` is already in S3 is answered from it
without touching ComfyUI. With ``CHARPACK_WORKER_EXCLUSIVE=1`` (set in the image, where the
ComfyUI is the worker's own) any other prompt on it is cancelled first: what a job the platform
timed out or cancelled left running. Files are checked as on pods (the saver's sidecar must
name this prompt and image, the image must match its sha256 and size, at most ``expect`` files
and bytes), then uploaded under :func:`~charpack.serverless.objects.output_prefix`: sidecars
first, PNGs last, ``done.json`` (this output) last of all.

Output (a COMPLETED job, also stored as ``done.json``)::

    {"prompt_id", "status": "success" | "error" | "interrupted", "failure"?: {node_id, node_type,
     exception_type, message}, "ui": {node_id: {key: [values]}} (the history's outputs, every
     key), "files": [{node, key, filename, subfolder, s3_key, sha256, bytes}],
     "comfyui_version", "execution_s", "started_ms", "finished_ms", "worker_s"}

A graph that ran and failed in a node is a COMPLETED job with ``status: "error"`` and its
``failure`` (the SDK turns a top-level ``error`` key into a FAILED job and drops the rest). A job
the worker could not carry out is FAILED with ``error`` = a JSON string ``{"type", "message",
"retry"}``. Retrying cannot help ``invalid_input``, ``prompt_rejected`` and ``worker_config``
(the endpoint's environment names no bucket); it can help ``input_missing``,
``comfy_unavailable``, ``lost``, ``output_refused`` and ``upload_failed``. Nothing is written to
S3 for a FAILED job, so no ``done.json`` exists for it. For ``comfy_unavailable`` and ``lost``
the answer also asks the SDK to replace the worker (``refresh_worker``).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..comfy.completion import Completion, Lost
from ..comfy.events import Event, Executing, ExecutionStart, Progress
from ..comfy.results import JobResult, JobState
from ..comfy.stream import EventStream
from ..errors import CharpackError, PromptRejected, ServerUnavailable
from ..run.retry_rules import early_stop
from .job_request import JobFailed, JobRequest, parse_request
from .objects import ObjectStore, ObjectStoreError, done_key
from .transfers import ensure_inputs, store_files

__all__ = ["JobFailed", "JobRequest", "ServerlessWorker", "handle", "parse_request"]

log = logging.getLogger(__name__)

COMFY_URL_ENV = "CHARPACK_COMFY_URL"
DEFAULT_COMFY_URL = "http://127.0.0.1:8188"  # worker-comfyui's ComfyUI, beside the handler
READY_ENV = "CHARPACK_COMFY_READY_S"
# Set in the image: the worker's ComfyUI is its own, so any other prompt on it is an orphan.
EXCLUSIVE_ENV = "CHARPACK_WORKER_EXCLUSIVE"
UNREACHABLE_S = 60.0  # ComfyUI silent this long while a prompt is in flight: the job fails

Progress_ = Callable[[Mapping[str, Any], dict[str, Any]], None]


class ServerlessWorker:
    """The handler's state across jobs: one ComfyUI client, one store, the progress sender."""

    def __init__(
        self,
        *,
        comfy_url: str,
        store: ObjectStore,
        progress: Progress_ | None = None,
        ready_s: float = 600.0,
        poll_interval: float = 5.0,
        exclusive: bool = False,
    ) -> None:
        self.config = ServerConfig.from_url(comfy_url, name="local ComfyUI")
        self.client = ComfyClient(config=self.config)
        self.store = store
        self.progress = progress
        self.ready_s = ready_s
        self.poll_interval = poll_interval
        self.exclusive = exclusive
        self.comfyui_version: str | None = None

    @classmethod
    def from_env(cls, progress: Progress_ | None = None) -> ServerlessWorker:
        env = os.environ
        return cls(
            comfy_url=env.get(COMFY_URL_ENV, "").strip() or DEFAULT_COMFY_URL,
            store=ObjectStore.from_env(env),
            progress=progress,
            ready_s=float(env.get(READY_ENV) or 600.0),
            exclusive=env.get(EXCLUSIVE_ENV, "").strip().lower() in ("1", "true", "yes"),
        )

    def handle(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Run one job; the runpod handler's return value (see the module docstring)."""
        began = time.monotonic()
        try:
            request = parse_request(job.get("input"))
            return self._run(job, request, began)
        except JobFailed as exc:
            log.warning("job %s failed (%s): %s", job.get("id"), exc.kind, exc)
            return exc.payload()

    # -- one job -----------------------------------------------------------------------------

    def _run(self, job: Mapping[str, Any], request: JobRequest, began: float) -> dict[str, Any]:
        prefix = self.store.prefix
        marker = done_key(prefix, request.run_id, request.job_key, request.prompt_id)
        try:
            # HEAD first, the cheap check a client also makes (a missing bucket reads as "not
            # done" here and fails at the first upload, after the run, like a bucket removed).
            done = self.store.get_json(marker) if self.store.head(marker) else None
        except ObjectStoreError as exc:
            raise JobFailed("upload_failed", str(exc)) from exc
        if isinstance(done, dict) and done.get("prompt_id") == request.prompt_id:
            log.info("%s: already done (%s); answering from it", request.prompt_id, marker)
            return done
        self._wait_ready()
        ensure_inputs(request, client=self.client, store=self.store)
        result, outputs = self._execute(job, request)
        output: dict[str, Any] = {
            "prompt_id": request.prompt_id,
            "status": result.status.value,
            "ui": outputs,
            "files": [],
            "comfyui_version": self.comfyui_version,
            "execution_s": result.execution_s,
            "started_ms": result.started_ms,
            "finished_ms": result.finished_ms,
        }
        if result.failure is not None:
            f = result.failure
            output["failure"] = {
                "node_id": f.node_id,
                "node_type": f.node_type,
                "exception_type": f.exception_type,
                "message": f.message,
            }
        # A prompt the early identity gate stopped saved nothing: there is nothing to upload.
        if result.ok and early_stop(result) is None:
            self._send(job, {"stage": "uploading", "prompt_id": request.prompt_id})
            output["files"] = store_files(
                request, result, client=self.client, store=self.store, server=self.config.label
            )
        output["worker_s"] = round(time.monotonic() - began, 3)
        try:
            self.store.put_json(marker, output)
        except ObjectStoreError as exc:
            raise JobFailed("upload_failed", str(exc)) from exc
        return output

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_s
        wait = 0.05
        while True:
            try:
                stats = self.client.system_stats()
                self.comfyui_version = (stats.get("system") or {}).get("comfyui_version")
                return
            except ServerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise JobFailed(
                        "comfy_unavailable",
                        f"ComfyUI at {self.config.label} did not answer within "
                        f"{self.ready_s:.0f} s ({exc}); check the worker's start log "
                        f"(raise {READY_ENV} for slow volumes).",
                    ) from exc
            time.sleep(wait)
            wait = min(wait * 2, 1.0)

    def _execute(
        self, job: Mapping[str, Any], request: JobRequest
    ) -> tuple[JobResult, dict[str, Any]]:
        """Submit (or reattach to) the prompt and wait until history has it."""
        prompt_id = request.prompt_id
        events: queue.Queue[Event] = queue.Queue()
        stream = EventStream(config=self.config)
        stream.subscribe(events)
        stream.start()
        try:
            stream.wait_connected(5.0)
            completion = Completion(
                client=self.client, stream=stream, poll_interval=self.poll_interval
            )
            completion.add(prompt_id)
            try:
                if self.exclusive:
                    self._cancel_orphans(prompt_id)
                state = self.client.job_state(prompt_id)
                if state is JobState.LOST:
                    self.client.submit(
                        request.workflow, prompt_id=prompt_id, client_id=stream.client_id
                    )
                    self._send(job, {"stage": "queued", "prompt_id": prompt_id})
                else:
                    log.info("%s is %s on ComfyUI already: reattaching", prompt_id, state.value)
                    completion.reconcile_soon()
            except PromptRejected as exc:
                raise JobFailed("prompt_rejected", str(exc), retry=False) from exc
            except ServerUnavailable as exc:
                raise JobFailed("comfy_unavailable", str(exc)) from exc
            result = self._wait(job, completion, events, prompt_id)
        finally:
            stream.close()
        entry = self.client.history(prompt_id) or {}
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        return result, dict(outputs or {})

    def _cancel_orphans(self, prompt_id: str) -> None:
        """Drop every other prompt from this worker's ComfyUI: a job the platform timed out or
        cancelled leaves its prompt running there, and the next job would wait behind it."""
        queued = self.client.queue()
        orphans = sorted(set(queued.running + queued.pending) - {prompt_id})
        if orphans:
            log.warning("cancelling %d prompt(s) left by earlier jobs: %s", len(orphans), orphans)
            self.client.cancel(orphans)

    def _wait(
        self,
        job: Mapping[str, Any],
        completion: Completion,
        events: queue.Queue[Event],
        prompt_id: str,
    ) -> JobResult:
        last_sent = 0.0
        silent_since: float | None = None
        while True:
            try:
                event: Event | None = events.get(timeout=0.5)
            except queue.Empty:
                event = None
            try:
                outcomes = completion.handle(event) if event is not None else []
                if not outcomes and completion.poll_due():
                    outcomes = completion.reconcile()
                silent_since = None
            except ServerUnavailable as exc:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > UNREACHABLE_S:
                    raise JobFailed("comfy_unavailable", str(exc)) from exc
                completion.reconcile_soon()
                continue
            for outcome in outcomes:
                if isinstance(outcome, Lost):
                    raise JobFailed(
                        "lost", f"ComfyUI no longer knows prompt {prompt_id} (it restarted)"
                    )
                return outcome
            now = time.monotonic()
            update = _progress_of(event, prompt_id)
            if update is not None and (update["stage"] != "sampling" or now - last_sent >= 1.0):
                last_sent = now
                self._send(job, update)

    def _send(self, job: Mapping[str, Any], update: dict[str, Any]) -> None:
        if self.progress is None:
            return
        try:
            self.progress(job, update)
        except Exception:  # progress is a courtesy; never the end of a job
            log.exception("progress update failed")


def _progress_of(event: Event | None, prompt_id: str) -> dict[str, Any] | None:
    if isinstance(event, ExecutionStart) and event.prompt_id == prompt_id:
        return {"stage": "running", "prompt_id": prompt_id}
    if isinstance(event, Executing) and event.prompt_id == prompt_id:
        return {"stage": "node", "prompt_id": prompt_id, "node": event.node}
    if isinstance(event, Progress) and event.prompt_id in (prompt_id, None):
        return {
            "stage": "sampling",
            "prompt_id": prompt_id,
            "node": event.node,
            "value": event.value,
            "max": event.max,
        }
    return None


_WORKER: ServerlessWorker | None = None


def handle(job: dict[str, Any]) -> dict[str, Any]:
    """The runpod handler: one :class:`ServerlessWorker` per process, set up from the environment.

    Progress goes through ``runpod.serverless.progress_update`` where the platform gives the
    worker somewhere to send it (``RUNPOD_WEBHOOK_POST_OUTPUT``); elsewhere it is only logged.
    """
    global _WORKER
    if _WORKER is None:
        try:
            _WORKER = ServerlessWorker.from_env(progress=_platform_progress())
        except CharpackError as exc:  # the endpoint's environment: every worker has it
            return JobFailed("worker_config", str(exc), retry=False).payload()
    return _WORKER.handle(job)


def _platform_progress() -> Progress_ | None:
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return lambda job, update: log.info("progress %s: %s", job.get("id"), update)
    from runpod.serverless import progress_update

    def send(job: Mapping[str, Any], update: dict[str, Any]) -> None:
        progress_update(dict(job), update)

    return send
