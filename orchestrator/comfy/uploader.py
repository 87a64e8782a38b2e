"""Uploads to one ComfyUI server: ``POST /upload/image`` under content-derived names.

Owns :class:`Uploader`: names come from the file's sha256 (the naming rule of
:mod:`charpack.pack.uploads`, so a plan and the real upload agree) and are remembered per server,
so each file goes up once. A run hands in the pack's :class:`~charpack.pack.uploads.Upload`
(resolved when the pack was loaded), so nothing is named twice; the bytes sent are checked
against it, so a file changed since is refused rather than sent under the old name. A bare path
is named here. Downloads are :mod:`charpack.comfy.downloads`.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
from dataclasses import replace
from pathlib import Path

from ..errors import ServerUnavailable
from ..pack.uploads import Upload, upload_for
from .transport import HttpCore

log = logging.getLogger(__name__)


class Uploader:
    """Uploads files once per server (by content) and remembers the names the server gave."""

    def __init__(self, http: HttpCore) -> None:
        self._http = http
        self._done: dict[tuple[str, str], Upload] = {}
        self._lock = threading.Lock()

    def upload(self, file: Path | Upload, *, subfolder: str | None = None) -> Upload:
        """Upload ``file`` (a path, or an upload already named) unless this server has it."""
        planned = file if isinstance(file, Upload) else upload_for(file)
        path = planned.path
        if subfolder is not None:
            planned = replace(planned, subfolder=subfolder)
        key = (planned.sha256, planned.subfolder)
        with self._lock:
            known = self._done.get(key)
        if known is not None:
            return replace(known, path=path)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != planned.sha256:
            raise OSError(
                f"{path} changed since the pack was loaded (its content no longer matches the "
                f"name {planned.filename}); run again so the pack is read afresh."
            )
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
