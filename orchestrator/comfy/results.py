"""Typed values the client returns: submissions, queue snapshots, and finished prompts.

Owns :class:`Submitted`, :class:`Queue`, the prompt-id format check, and the parsing of a
``/history/{id}`` entry into :class:`JobResult` (success / error / interrupted, the failing node,
server-side start and end times), :class:`OutputRef` (a file the server wrote, fetched later
through ``/view``) and the UI values of output nodes that are not files (such as an identity
node's ``scores``). It also names the UI keys of charpack's saver (:data:`PACK_IMAGES`,
:data:`SIDECARS`) and tells an older saver's output apart (:func:`older_saver`). Pure data and
parsing; no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutionFailed

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_prompt_id(prompt_id: str) -> str:
    """``prompt_id`` if it is a canonical lowercase UUID (newer servers accept nothing else)."""
    if not isinstance(prompt_id, str) or not _UUID_RE.match(prompt_id):
        raise ValueError(
            f"prompt_id {prompt_id!r} is not a lowercase canonical UUID; use str(uuid.uuid4())."
        )
    return prompt_id


@dataclass(frozen=True)
class Queue:
    """The server's queue: prompt ids running now and waiting, in queue order."""

    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


@dataclass(frozen=True)
class Submitted:
    """A prompt the server accepted. ``recovered``: found on the server after an ambiguous POST."""

    prompt_id: str
    number: float | None
    recovered: bool = False


class JobState(str, enum.Enum):
    """Where a prompt is on a server (history + queue)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    LOST = "lost"


class JobStatus(str, enum.Enum):
    """How a finished prompt ended."""

    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class OutputRef:
    """A file an output node wrote: pass it to ``ComfyClient.download``."""

    filename: str
    subfolder: str
    type: str
    node_id: str
    key: str = "images"


@dataclass(frozen=True)
class NodeFailure:
    """The node that raised (or was interrupted) and what it said."""

    node_id: str | None
    node_type: str | None
    exception_type: str | None
    message: str


@dataclass(frozen=True)
class JobResult:
    """A finished prompt. ``ui`` maps output node id -> key -> values that are not files."""

    prompt_id: str
    status: JobStatus
    outputs: tuple[OutputRef, ...] = ()
    ui: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    failure: NodeFailure | None = None
    started_ms: int | None = None
    finished_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.SUCCESS

    @property
    def execution_s(self) -> float | None:
        """Server-side execution time (execution_start to the terminal event), in seconds."""
        if self.started_ms is None or self.finished_ms is None:
            return None
        return (self.finished_ms - self.started_ms) / 1000.0

    def raise_for_status(self) -> JobResult:
        """Return ``self`` when it succeeded, else raise :class:`ExecutionFailed`."""
        if self.ok:
            return self
        f = self.failure
        where = f"node {f.node_id} ({f.node_type})" if f and f.node_id else "an unknown node"
        if self.status is JobStatus.INTERRUPTED:
            message = f"prompt {self.prompt_id} was interrupted at {where}"
        else:
            detail = f"{f.exception_type}: {f.message}" if f else "no details in history"
            message = f"prompt {self.prompt_id} failed at {where}: {detail}"
        raise ExecutionFailed(
            message, node_id=f.node_id if f else None, node_type=f.node_type if f else None
        )


# CharpackSavePack's UI output: ``images`` are the editor's previews (type ``temp``, skipped by
# parse_outputs), the full-size pack files are under ``pack_images`` with their ``sidecars``.
PACK_IMAGES = "pack_images"
SIDECARS = "sidecars"
IMAGES = "images"


def older_saver(refs: tuple[OutputRef, ...]) -> str | None:
    """Why ``refs`` come from a charpack saver older than this client (its pack files under
    ``images``, beside ``sidecars``, and no ``pack_images``), else None."""
    keys = {ref.key for ref in refs}
    if PACK_IMAGES in keys or IMAGES not in keys or SIDECARS not in keys:
        return None
    return (
        "the server's Save pack node lists its files under 'images' only (charpack nodes older "
        f"than this client, which reads {PACK_IMAGES!r}); refused. Update the server's charpack "
        "nodes to this client's version."
    )


_TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


def _is_file(item: Any) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("filename"), str)


def parse_outputs(
    outputs: Mapping[str, Any], *, include_temp: bool = False
) -> tuple[tuple[OutputRef, ...], dict[str, dict[str, tuple[Any, ...]]]]:
    """Split a node-id -> UI dict (history ``outputs`` or an ``executed`` event's ``output``).

    Every key is scanned (``images``, ``gifs``, ``videos``, ``audio``, custom keys); lists of
    ``{filename, subfolder, type}`` become :class:`OutputRef` (``temp`` previews skipped unless
    asked), anything else is kept as UI values.
    """
    refs: list[OutputRef] = []
    ui: dict[str, dict[str, tuple[Any, ...]]] = {}
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, Mapping):
            continue
        for key, values in node_out.items():
            items = values if isinstance(values, list) else [values]
            if items and all(_is_file(i) for i in items):
                for item in items:
                    kind = str(item.get("type") or "output")
                    if kind == "temp" and not include_temp:
                        continue
                    refs.append(
                        OutputRef(
                            filename=item["filename"],
                            subfolder=str(item.get("subfolder") or ""),
                            type=kind,
                            node_id=str(node_id),
                            key=str(key),
                        )
                    )
            else:
                ui.setdefault(str(node_id), {})[str(key)] = tuple(items)
    return tuple(refs), ui


def parse_history(prompt_id: str, entry: Mapping[str, Any]) -> JobResult:
    """A :class:`JobResult` from one ``/history/{id}`` entry (the value under the id)."""
    refs, ui = parse_outputs(entry.get("outputs") or {})
    status_block = entry.get("status") or {}
    messages = [
        m
        for m in status_block.get("messages") or []
        if isinstance(m, list) and len(m) == 2 and isinstance(m[1], Mapping)
    ]
    started = next((m[1].get("timestamp") for m in messages if m[0] == "execution_start"), None)
    terminal = [m for m in messages if m[0] in _TERMINAL]
    last = terminal[-1] if terminal else None
    failure: NodeFailure | None = None
    if last is not None and last[0] == "execution_interrupted":
        status = JobStatus.INTERRUPTED
    elif last is not None and last[0] == "execution_error":
        status = JobStatus.ERROR
    elif status_block.get("status_str") == "error":
        status = JobStatus.ERROR
    else:
        # Servers older than the status block (2024) only have outputs: treat as success.
        status = JobStatus.SUCCESS
    if last is not None and status is not JobStatus.SUCCESS:
        data = last[1]
        failure = NodeFailure(
            node_id=None if data.get("node_id") is None else str(data["node_id"]),
            node_type=data.get("node_type"),
            exception_type=data.get("exception_type"),
            message=str(data.get("exception_message") or "").strip() or last[0],
        )
    finished = last[1].get("timestamp") if last is not None else None
    return JobResult(
        prompt_id=prompt_id,
        status=status,
        outputs=refs,
        ui=ui,
        failure=failure,
        started_ms=started if isinstance(started, int) else None,
        finished_ms=finished if isinstance(finished, int) else None,
    )
