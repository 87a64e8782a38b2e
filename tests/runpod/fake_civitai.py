"""A local stand-in for CivitAI (api/v1/model-versions and api/download) on 127.0.0.1.

CivitAI cannot be reached from tests, so this serves, on a real HTTP server (fixtures_http's
FileServer), what its documentation shows (developer.civitai.com/site/reference/model-versions):
``GET /api/v1/model-versions/<id>`` answers the version's JSON (``modelId``, ``baseModel``,
``files[]`` with ``name``, ``type``, ``sizeKB``, ``metadata.format``, ``hashes.SHA256`` in upper
case, ``downloadUrl``, ``primary``), 404 for an unknown version; the ``downloadUrl`` serves the
file's bytes to a request carrying the Bearer token and answers 401 otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .fixtures_http import FileServer


@dataclass(frozen=True)
class VersionFile:
    name: str
    data: bytes
    format: str = "SafeTensor"  # metadata.format: SafeTensor | PickleTensor | Other
    primary: bool = True
    type: str = "Model"
    listed_sha256: str | None = None  # what the API claims, when it is not the data's hash
    listed_kb: float | None = None


class FakeCivitai:
    def __init__(self, server: FileServer, token: str) -> None:
        self.server, self.token = server, token
        self.api = server.url("")

    def add_version(
        self, version_id: int, files: list[VersionFile], *, model_id: int = 897413
    ) -> dict[str, Any]:
        entries = []
        for i, f in enumerate(files):
            path = f"/api/download/models/{version_id}" + (f"?file={i}" if i else "")
            self.server.add(path, f.data, token=self.token)
            sha = f.listed_sha256 or hashlib.sha256(f.data).hexdigest()
            entries.append(
                {
                    "id": version_id * 10 + i,
                    "name": f.name,
                    "type": f.type,
                    "sizeKB": f.listed_kb if f.listed_kb is not None else len(f.data) / 1024,
                    "metadata": {"format": f.format, "size": "pruned", "fp": "fp16"},
                    "pickleScanResult": "Success",
                    "virusScanResult": "Success",
                    "hashes": {"AutoV2": sha[:10].upper(), "SHA256": sha.upper()},
                    "downloadUrl": self.server.url(path),
                    "primary": f.primary,
                }
            )
        body = {
            "id": version_id,
            "modelId": model_id,
            "name": f"v{version_id}",
            "baseModel": "SDXL 1.0",
            "status": "Published",
            "model": {"name": "BigLove XL", "type": "Checkpoint", "nsfw": False, "poi": False},
            "files": entries,
            "images": [],
            "downloadUrl": self.server.url(f"/api/download/models/{version_id}"),
        }
        self.server.add(f"/api/v1/model-versions/{version_id}", json.dumps(body).encode())
        return body

    def api_requests(self, version_id: int) -> list[Any]:
        return self.server.seen(f"/api/v1/model-versions/{version_id}")

    def downloads(self, version_id: int) -> list[Any]:
        """Requests for any file of the version."""
        prefix = f"/api/download/models/{version_id}"
        with self.server._lock:
            return [r for r in self.server.requests if r.path.split("?")[0] == prefix]
