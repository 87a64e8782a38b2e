"""The HTTP client of one ComfyUI server.

Owns every ComfyUI route the orchestrator calls (health, node and model listings, submit, queue,
history, interrupt/cancel, uploads, downloads) and the rule that ``POST /prompt`` is never
blindly re-posted: the caller picks the ``prompt_id`` and records it first; after an ambiguous
failure the client looks for that id in ``/queue`` and ``/history`` before posting again.
It does not follow progress (:mod:`charpack.comfy.stream`) or decide when a prompt is done
(:mod:`charpack.comfy.completion`); it holds no state except the uploads it made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import MissingOnServer, PromptNotTaken, ServerUnavailable
from ..pack.uploads import Upload
from .auth import ServerConfig
from .downloads import Expect, download, fetch_sidecar
from .landing import Downloaded
from .limits import Limits
from .rejections import rejection
from .results import (
    JobResult,
    JobState,
    OutputRef,
    Queue,
    Submitted,
    check_prompt_id,
    parse_history,
)
from .transport import Ambiguous, HttpCore
from .uploader import Uploader

log = logging.getLogger(__name__)


class ComfyClient:
    """Bounded, retrying HTTP access to one ComfyUI server.

    Holds no per-call state, so threads may share one client (urllib3's pool is thread-safe).
    """

    def __init__(
        self,
        *,
        config: ServerConfig,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        attempts: int = 4,
        backoff: float = 0.5,
        submit_attempts: int = 3,
        settle_s: float = 1.0,
    ) -> None:
        self.config = config
        self.http = HttpCore(
            config=config,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
            backoff=backoff,
        )
        self.submit_attempts = max(1, submit_attempts)
        self.settle_s = settle_s
        self._uploader = Uploader(self.http)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ComfyClient({self.config.label!r})"

    def _get(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.http.json(self.http.request("GET", path, what=what, params=params), what)

    # -- read-only ---------------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: versions and devices; the health probe."""
        return dict(self._get("/system_stats", "health check (/system_stats)"))

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """``GET /object_info`` (or one class; ``{}`` when the server lacks it)."""
        path = "/object_info" if class_type is None else f"/object_info/{class_type}"
        return dict(self._get(path, f"GET {path}"))

    def models(self, folder: str) -> list[str]:
        """File names in ``models/<folder>`` on the server (``/models/<folder>``)."""
        response = self.http.request("GET", f"/models/{folder}", ok=(200, 404))
        if response.status_code == 404:
            response.close()
            raise MissingOnServer(
                f"{self.config.label}: the server has no model folder {folder!r}; install the "
                "node pack that registers it (see GET /models for the folders it has)."
            )
        return [str(f) for f in self.http.json(response, f"GET /models/{folder}")]

    def queue(self) -> Queue:
        """``GET /queue`` reduced to prompt ids."""
        body = self._get("/queue", "GET /queue")

        def ids(items: Any) -> tuple[str, ...]:
            return tuple(str(i[1]) for i in items or () if isinstance(i, list) and len(i) > 1)

        return Queue(running=ids(body.get("queue_running")), pending=ids(body.get("queue_pending")))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The raw ``/history/{id}`` entry, or ``None`` while pending/running/unknown."""
        body = self._get(f"/history/{prompt_id}", "GET /history")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def result(self, prompt_id: str) -> JobResult | None:
        """The parsed history entry of ``prompt_id``, or ``None`` when there is none yet."""
        entry = self.history(prompt_id)
        return None if entry is None else parse_history(prompt_id, entry)

    def fetch_result(self, prompt_id: str, *, retry_s: float = 5.0) -> JobResult | None:
        """:meth:`result`, retried briefly: history can lag the websocket's end marker."""
        deadline = time.monotonic() + retry_s
        wait = 0.05
        while True:
            found = self.result(prompt_id)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def job_state(self, prompt_id: str) -> JobState:
        """pending / running / done / lost, from history and queue (history read twice so a
        prompt that finishes between the two reads is not mistaken for lost)."""
        if self.history(prompt_id) is not None:
            return JobState.DONE
        queue = self.queue()
        if prompt_id in queue.running:
            return JobState.RUNNING
        if prompt_id in queue.pending:
            return JobState.PENDING
        return JobState.DONE if self.history(prompt_id) is not None else JobState.LOST

    # -- submitting and stopping -------------------------------------------------------------

    def submit(
        self,
        graph: Mapping[str, Any],
        *,
        prompt_id: str,
        client_id: str,
        extra_data: Mapping[str, Any] | None = None,
        number: float | None = None,
    ) -> Submitted:
        """Queue ``graph`` under the caller's ``prompt_id``; never queues it twice.

        Raises :class:`PromptRejected` (400, or 200 with ``node_errors``: the partly queued
        prompt is then cancelled), :class:`AuthError`, :class:`PromptNotTaken` when every try
        answered 5xx and history and queue show it was not queued (posting it again later is
        safe), or :class:`ServerUnavailable` when the server cannot be reached or it stays
        unknown whether the prompt was queued.
        """
        check_prompt_id(prompt_id)
        body: dict[str, Any] = {
            "prompt": dict(graph),
            "client_id": client_id,
            "prompt_id": prompt_id,
            "extra_data": dict(extra_data or {}),
        }
        if number is not None:
            body["number"] = number
        last = ""
        maybe_sent = False
        storm = True  # every answer so far was a 5xx, and nothing was queued after any of them
        last_5xx: Ambiguous | None = None
        first_5xx: float | None = None
        answers = 0
        for attempt in range(self.submit_attempts):
            if attempt:
                time.sleep(self.http.delay(attempt - 1))
            at = time.monotonic()
            try:
                response = self.http.send_once("POST", "/prompt", json=body)
            except ServerUnavailable as exc:  # never reached the server: posting again is safe
                last = str(exc)
                continue
            except Ambiguous as exc:
                last, maybe_sent = exc.reason, True
                state = self._settle(prompt_id)
                log.info(
                    "%s: POST /prompt %s: %s; on server: %s",
                    self.config.label,
                    prompt_id,
                    exc.reason,
                    state,
                )
                if state not in (None, JobState.LOST):
                    return Submitted(prompt_id=prompt_id, number=None, recovered=True)
                if state is None:
                    storm = False
                    break  # cannot tell; posting again could run it twice
                if exc.status is not None and exc.status >= 500:
                    last_5xx, first_5xx, answers = exc, first_5xx or at, answers + 1
                else:
                    storm = False  # a timeout or reset: the answer was lost, not refused
                continue
            return self._accepted(response, prompt_id)
        if not maybe_sent:
            raise ServerUnavailable(last)
        if storm and last_5xx is not None and first_5xx is not None:
            # Every try answered 5xx and history and queue showed nothing queued after each:
            # the server refuses prompts (a 500 storm); it did not lose one.
            raise self._not_taken(last_5xx, first_5xx, tries=answers)
        raise ServerUnavailable(
            f"{self.config.label}: could not submit prompt {prompt_id} ({last}). It may still "
            "be queued: check job_state() before submitting it again."
        )

    def _not_taken(self, answer: Ambiguous, since: float, *, tries: int) -> PromptNotTaken:
        status = answer.status or 500
        said = answer.body or "no body"
        seconds = time.monotonic() - since
        return PromptNotTaken(
            f"{self.config.label} answered {status} to POST /prompt for {seconds:.0f} s "
            f"({tries} tries, nothing queued): {said}",
            status=status,
            body=answer.body,
            since=since,
        )

    def _settle(self, prompt_id: str) -> JobState | None:
        """The prompt's state after an ambiguous POST; ``None`` when the server cannot tell."""
        try:
            state = self.job_state(prompt_id)
            if state is JobState.LOST:
                time.sleep(self.settle_s)  # the POST may still be validating on the server
                state = self.job_state(prompt_id)
            return state
        except ServerUnavailable:
            return None

    def _accepted(self, response: Any, prompt_id: str) -> Submitted:
        if response.status_code not in (200, 400):
            raise self.http.status_error(response, "POST /prompt")
        body = self.http.json(response, "POST /prompt")
        if response.status_code == 400 or body.get("node_errors"):
            queued = response.status_code == 200
            if queued:
                try:
                    self.cancel([prompt_id])
                except ServerUnavailable as exc:  # the rejection is the news; keep it
                    log.warning("%s: could not cancel %s: %s", self.config.label, prompt_id, exc)
            raise rejection(
                body,
                server=self.config.label,
                prompt_id=prompt_id,
                models=self.models,
                queued=queued,
            )
        if body.get("prompt_id") not in (None, prompt_id):
            # Servers older than mid-2025 ignore a client-chosen id; resubmission safety is lost.
            log.warning("%s: server chose its own prompt id %s instead of %s; upgrade ComfyUI",
                        self.config.label, body.get("prompt_id"), prompt_id)  # fmt: skip
        return Submitted(
            prompt_id=str(body.get("prompt_id") or prompt_id), number=body.get("number")
        )

    def interrupt(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` if it is the one running (never a global interrupt)."""
        self.http.request("POST", "/interrupt", json={"prompt_id": check_prompt_id(prompt_id)})

    def cancel(self, prompt_ids: Iterable[str]) -> None:
        """Drop the pending ones from the queue, then interrupt any of them that runs."""
        ids = [check_prompt_id(p) for p in prompt_ids]
        if not ids:
            return
        self.http.request("POST", "/queue", json={"delete": ids})
        for running in set(self.queue().running) & set(ids):
            self.interrupt(running)

    # -- files -------------------------------------------------------------------------------

    def upload_image(self, path: Path | str | Upload, *, subfolder: str | None = None) -> Upload:
        """Upload ``path`` once per server under its content-derived name; returns the name
        to use (``Upload.image_value`` is what ``LoadImage`` takes). An :class:`Upload` (a
        pack's, already named) is sent under that name, not named again."""
        return self._uploader.upload(
            path if isinstance(path, Upload) else Path(path), subfolder=subfolder
        )

    @property
    def uploaded(self) -> tuple[Upload, ...]:
        """The uploads this client made (or found already made)."""
        return self._uploader.uploaded

    def download(
        self,
        ref: OutputRef,
        dest_path: Path | str,
        *,
        not_found_s: float = 5.0,
        limits: Limits | None = None,
        cancel: threading.Event | None = None,
        root: Path | None = None,
        expect: Expect | None = None,
    ) -> Downloaded:
        """Stream an output to ``dest_path`` (temp file + atomic rename): path, sha256, size.

        Bounded by ``limits``, stopped soon after ``cancel`` is set, no symbolic link followed
        below ``root``, checked against ``expect``: see
        :func:`charpack.comfy.downloads.download`.
        """
        return download(
            self.http,
            ref,
            Path(dest_path),
            not_found_s=not_found_s,
            limits=limits,
            cancel=cancel,
            root=root,
            expect=expect,
        )

    def fetch_sidecar(
        self,
        ref: OutputRef,
        *,
        prompt_id: str,
        image: str,
        not_found_s: float = 5.0,
        limits: Limits | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[bytes, dict[str, Any]]:
        """The saver's sidecar of ``image`` once it provably is ``prompt_id``'s (raw, parsed)."""
        return fetch_sidecar(
            self.http,
            ref,
            prompt_id=prompt_id,
            image=image,
            not_found_s=not_found_s,
            limits=limits,
            cancel=cancel,
        )
