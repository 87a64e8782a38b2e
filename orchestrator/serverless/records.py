"""What an :class:`~charpack.serverless.backend.EndpointWorker` records of each attempt's RunPod
job: :class:`EndpointJob` in memory (its ids, where it stands, what RunPod billed) and
``serverless-jobs.jsonl`` in the pack folder (:class:`Journal`: prompt id → job id, so a resumed
run polls the jobs a killed one queued).

It decides nothing about the jobs (:mod:`.polling` and :mod:`.backend` do).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL", "EndpointJob", "Journal"]

log = logging.getLogger(__name__)

JOURNAL = "serverless-jobs.jsonl"


@dataclass
class EndpointJob:
    """One attempt queued (or to be queued) on the endpoint."""

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
