"""Downloads from one ComfyUI server: ``GET /view`` of an output, checked and proven.

Owns what is fetched: ``GET /view`` streamed in chunks into a temporary file beside the
destination, hashed on the way, then renamed into place. The server may still be writing a file
it has just reported, so a ``404`` is retried briefly, within a bounded deadline; a transfer
that breaks off is fetched again. Names the server reports are checked (:func:`check_ref`: no
control characters, no path parts) and never become local names. :func:`fetch_sidecar` reads a
saver's sidecar and proves it is the given prompt's (waiting while an earlier prompt's file is
still in its place), :func:`download` then checks the image against the sidecar's sha256 and
size before it takes the final name.

The bounds (bytes, silence, time, Ctrl-C) and the watchdog that holds them are
:mod:`charpack.comfy.limits`; where the bytes land (real folders, ``.part`` file, atomic
rename, full disk) is :mod:`charpack.comfy.landing`. Uploads are :mod:`charpack.comfy.uploader`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from ..errors import MissingOnServer, OutputRefused, ServerUnavailable
from .landing import Downloaded, create, guard_write, open_folder, part_name, unlink
from .limits import HEADER_TICK_S, MB, DownloadCancelled, Limits, receive, stopped
from .results import OutputRef
from .transport import RETRY_STATUS, HttpCore, describe

log = logging.getLogger(__name__)

SIDECAR_MAX_BYTES = 4 * MB


@dataclass(frozen=True)
class Expect:
    """What a downloaded file must be (from the saver's sidecar): its sha256 and size."""

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
    folder = open_folder(root if root is not None else dest.parent, dest)
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
        meta = sidecar_fields(bytes(data), label, what)
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


def sidecar_fields(
    data: bytes,
    label: str,
    what: str,
    *,
    fix: str = "Update the server's charpack nodes to this client's version.",
) -> dict[str, Any]:
    """The fields of a charpack sidecar (JSON with prompt_id, file, sha256 and an int size), or
    OutputRefused naming ``what`` and ``fix``."""
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
            f"size); refused. {fix}"
        )
    return meta


# -- the pieces ---------------------------------------------------------------------------------


def _what(ref: OutputRef) -> str:
    return f"download of {ref.subfolder + '/' if ref.subfolder else ''}{ref.filename}"


def _pause(cancel: threading.Event | None, seconds: float) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise DownloadCancelled("download cancelled")


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
    tmp = part_name(dest.name)
    fd = create(folder, tmp, dest)
    try:
        with os.fdopen(fd, "wb") as fh:

            def restart() -> None:
                fh.seek(0)
                fh.truncate()

            def write(chunk: bytes) -> None:
                guard_write(fh.write, chunk, dest, needed or limits.max_bytes)

            digest, size = _fetch(http, ref, write, not_found_s, attempts, limits, cancel, restart)
            guard_write(lambda _: fh.flush(), b"", dest, needed)
            guard_write(lambda _: os.fsync(fh.fileno()), b"", dest, needed)
        if expect is not None and (size != expect.size or digest != expect.sha256):
            raise OutputRefused(
                f"{http.config.label}: {what} is not the file its sidecar describes ({size} "
                f"bytes, sha256 {digest[:12]}… instead of {expect.size} bytes, "
                f"{expect.sha256[:12]}…); refused."
            )
        os.replace(tmp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        unlink(folder, tmp)
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
            return receive(response, write, limits, cancel, label, what)
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
        if stopped(limits, time.monotonic() - started):
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
