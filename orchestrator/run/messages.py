"""The messages between the runner's loop and its server workers.

Owns the commands the loop gives a :class:`~charpack.run.worker.ServerWorker` (post, adopt,
forget, drain, cancel, close) and the reports a worker puts into the loop's inbox (up, down,
unusable, posted, refused, download started, finished, drained, cancelled). Plain frozen data,
so the loop and the workers share nothing mutable.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from ..comfy.results import JobResult
from ..folder.manifest import FileRecord
from .retry_rules import NoFace

# -- commands from the runner ------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Post ``graph`` under ``prompt_id`` (already recorded in the manifest)."""

    key: str
    prompt_id: str
    graph: dict[str, Any]
    scene: str
    stem: str


@dataclass(frozen=True)
class Adopt:
    """Follow a prompt an earlier run posted (resume)."""

    key: str
    prompt_id: str
    scene: str
    stem: str


@dataclass(frozen=True)
class Forget:
    """These prompts moved to other servers: stop following them, cancel them when possible."""

    prompt_ids: tuple[str, ...]


@dataclass(frozen=True)
class Drain:
    pass


@dataclass(frozen=True)
class Cancel:
    pass


class CommandInbox:
    """The loop's side of a worker (a ComfyUI server's or an endpoint's): each call puts one
    command on the worker's ``commands`` queue; its own thread carries them out."""

    commands: queue.Queue[Any]

    def submit(self, command: Submit | Adopt) -> None:
        self.commands.put(command)

    def forget(self, prompt_ids: tuple[str, ...]) -> None:
        self.commands.put(Forget(prompt_ids))

    def drain(self) -> None:
        self.commands.put(Drain())

    def cancel(self) -> None:
        self.commands.put(Cancel())


@dataclass(frozen=True)
class Close:
    pass


# -- messages to the runner --------------------------------------------------------------------


@dataclass(frozen=True)
class ServerUp:
    server: str
    version: str | None
    names: dict[str, str]  # planned upload name -> the name the server gave


@dataclass(frozen=True)
class ServerDown:
    server: str
    reason: str


@dataclass(frozen=True)
class Unusable:
    """The server refused our credentials (``auth``) or its worker broke: it gets no more jobs."""

    server: str
    message: str
    auth: bool = True


@dataclass(frozen=True)
class Posted:
    server: str
    key: str
    prompt_id: str
    at: float  # monotonic time just before the POST


@dataclass(frozen=True)
class Refused:
    server: str
    key: str
    prompt_id: str
    message: str


@dataclass(frozen=True)
class DownloadStarted:
    server: str
    key: str
    prompt_id: str


@dataclass(frozen=True)
class Finished:
    """A prompt ended: ``result`` (success or error), or lost / not downloadable (``lost``).

    ``refused`` says the server's outputs were refused (:class:`~charpack.errors.OutputRefused`:
    not this attempt's file, or not one the job can make); ``disk_full`` says the pack folder's
    disk filled while its files were written, so the run must stop without regenerating anything.
    """

    server: str
    key: str
    prompt_id: str
    result: JobResult | None = None
    lost: str | None = None
    score: float | NoFace | None = None
    rejected: bool = False  # the identity gate's verdict: the files went to rejected/
    files: list[FileRecord] = field(default_factory=list)
    refused: str | None = None
    disk_full: str | None = None
    worker_s: float | None = None  # a Serverless worker's billed seconds for this attempt


@dataclass(frozen=True)
class Drained:
    server: str


@dataclass(frozen=True)
class Cancelled:
    server: str
    prompt_ids: tuple[str, ...]
    error: str | None = None
