"""Moving files to and from one ComfyUI server: content-named uploads, streamed downloads.

Owns ``POST /upload/image`` with names derived from the file's sha256 (the naming rule of
:mod:`orchestrator.uploads`, so a plan and the real upload agree) and remembered per server, and
``GET /view`` streamed in chunks into a temporary file beside the destination, hashed on the way,
then renamed into place. The server may still be writing a file it has just reported, so a
``404`` is retried briefly, within a bounded deadline.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from .client_http import HttpCore, describe
from .client_results import OutputRef
from .errors import MissingOnServer, ServerUnavailable
from .uploads import Upload, upload_for

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    """A file fetched from ``/view``: where it is now, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


class Uploader:
    """Uploads files once per server (by content) and remembers the names the server gave."""

    def __init__(self, http: HttpCore) -> None:
        self._http = http
        self._done: dict[tuple[str, str], Upload] = {}
        self._lock = threading.Lock()

    def upload(self, path: Path, *, subfolder: str | None = None) -> Upload:
        planned = upload_for(path)
        if subfolder is not None:
            planned = replace(planned, subfolder=subfolder)
        key = (planned.sha256, planned.subfolder)
        with self._lock:
            known = self._done.get(key)
        if known is not None:
            return replace(known, path=path)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != planned.sha256:
            raise OSError(f"{path} changed while it was being uploaded; try again.")
        mime = mimetypes.guess_type(planned.filename)[0] or "application/octet-stream"
        response = self._http.request(
            "POST",
            "/upload/image",
            what=f"upload of {path.name}",
            files={"image": (planned.filename, data, mime)},
            data={"type": "input", "subfolder": planned.subfolder},
            ok=(200, 413),
        )
        if response.status_code == 413:
            response.close()
            raise ServerUnavailable(
                f"{self._http.config.label}: {path} ({len(data) / 1e6:.1f} MB) is larger than "
                "the server accepts; start ComfyUI with a bigger --max-upload-size or shrink it."
            )
        body = self._http.json(response, f"upload of {path.name}")
        name = str(body.get("name") or planned.filename)
        if name != planned.filename:
            # A different file already had our content-derived name; ComfyUI renamed ours.
            log.warning("%s: upload %s stored as %s", self._http.config.label, path.name, name)
        done = replace(planned, filename=name, subfolder=str(body.get("subfolder") or ""))
        with self._lock:
            self._done[key] = done
        return done

    @property
    def uploaded(self) -> tuple[Upload, ...]:
        """Everything uploaded through this client so far."""
        with self._lock:
            return tuple(self._done.values())


def download(
    http: HttpCore,
    ref: OutputRef,
    dest: Path,
    *,
    not_found_s: float = 5.0,
    attempts: int = 3,
) -> Downloaded:
    """Stream ``ref`` to ``dest`` (atomic rename); return its path, sha256 and size."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
    what = f"download of {ref.subfolder + '/' if ref.subfolder else ''}{ref.filename}"
    deadline = time.monotonic() + not_found_s
    failures = 0
    wait = 0.05
    while True:
        response = http.request(
            "GET", "/view", what=what, params=params, stream=True, ok=(200, 404)
        )
        if response.status_code == 404:
            response.close()
            if time.monotonic() >= deadline:
                raise MissingOnServer(
                    f"{http.config.label}: {what} answered 404 for {not_found_s:.0f} s; the "
                    "server no longer has the file (output folder wiped, or another server?)."
                )
            time.sleep(wait)
            wait = min(wait * 2, 0.5)
            continue
        try:
            return _stream(response, dest)
        except requests.RequestException as exc:
            failures += 1
            if failures >= attempts:
                raise ServerUnavailable(
                    f"{http.config.label}: {what} broke off {failures} times ({describe(exc)})."
                ) from None
            log.info("%s: %s broke off (%s); again", http.config.label, what, describe(exc))


def _stream(response: requests.Response, dest: Path) -> Downloaded:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with response, tmp.open("wb") as fh:
            for chunk in response.iter_content(CHUNK):
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            expected = response.headers.get("Content-Length")
            encoded = response.headers.get("Content-Encoding") not in (None, "identity")
            if (
                not encoded
                and expected is not None
                and expected.isdigit()
                and int(expected) != size
            ):
                raise requests.exceptions.ChunkedEncodingError(f"got {size} of {expected} bytes")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Downloaded(path=dest, sha256=digest.hexdigest(), size=size)
