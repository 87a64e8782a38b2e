"""Bounds of one download and the watchdog that holds them: bytes, silence, time, Ctrl-C.

A server is never trusted with what lands on disk. Every download is bounded (:class:`Limits`:
bytes, seconds without a byte, seconds in all) and cancellable: a watchdog thread shuts the
socket down the moment the cancel event is set or a bound is passed, so no blocking read
outlives it by more than ``TICK_S``. While a run stops (``Limits.stopping``, the first Ctrl-C)
the downloads under way have ``STOP_GRACE_S`` from the Ctrl-C to finish; what is still coming
then is cancelled (:class:`DownloadCancelled`) and left to the next run, so Ctrl-C takes effect
within seconds whatever the server sends. :func:`receive` reads one streamed ``/view`` answer
under these bounds, hashing on the way. Where the bytes go is :mod:`charpack.comfy.downloads`.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from ..errors import CharpackError, OutputRefused
from .transport import describe

CHUNK = 1 << 20
MB = 1 << 20
TICK_S = 0.1  # how often the watchdog looks at a download (cancel, idle, deadline)
HEADER_TICK_S = 2.0  # read timeout while waiting for /view's headers (retried up to idle_s)
STOP_GRACE_S = 2.0  # after the first Ctrl-C, downloads under way get this long to finish


class StopSignal(threading.Event):
    """The first Ctrl-C, seen by every download of a server: remembers when it was set, so the
    grace is counted from the Ctrl-C, not from the start of each download after it."""

    def __init__(self) -> None:
        super().__init__()
        self.since: float | None = None

    def set(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
        super().set()


@dataclass(frozen=True)
class Limits:
    """Bounds of one download: at most ``max_bytes``; refused after ``idle_s`` without a byte
    or ``deadline_s`` in all (waiting for a 404 to clear is bounded separately)."""

    max_bytes: int = 512 * MB
    idle_s: float = 30.0
    deadline_s: float = 600.0
    cap_is: str = "what this job can produce"  # what max_bytes stands for, in messages
    stopping: StopSignal | None = field(default=None, compare=False)


class DownloadCancelled(CharpackError):
    """A download stopped because its cancel event was set (Ctrl-C); nothing was kept."""


def stopped(limits: Limits, now: float) -> bool:
    """True when the run stops and the grace since the Ctrl-C has run out."""
    stop = limits.stopping
    return stop is not None and stop.since is not None and now - stop.since >= STOP_GRACE_S


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (urllib3 2), to shut it down from the watchdog."""
    raw: Any = response.raw
    conn = getattr(raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    try:
        sock = raw._fp.fp.raw._sock
    except AttributeError:
        return None
    return sock if isinstance(sock, socket.socket) else None


class _Watchdog:
    """Ends a download from outside the reading thread: on cancel, idle or deadline it shuts
    the socket down, which wakes the blocked read at once."""

    def __init__(
        self, response: requests.Response, limits: Limits, cancel: threading.Event | None
    ) -> None:
        self.response = response
        self.limits = limits
        self.cancel = cancel
        self.started = self.last = time.monotonic()
        self.reason: str | None = None
        self.sock = _socket_of(response)
        if self.sock is not None:
            # Backstop only: the watchdog ends an idle download first.
            self.sock.settimeout(limits.idle_s + 5.0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charpack-dl-watch", daemon=True)
        self._thread.start()

    def tick(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        limits = self.limits
        while not self._done.wait(TICK_S):
            now = time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                self.reason = "cancel"
            elif stopped(limits, now):
                self.reason = "cancel"  # the next run downloads it
            elif now - self.last >= limits.idle_s:
                self.reason = f"no byte came for {limits.idle_s:.0f} s"
            elif now - self.started >= limits.deadline_s:
                self.reason = f"it took longer than {limits.deadline_s:.0f} s"
            else:
                continue
            self._abort()
            return

    def _abort(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self.response.close()

    def error(self, label: str, what: str) -> Exception:
        if self.reason == "cancel":
            return DownloadCancelled(f"{what} cancelled")
        return OutputRefused(f"{label}: {what} refused: {self.reason}.")


def receive(
    response: requests.Response,
    write: Callable[[bytes], None],
    limits: Limits,
    cancel: threading.Event | None,
    label: str,
    what: str,
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with response:
        expected = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding") not in (None, "identity")
        if expected is not None and expected.isdigit() and int(expected) > limits.max_bytes:
            raise OutputRefused(
                f"{label}: {what} is {int(expected)} bytes, more than {limits.cap_is} "
                f"({limits.max_bytes} bytes); refused."
            )
        watch = _Watchdog(response, limits, cancel)
        try:
            while True:
                try:
                    chunk = response.raw.read1(CHUNK, decode_content=True)
                except Exception as exc:  # urllib3's and the socket's errors alike
                    if watch.reason is not None:
                        raise watch.error(label, what) from None
                    raise requests.exceptions.ChunkedEncodingError(describe(exc)) from None
                if watch.reason is not None:
                    raise watch.error(label, what)
                if not chunk:
                    break
                watch.tick()
                size += len(chunk)
                if size > limits.max_bytes:
                    raise OutputRefused(
                        f"{label}: {what} sent more than {limits.cap_is} "
                        f"({limits.max_bytes} bytes); refused."
                    )
                write(chunk)
                digest.update(chunk)
        finally:
            watch.stop()
        if not encoded and expected is not None and expected.isdigit() and int(expected) != size:
            raise requests.exceptions.ChunkedEncodingError(f"got {size} of {expected} bytes")
    return digest.hexdigest(), size
