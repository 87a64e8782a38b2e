"""The fetch side of :class:`~charpack.serverless.backend.EndpointWorker`: a finished attempt's
output (the handler's, from ``/status`` or its ``done.json``) judged as a pod's history is, and
its files streamed from S3 into the pack folder on the fetch pool
(:func:`~charpack.serverless.results.fetch_result`: the pod downloads' integrity rules), each
reported as one :class:`~charpack.run.messages.Finished`.

:class:`ResultFetching` is a base of ``EndpointWorker`` and holds no state of its own (the
attributes below are the worker's). It neither polls nor posts (:mod:`.polling`) and spells no
S3 key (:mod:`.objects`).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..comfy.auth import redact
from ..comfy.limits import DownloadCancelled
from ..comfy.results import JobResult
from ..errors import DiskFull, OutputRefused, PackFolderError
from ..pack.packfile import IdentityGate
from ..run.fetcher import DownloadRules, score_of
from ..run.messages import DownloadStarted, Finished
from ..run.retry_rules import below, early_stop
from ..run.state import image_dir
from . import objects
from .records import EndpointJob
from .results import FetchLimits, fetch_result, result_of

if TYPE_CHECKING:
    from .backend import EndpointConfig

__all__ = ["ResultFetching"]

log = logging.getLogger(__name__)


class ResultFetching:
    """Taking a finished attempt's output and fetching its files; see the module docstring."""

    name: str
    config: EndpointConfig
    inbox: queue.SimpleQueue[Any]
    commands: queue.Queue[Any]
    folder: Path
    gate: IdentityGate
    rules: DownloadRules
    version: str | None
    _store: objects.ObjectStore | None
    _jobs: dict[str, EndpointJob]
    _outcomes: queue.Queue[Any]
    _cancel: threading.Event
    _fetches: int
    _fetch_pool: ThreadPoolExecutor

    @property
    def store(self) -> objects.ObjectStore:
        if self._store is None:
            self._store = objects.ObjectStore.from_env()
        return self._store

    def _take(self, job: EndpointJob, output: dict[str, Any]) -> None:
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
        early = early_stop(result)
        if early is not None:  # the early gate stopped it: nothing was saved, nothing to fetch
            self._jobs.pop(job.prompt_id, None)
            self.inbox.put(
                Finished(
                    *self._where(job), result=result, score=early.score, rejected=True,
                    worker_s=job.worker_s,
                )
            )  # fmt: skip
            return
        job.fetching = True
        self._fetches += 1
        self._fetch_pool.submit(self._fetch, job, result, files)

    def _where(self, job: EndpointJob) -> tuple[str, str, str]:
        return self.name, job.key, job.prompt_id

    def _fetch(self, job: EndpointJob, result: JobResult, files: Any) -> None:
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

    def _outcome(self, kind: str, job: EndpointJob) -> None:
        if kind == "fetched":
            self._fetches -= 1
            self._jobs.pop(job.prompt_id, None)
