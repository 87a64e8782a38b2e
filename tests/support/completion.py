"""Wait for one prompt the way a run's server worker does: through Completion's own steps.

The run (``charpack.run.worker.ServerWorker``) never blocks on one prompt: it tracks each one with
:class:`~charpack.comfy.completion.Completion` — ``add`` + ``reconcile_soon`` before it posts,
``handle`` for every websocket event, ``reconcile`` whenever ``poll_due`` — and takes the outcomes
those return. :func:`finish` is that loop for one prompt, so the client tests exercise exactly the
calls production makes and no blocking helper that only tests would use.
"""

from __future__ import annotations

import queue
import time

from charpack.comfy.client import ComfyClient
from charpack.comfy.completion import Completion, Lost, Outcome
from charpack.comfy.events import Event
from charpack.comfy.results import JobResult
from charpack.comfy.stream import EventStream
from charpack.errors import ServerUnavailable


def finish(
    *,
    client: ComfyClient,
    prompt_id: str,
    deadline: float,
    stream: EventStream | None = None,
    poll_interval: float = 5.0,
) -> Outcome:
    """The outcome of ``prompt_id`` (its result, or :class:`Lost`); fails the test at
    ``deadline`` (a :func:`time.monotonic` value). Without ``stream`` it only polls."""
    events: queue.Queue[Event] = stream.subscribe(queue.Queue()) if stream else queue.Queue()
    tracker = Completion(client=client, stream=stream, poll_interval=poll_interval)
    tracker.add(prompt_id)
    tracker.reconcile_soon()  # it may have finished before we subscribed
    try:
        while time.monotonic() < deadline:
            outcomes: list[Outcome] = []
            if tracker.poll_due():
                try:
                    outcomes.extend(tracker.reconcile())
                except ServerUnavailable:
                    pass  # nothing decided; the worker asks again when due
            if not outcomes:
                try:
                    event = events.get(timeout=max(0.05, poll_interval / 4))
                except queue.Empty:
                    continue
                outcomes.extend(tracker.handle(event))
            for outcome in outcomes:
                assert outcome.prompt_id == prompt_id
                return outcome
        raise AssertionError(f"prompt {prompt_id} did not finish before the deadline")
    finally:
        if stream is not None:
            stream.unsubscribe(events)


def finished(
    *,
    client: ComfyClient,
    prompt_id: str,
    deadline: float,
    stream: EventStream | None = None,
    poll_interval: float = 5.0,
) -> JobResult:
    """:func:`finish` for a prompt that must not be lost: its result."""
    outcome = finish(
        client=client,
        prompt_id=prompt_id,
        deadline=deadline,
        stream=stream,
        poll_interval=poll_interval,
    )
    assert not isinstance(outcome, Lost), f"prompt {prompt_id} was lost"
    return outcome
