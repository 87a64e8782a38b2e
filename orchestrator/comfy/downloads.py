"""Downloads from one ComfyUI server: ``GET /view`` streamed to disk, bounded, cancellable.

Owns ``GET /view`` streamed in chunks into a temporary file beside the destination, hashed on
the way, then renamed into place. The server may still be writing a file it has just reported,
so a ``404`` is retried briefly, within a bounded deadline. Uploads are
:mod:`charpack.comfy.uploader`.

A server is never trusted with what lands on disk. Every download is bounded (:class:`Limits`:
bytes, seconds without a byte, seconds in all) and cancellable: a watchdog thread shuts the
socket down the moment the cancel event is set or a bound is passed, so no blocking read
outlives it by more than ``TICK_S``. While a run stops (``Limits.stopping``, the first Ctrl-C)
the downloads under way have ``STOP_GRACE_S`` from the Ctrl-C to finish; what is still coming
then is cancelled and left to the next run, so Ctrl-C takes effect within seconds whatever the
server sends. Names the server reports are checked (no control characters, no path parts)
and never become local names; the temporary file is
``.<name>.<8 hex>.part``, created with ``O_EXCL | O_NOFOLLOW`` inside folders opened one by one
without following symbolic links, and removed on every failure. A full disk raises
:class:`~charpack.errors.DiskFull` saying how much to free. :func:`fetch_sidecar` reads a
saver's sidecar and proves it is the given prompt's (waiting while an earlier prompt's file is
still in its place), :func:`download` then checks the image against the sidecar's sha256 and
size before it takes the final name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from ..errors import MissingOnServer, OutputRefused, PackFolderError, ServerUnavailable
from ..folder.integrity import FULL_ERRNOS, disk_full
from .results import OutputRef
from .transport import RETRY_STATUS, HttpCore, describe

log = logging.getLogger(__name__)

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


SIDECAR_MAX_BYTES = 4 * MB
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Limits:
    """Bounds of one download: at most ``max_bytes``; refused after ``idle_s`` without a byte
    or ``deadline_s`` in all (waiting for a 404 to clear is bounded separately)."""

    max_bytes: int = 512 * MB
    idle_s: float = 30.0
    deadline_s: float = 600.0
    cap_is: str = "what this job can produce"  # what max_bytes stands for, in messages
    stopping: StopSignal | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Expect:
    """What a downloaded file must be (from the saver's sidecar): its sha256 and size."""

    sha256: str
    size: int


class DownloadCancelled(Exception):
    """A download stopped because its cancel event was set (Ctrl-C); nothing was kept."""


@dataclass(frozen=True)
class Downloaded:
    """A file fetched from ``/view``: where it is now, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


def check_ref(ref: OutputRef, *, server: str = "the server") -> OutputRef:
    """``ref`` when its names are plain; :class:`OutputRefused` for control characters, path
    parts or an empty or absurdly long file name (a server must never choose a local path)."""
    for part, value in (("file name", ref.filename), ("subfolder", ref.subfolder),
                        ("type", ref.type)):  # fmt: skip
        bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
        if bad:
            codes = ", ".join(f"U+{ord(c):04X}" for c in bad[:4])
            raise OutputRefused(
                f"{server} reported an output whose {part} {value[:80]!r} holds control "
                f"characters ({codes}); refused. A ComfyUI server never does this: check what "
                "answers at that URL."
            )
    name = ref.filename
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or len(name.encode("utf-8", "replace")) > 255
    ):
        raise OutputRefused(
            f"{server} reported an output file name {name[:80]!r} that is not one plain file "
            "name; refused."
        )
    parts = ref.subfolder.replace("\\", "/").split("/") if ref.subfolder else []
    if any(p in (".", "..") for p in parts) or ref.subfolder.startswith("/"):
        raise OutputRefused(f"{server} reported an output subfolder {ref.subfolder!r}; refused.")
    return ref


def download(
    http: HttpCore,
    ref: OutputRef,
    dest: Path,
    *,
    not_found_s: float = 5.0,
    attempts: int = 3,
    limits: Limits | None = None,
    cancel: threading.Event | None = None,
    root: Path | None = None,
    expect: Expect | None = None,
) -> Downloaded:
    """Stream ``ref`` to ``dest`` (temp file, atomic rename); return its path, sha256 and size.

    ``root``: the folder below which no symbolic link is followed (every folder from ``root``
    to ``dest`` must be a real one; default ``dest``'s own folder). ``expect``: the sha256 and
    size the file must have, else :class:`OutputRefused` and nothing is kept. Raises
    :class:`DownloadCancelled` soon after ``cancel`` is set, :class:`DiskFull` when the disk
    fills, :class:`OutputRefused` past ``limits``.
    """
    dest = Path(dest)
    limits = limits or Limits()
    if expect is not None and expect.size < limits.max_bytes:
        limits = replace(limits, max_bytes=expect.size, cap_is="the size its sidecar gives")
    check_ref(ref, server=http.config.label)
    folder = _open_folder(root if root is not None else dest.parent, dest)
    try:
        return _download_into(
            http, ref, folder, dest, not_found_s, attempts, limits, cancel, expect
        )
    finally:
        os.close(folder)


def fetch_sidecar(
    http: HttpCore,
    ref: OutputRef,
    *,
    prompt_id: str,
    image: str,
    not_found_s: float = 5.0,
    limits: Limits | None = None,
    cancel: threading.Event | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The saver's sidecar ``ref`` (raw bytes and parsed) once it provably belongs to
    ``prompt_id`` and describes ``image``.

    The saver writes the sidecar last, so a sidecar naming this prompt means its image is
    completely written. A sidecar of another prompt (a server whose saver reuses names) is
    waited out like a 404, within ``not_found_s``; then :class:`OutputRefused`.
    """
    limits = replace(limits or Limits(), max_bytes=SIDECAR_MAX_BYTES)
    label = http.config.label
    check_ref(ref, server=label)
    what = _what(ref)
    deadline = time.monotonic() + not_found_s
    while True:
        data = bytearray()
        left = max(0.0, deadline - time.monotonic())
        _fetch(http, ref, data.extend, left, 3, limits, cancel, data.clear)
        meta = _sidecar_fields(bytes(data), label, what)
        if "prompt_id" not in meta:  # an older saver: its names are not unique per prompt
            raise OutputRefused(
                f"{label}: {what} names no prompt, so it cannot be proven to be this attempt's "
                "file; refused. The server's charpack nodes are older than this client: update "
                "them to this client's version."
            )
        theirs = meta.get("prompt_id")
        if theirs == prompt_id and meta.get("file") == image:
            return bytes(data), meta
        if time.monotonic() >= deadline:
            if theirs != prompt_id:
                raise OutputRefused(
                    f"{label}: {what} belongs to prompt {str(theirs)[:40]!r}, not to this "
                    f"attempt ({prompt_id}); refused (another run's file is in its place)."
                )
            raise OutputRefused(
                f"{label}: {what} describes {str(meta.get('file'))[:80]!r}, not {image!r}; refused."
            )
        _pause(cancel, 0.25)


def _sidecar_fields(data: bytes, label: str, what: str) -> dict[str, Any]:
    try:
        meta = json.loads(data)
    except ValueError:
        meta = None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("sha256"), str)
        or not isinstance(meta.get("size"), int)
        or isinstance(meta.get("size"), bool)
    ):
        raise OutputRefused(
            f"{label}: {what} is not a charpack sidecar (JSON with prompt_id, file, sha256 and "
            "size); refused. Update the server's charpack nodes to this client's version."
        )
    return meta


def write_file(root: Path, dest: Path, data: bytes) -> Downloaded:
    """Write ``data`` to ``dest`` below ``root`` as :func:`download` does (no symbolic link
    followed, temp file, atomic rename, :class:`DiskFull` when the disk fills)."""
    folder = _open_folder(root, dest)
    try:
        tmp = _part_name(dest.name)
        fd = _create(folder, tmp, dest)
        try:
            with os.fdopen(fd, "wb") as fh:
                _guard_write(fh.write, data, dest, len(data))
                _guard_write(lambda _: os.fsync(fh.fileno()), b"", dest, len(data))
            os.replace(tmp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            _unlink(folder, tmp)
            raise
    finally:
        os.close(folder)
    return Downloaded(path=dest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


# -- the pieces ---------------------------------------------------------------------------------


def _what(ref: OutputRef) -> str:
    return f"download of {ref.subfolder + '/' if ref.subfolder else ''}{ref.filename}"


def _pause(cancel: threading.Event | None, seconds: float) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise DownloadCancelled("download cancelled")


def _part_name(name: str) -> str:
    # The naming the next run's start cleans up after a killed run: .<name>.<8 hex>.part
    return f".{name}.{secrets.token_hex(4)}.part"


def _open_folder(root: Path, dest: Path) -> int:
    """A descriptor of ``dest``'s folder, reached from ``root`` one real folder at a time
    (created when missing); :class:`PackFolderError` for a symbolic link or a file on the way."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        rel = dest.parent.relative_to(root)
    except ValueError:
        raise ValueError(f"{dest} is not inside {root}") from None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = root
    try:
        for part in rel.parts:
            here = here / part
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if here.is_symlink() else "not a folder"
                    raise PackFolderError(
                        f"{here} is {kind}; charpack writes only into real folders inside "
                        f"the pack folder {root}. Remove it (or move it away) and run again."
                    ) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create(folder: int, tmp: str, dest: Path) -> int:
    try:
        return os.open(tmp, _CREATE, 0o644, dir_fd=folder)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise disk_full(dest, 0, what=str(dest)) from None
        raise


def _unlink(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass


def _guard_write(write: Callable[[bytes], Any], data: bytes, dest: Path, needed: int) -> None:
    try:
        write(data)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise disk_full(dest, needed, what=str(dest)) from None
        raise


def _download_into(
    http: HttpCore,
    ref: OutputRef,
    folder: int,
    dest: Path,
    not_found_s: float,
    attempts: int,
    limits: Limits,
    cancel: threading.Event | None,
    expect: Expect | None,
) -> Downloaded:
    what = _what(ref)
    needed = expect.size if expect is not None else 0
    tmp = _part_name(dest.name)
    fd = _create(folder, tmp, dest)
    try:
        with os.fdopen(fd, "wb") as fh:

            def restart() -> None:
                fh.seek(0)
                fh.truncate()

            def write(chunk: bytes) -> None:
                _guard_write(fh.write, chunk, dest, needed or limits.max_bytes)

            digest, size = _fetch(http, ref, write, not_found_s, attempts, limits, cancel, restart)
            _guard_write(lambda _: fh.flush(), b"", dest, needed)
            _guard_write(lambda _: os.fsync(fh.fileno()), b"", dest, needed)
        if expect is not None and (size != expect.size or digest != expect.sha256):
            raise OutputRefused(
                f"{http.config.label}: {what} is not the file its sidecar describes ({size} "
                f"bytes, sha256 {digest[:12]}… instead of {expect.size} bytes, "
                f"{expect.sha256[:12]}…); refused."
            )
        os.replace(tmp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink(folder, tmp)
        raise
    return Downloaded(path=dest, sha256=digest, size=size)


def _fetch(
    http: HttpCore,
    ref: OutputRef,
    write: Callable[[bytes], None],
    not_found_s: float,
    attempts: int,
    limits: Limits,
    cancel: threading.Event | None,
    restart: Callable[[], None],
) -> tuple[str, int]:
    """GET /view of ``ref`` into ``write``: waits out 404s, retries a transfer that broke off;
    returns (sha256, size)."""
    label = http.config.label
    what = _what(ref)
    params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
    deadline = time.monotonic() + not_found_s
    failures = 0
    wait = 0.05
    while True:
        response = _open_view(http, params, what, limits, cancel)
        if response.status_code == 404:
            response.close()
            if time.monotonic() >= deadline:
                raise MissingOnServer(
                    f"{label}: {what} answered 404 for {not_found_s:.0f} s; the server no "
                    "longer has the file (output folder wiped, or another server?)."
                )
            _pause(cancel, wait)
            wait = min(wait * 2, 0.5)
            continue
        try:
            return _receive(response, write, limits, cancel, label, what)
        except requests.RequestException as exc:
            failures += 1
            if failures >= attempts:
                raise ServerUnavailable(
                    f"{label}: {what} broke off {failures} times ({describe(exc)})."
                ) from None
            log.info("%s: %s broke off (%s); again", label, what, describe(exc))
            restart()


def _open_view(
    http: HttpCore,
    params: dict[str, str],
    what: str,
    limits: Limits,
    cancel: threading.Event | None,
) -> requests.Response:
    """The response of ``GET /view`` (200 or 404), waiting for its headers in short ticks so a
    cancel is noticed; transient failures are retried as :meth:`HttpCore.request` does."""
    label = http.config.label
    started = time.monotonic()
    failures = 0
    last = ""
    while True:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"{what} cancelled")
        if _stopped(limits, time.monotonic() - started):
            raise DownloadCancelled(f"{what} cancelled: the run stops and the server is silent")
        try:
            response = http.session.get(
                http.url("/view"),
                params=http.params(params),
                stream=True,
                timeout=(http.timeout[0], min(HEADER_TICK_S, limits.idle_s)),
                allow_redirects=False,
            )
        except requests.exceptions.ReadTimeout:
            if time.monotonic() - started >= limits.idle_s:
                raise OutputRefused(
                    f"{label}: {what}: the server sent no answer for {limits.idle_s:.0f} s; "
                    "refused (a busy server answers /view at once)."
                ) from None
            continue
        except requests.RequestException as exc:
            last = describe(exc)
        else:
            if response.status_code in (200, 404):
                return response
            if response.status_code not in RETRY_STATUS:
                raise http.status_error(response, what)
            last = f"HTTP {response.status_code}"
            response.close()
        failures += 1
        if failures >= http.attempts:
            raise ServerUnavailable(
                f"{label}: {what} failed {failures} times ({last}); check that the server "
                "(pod) is running and the URL is right."
            )
        _pause(cancel, http.delay(failures - 1))


def _stopped(limits: Limits, now: float) -> bool:
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
            elif _stopped(limits, now):
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


def _receive(
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
