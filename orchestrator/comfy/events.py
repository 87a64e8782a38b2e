"""Typed events from a ComfyUI server's websocket, and their parsing.

Owns one frozen dataclass per message type the orchestrator reacts to, the :class:`Done`
completion marker (``executing`` with ``node: null`` and a prompt id: the server sends it after
the history entry is written) and the connection events :class:`Disconnected` /
:class:`Reconnected` (after which in-flight prompts must be reconciled by polling). Every event
carries ``server`` (the server's display name) and ``received`` (local ``time.monotonic()`` at
receipt), so one queue can serve many servers and timings come from one clock.
The socket itself lives in :mod:`charpack.comfy.stream`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base of every event: which server it came from and when it arrived (monotonic s)."""

    server: str
    received: float


@dataclass(frozen=True)
class Status(Event):
    """Queue length changed (also the first message after connecting, with ``sid``)."""

    queue_remaining: int | None
    sid: str | None = None


@dataclass(frozen=True)
class ExecutionStart(Event):
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class ExecutionCached(Event):
    prompt_id: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executing(Event):
    """A node started. ``prompt_id`` is ``None`` when a 0.3.75 server re-sends it on reconnect."""

    prompt_id: str | None
    node: str
    display_node: str | None = None


@dataclass(frozen=True)
class Progress(Event):
    prompt_id: str | None
    node: str | None
    value: float
    max: float


@dataclass(frozen=True)
class NodeProgress:
    value: float
    max: float
    state: str


@dataclass(frozen=True)
class ProgressState(Event):
    prompt_id: str | None
    nodes: Mapping[str, NodeProgress] = field(default_factory=dict)


@dataclass(frozen=True)
class Executed(Event):
    """An output node finished; ``output`` is its UI dict (files are references, not bytes)."""

    prompt_id: str
    node: str
    display_node: str | None
    output: Mapping[str, Any]


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    prompt_id: str
    timestamp: int | None = None


@dataclass(frozen=True)
class ExecutionError(Event):
    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str | None
    exception_message: str


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    prompt_id: str
    node_id: str | None
    node_type: str | None


@dataclass(frozen=True)
class Done(Event):
    """The prompt is finished and its history entry exists (the completion rule)."""

    prompt_id: str


@dataclass(frozen=True)
class Disconnected(Event):
    """The websocket dropped; events may be missed until :class:`Reconnected`."""

    reason: str


@dataclass(frozen=True)
class Reconnected(Event):
    """The websocket is back (``count``-th reconnect): reconcile in-flight prompts by polling."""

    count: int


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def parse(text: str | bytes, *, server: str, received: float) -> Event | None:
    """The event for one text frame, or ``None`` for unknown types and malformed frames."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, Mapping) or not isinstance(message.get("data"), Mapping):
        return None
    kind = message.get("type")
    data: Mapping[str, Any] = message["data"]
    pid = _opt(data.get("prompt_id"))
    if kind == "status":
        info = (data.get("status") or {}).get("exec_info") or {}
        remaining = info.get("queue_remaining")
        return Status(
            server,
            received,
            queue_remaining=remaining if isinstance(remaining, int) else None,
            sid=_opt(data.get("sid")),
        )
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return Done(server, received, prompt_id=pid) if pid else None
        return Executing(
            server,
            received,
            prompt_id=pid,
            node=str(node),
            display_node=_opt(data.get("display_node")),
        )
    if kind == "progress":
        return Progress(
            server,
            received,
            prompt_id=pid,
            node=_opt(data.get("node")),
            value=_num(data.get("value")),
            max=_num(data.get("max")),
        )
    if kind == "progress_state":
        nodes = {
            str(k): NodeProgress(_num(v.get("value")), _num(v.get("max")), str(v.get("state")))
            for k, v in (data.get("nodes") or {}).items()
            if isinstance(v, Mapping)
        }
        return ProgressState(server, received, prompt_id=pid, nodes=nodes)
    if pid is None:
        return None
    timestamp = data.get("timestamp") if isinstance(data.get("timestamp"), int) else None
    if kind == "execution_start":
        return ExecutionStart(server, received, prompt_id=pid, timestamp=timestamp)
    if kind == "execution_cached":
        return ExecutionCached(
            server, received, prompt_id=pid, nodes=tuple(str(n) for n in data.get("nodes") or ())
        )
    if kind == "executed":
        output = data.get("output")
        return Executed(
            server,
            received,
            prompt_id=pid,
            node=str(data.get("node")),
            display_node=_opt(data.get("display_node")),
            output=output if isinstance(output, Mapping) else {},
        )
    if kind == "execution_success":
        return ExecutionSuccess(server, received, prompt_id=pid, timestamp=timestamp)
    if kind == "execution_error":
        return ExecutionError(
            server,
            received,
            prompt_id=pid,
            node_id=_opt(data.get("node_id")),
            node_type=_opt(data.get("node_type")),
            exception_type=_opt(data.get("exception_type")),
            exception_message=str(data.get("exception_message") or "").strip(),
        )
    if kind == "execution_interrupted":
        return ExecutionInterrupted(
            server,
            received,
            prompt_id=pid,
            node_id=_opt(data.get("node_id")),
            node_type=_opt(data.get("node_type")),
        )
    return None
