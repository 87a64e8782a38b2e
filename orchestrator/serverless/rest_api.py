"""RunPod's REST API v2 (``$RUNPOD_API_BASE_URL/v2/...``, default ``https://api.runpod.io``: the
host the SDK's GraphQL uses too, so tests point both at stand-ins with one variable) as
:class:`RestApi`: one session with the key set, every failure a `PodError` that says what to do.

It knows no endpoint, GPU or bill (:mod:`.endpoint`, :mod:`.pricing`); the job API
(``/run``, ``/status``) is :mod:`.jobs_api`'s.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from ..comfy.auth import redact
from ..errors import PodError
from ..pod.api import API_KEY_ENV

__all__ = ["API_BASE_ENV", "DEFAULT_API_BASE", "RestApi", "problem_of"]

API_BASE_ENV = "RUNPOD_API_BASE_URL"
DEFAULT_API_BASE = "https://api.runpod.io"


class RestApi:
    """RunPod's REST API v2 with the key set; every failure becomes a `PodError` that says what
    to do. Request bodies (which carry the worker's secrets) are never logged."""

    def __init__(self, *, api_key: str, base_url: str | None = None) -> None:
        base = base_url or os.environ.get(API_BASE_ENV, "").strip() or DEFAULT_API_BASE
        self.base = base.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            r = self._session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise PodError(
                f"cannot reach the RunPod API to {what} ({type(exc).__name__}); check the "
                "network and retry"
            ) from None
        if r.status_code in (401, 403):
            raise PodError(
                f"RunPod refused {API_KEY_ENV} while trying to {what}; check the key and its "
                "permissions (https://www.runpod.io/console/user/settings)"
            )
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise PodError(f"RunPod could not {what}: {problem_of(r)}")
        return r.json() if r.content else {}


def problem_of(r: requests.Response) -> str:
    """An RFC 9457 problem (title, status, detail, errors) as one line."""
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {r.status_code}"
    parts = [str(body.get("detail") or body.get("title") or f"HTTP {r.status_code}")]
    parts += [str(e) for e in body.get("errors") or []]
    return redact("; ".join(parts))[:500]
