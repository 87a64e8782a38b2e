"""Writing pack images off ComfyUI's execution thread: a bounded background writer.

Why: core ``SaveImage`` converts and PNG-encodes on the execution thread, so a 3328×4864 image
costs the GPU seconds of idle time per job (``bench/SAVE.md``). Here the node hands a
:class:`SaveJob` (the 8-bit pixels, or a tensor, paths, metadata) to one lazily started daemon
thread and returns. The thread converts a tensor to 8 bit, encodes (``png.encode_png``), hashes,
writes the PNG under a temporary name and renames it into place (a reader never sees half a
file), then writes the ``<stem>.json`` sidecar the same way, LAST: a sidecar that names the
prompt proves its image is complete and is that prompt's. A client that reads ``/history``
before the renames gets a 404 from ``/view`` for a moment and waits it out.

Temporary files are ``.<file>.<8 hex>.part``, opened with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a
name nobody can predict, and a symlink or file planted there is never followed or truncated.

Bounded: at most ``MAX_PENDING`` images wait; a further submit blocks (backpressure) so memory
stays flat when the disk is slow. A write that fails is logged and reported by the next submit
(the node then fails with that message), and pending images are flushed at interpreter exit.
Owns no ComfyUI imports; torch is imported only to convert a tensor.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .images import to_uint8
from .paths import PackPaths
from .png import encode_png

log = logging.getLogger("charpack_nodes.save")

MAX_PENDING = 2
EXIT_FLUSH_S = 120.0


class WriteFailed(RuntimeError):
    """An earlier background write failed; the message says which file and why."""


@dataclass(frozen=True)
class SaveJob:
    """One image to write: pixels (tensor or array), where, PNG text chunks and sidecar fields."""

    image: Any
    paths: PackPaths
    text: tuple[tuple[str, str], ...]
    sidecar: dict[str, Any]
    compress_level: int
    submitted: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Written:
    """What the writer put on disk for one job."""

    png: str
    sidecar: str
    sha256: str
    size: int
    encode_s: float


def write_job(job: SaveJob) -> Written:
    """Convert, encode and write one job (PNG first, sidecar second), atomically each."""
    started = time.monotonic()
    pixels = to_uint8(job.image)
    data = encode_png(pixels, text=job.text, compress_level=job.compress_level)
    encode_s = time.monotonic() - started
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(job.paths.folder, exist_ok=True)
    atomic_write(job.paths.png, data)
    sidecar = dict(job.sidecar)
    sidecar.update(
        file=job.paths.png_name,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        sha256=digest,
        size=len(data),
    )
    text = json.dumps(sidecar, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(job.paths.sidecar, text.encode("utf-8"))
    return Written(job.paths.png, job.paths.sidecar, digest, len(data), encode_s)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_CREATE |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def part_name(path: str) -> str:
    """A fresh temporary name beside ``path``: ``.<name>.<8 hex>.part``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` under a fresh temporary name beside ``path``, then rename it into place
    (replacing an earlier file atomically: a reader sees the old file or the new one, whole)."""
    part = part_name(path)
    fd = os.open(part, _CREATE, 0o644)  # never follows or reuses what is already there
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # rename replaces a symlink at ``path`` itself; it never writes through one
        os.replace(part, path)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


class BackgroundWriter:
    """One daemon thread writing :class:`SaveJob` s in order; started on the first submit."""

    def __init__(self, *, max_pending: int = MAX_PENDING) -> None:
        self._queue: queue.Queue[SaveJob] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[str] = []
        self.written: int = 0

    def submit(self, job: SaveJob) -> None:
        """Queue ``job``; blocks while ``max_pending`` jobs wait. Raises :class:`WriteFailed`
        when an earlier job could not be written (so the failure reaches a user)."""
        self._raise_failures()
        self._ensure_thread()
        started = time.monotonic()
        self._queue.put(job)
        waited = time.monotonic() - started
        if waited > 0.01:
            log.info(
                "pack saver: waited %.2f s for the writer to catch up (disk slower than "
                "the pipeline)",
                waited,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is written; False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def failures(self) -> list[str]:
        with self._lock:
            return list(self._failures)

    def _raise_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise WriteFailed("; ".join(failures))

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name="charpack-pack-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                written = write_job(job)
                self.written += 1
                log.debug(
                    "saved %s (%d bytes, encoded in %.2f s, %.2f s after submit)",
                    written.png,
                    written.size,
                    written.encode_s,
                    time.monotonic() - job.submitted,
                )
            except Exception as exc:  # reported to the next submit: never lost silently
                message = f"{job.paths.png} could not be written ({exc!r})"
                log.error("pack saver: %s", message)
                with self._lock:
                    self._failures.append(message)
            finally:
                self._queue.task_done()


_WRITER: BackgroundWriter | None = None
_WRITER_LOCK = threading.Lock()


def writer() -> BackgroundWriter:
    """The process-wide writer (created on first use; nothing runs at import)."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is None:
            _WRITER = BackgroundWriter()
            atexit.register(_flush_at_exit, _WRITER)
        return _WRITER


def _flush_at_exit(w: BackgroundWriter) -> None:
    # A server stopped with Ctrl-C must not drop images it already reported as saved.
    if not w.flush(EXIT_FLUSH_S):
        log.error("pack saver: images were still being written after %.0f s at exit", EXIT_FLUSH_S)
