"""The client of one RunPod Serverless queue endpoint's job API (``/v2/{endpoint_id}/…``).

Owns :class:`JobsApi`: ``POST /run`` with a per-job ``policy`` (execution timeout, ttl),
``GET /status/{id}``, ``POST /cancel/{id}`` and ``GET /health``, and the translation of what the
platform answers into charpack's errors: 401/403 → :class:`~charpack.errors.AuthError` (the API
key), 404 on the endpoint → :class:`EndpointNotFound`, **429** → :class:`Throttled` (the caller
backs off; nothing was queued), 5xx or no answer → :class:`~charpack.errors.ServerUnavailable`.
A job the endpoint no longer knows (finished more than 30 minutes ago) is ``None`` from
:meth:`JobsApi.status`, not an error: the caller asks S3 what became of it.

The API key comes from ``RUNPOD_API_KEY`` and the base URL from ``RUNPOD_ENDPOINT_BASE_URL``
(default ``https://api.runpod.ai/v2``; tests point it at a fake). It never decides what to
submit or when (:mod:`charpack.serverless.backend` does). Shapes:
``/work/shared/reference/serverless.md`` §1–3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ..comfy.auth import redact, register_secret
from ..errors import AuthError, CharpackError, ServerConfigError, ServerUnavailable

API_KEY_ENV = "RUNPOD_API_KEY"
BASE_URL_ENV = "RUNPOD_ENDPOINT_BASE_URL"
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"

IN_QUEUE, IN_PROGRESS, RUNNING = "IN_QUEUE", "IN_PROGRESS", "RUNNING"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})


class Throttled(CharpackError):
    """The endpoint answered 429: over its rate limit or its queue is full; nothing was
    queued. Retry with exponential back-off."""

    exit_code = 3


class EndpointNotFound(CharpackError):
    """The endpoint id is not one of this account's endpoints."""

    exit_code = 3


@dataclass(frozen=True)
class Policy:
    """A job's execution policy (the platform's ``policy``): milliseconds."""

    execution_timeout_ms: int = 600_000
    ttl_ms: int = 86_400_000

    def __post_init__(self) -> None:
        if self.execution_timeout_ms <= 5000:
            raise ValueError("the execution timeout must be more than 5 s (RunPod's minimum)")
        if not 10_000 <= self.ttl_ms <= 7 * 86_400_000:
            raise ValueError("the job ttl must be from 10 s to one week (RunPod's range)")

    def to_json(self) -> dict[str, int]:
        return {"executionTimeout": self.execution_timeout_ms, "ttl": self.ttl_ms}


@dataclass(frozen=True)
class EndpointJobState:
    """What ``GET /status/{id}`` says about a job."""

    id: str
    status: str
    output: Any = None
    error: str | None = None
    delay_ms: int | None = None
    execution_ms: int | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> EndpointJobState:
        error = body.get("error")
        delay, execution = body.get("delayTime"), body.get("executionTime")
        return cls(
            id=str(body.get("id") or ""),
            status=str(body.get("status") or ""),
            output=body.get("output"),
            error=None if error is None else str(error),
            delay_ms=delay if isinstance(delay, int) else None,
            execution_ms=execution if isinstance(execution, int) else None,
        )


class JobsApi:
    """One endpoint's job API; thread-safe for the backend's few threads (one session each
    would do as well: requests sessions are shared here for their connection pool)."""

    def __init__(
        self,
        endpoint_id: str,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 30.0,
    ) -> None:
        if not endpoint_id or "/" in endpoint_id or not endpoint_id.isprintable():
            raise ServerConfigError(
                f"endpoint id {endpoint_id!r} is not a RunPod endpoint id (as `charpack endpoint "
                "status` or the RunPod console shows it)"
            )
        if not api_key:
            raise ServerConfigError(f"{API_KEY_ENV} is not set: the RunPod API key is needed")
        register_secret(api_key)
        self.endpoint_id = endpoint_id
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["authorization"] = f"Bearer {api_key}"

    @classmethod
    def from_env(cls, endpoint_id: str, env: Mapping[str, str] | None = None) -> JobsApi:
        env = os.environ if env is None else env
        return cls(
            endpoint_id,
            api_key=env.get(API_KEY_ENV, "").strip(),
            base_url=env.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL,
        )

    @property
    def label(self) -> str:
        return f"endpoint {self.endpoint_id}"

    def close(self) -> None:
        self.session.close()

    # -- operations ------------------------------------------------------------------------

    def run(self, payload: Mapping[str, Any], *, policy: Policy) -> str:
        """Queue a job with ``payload`` as its input; returns the job id RunPod gave it."""
        body = self._call("POST", "run", json={"input": payload, "policy": policy.to_json()})
        job_id = body.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ServerUnavailable(f"{self.label}: /run answered without a job id: {body!r:.200}")
        return job_id

    def status(self, job_id: str) -> EndpointJobState | None:
        """The job's state, or None when the endpoint does not know it (any more)."""
        body = self._call("GET", f"status/{job_id}", missing_ok=True)
        return None if body is None else EndpointJobState.of(body)

    def cancel(self, job_id: str) -> None:
        self._call("POST", f"cancel/{job_id}", missing_ok=True)

    def health(self) -> dict[str, Any]:
        """``{"jobs": {...}, "workers": {...}}``: also the check that the key and id work."""
        return dict(self._call("GET", "health"))

    # -- the wire --------------------------------------------------------------------------

    def _call(self, method: str, op: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        url = f"{self.base_url}/{self.endpoint_id}/{op}"
        what = f"{self.label}: {method} /{op.split('/')[0]}"
        try:
            response = self.session.request(method, url, json=json, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ServerUnavailable(
                f"{what} got no answer ({type(exc).__name__}); check the network and "
                f"{BASE_URL_ENV} ({self.base_url})"
            ) from None
        status = response.status_code
        text = redact(response.text[:300])
        if status in (401, 403):
            raise AuthError(
                f"{what} answered {status}: RunPod refused the API key; set {API_KEY_ENV} to a "
                "key of the account that owns the endpoint"
            )
        if status == 429:
            raise Throttled(f"{what} answered 429 (rate limit or a full queue): {text}")
        if status == 404:
            if missing_ok:  # the endpoint answered (/health did): it does not know the job
                return None
            raise EndpointNotFound(
                f"{what} answered 404: no endpoint {self.endpoint_id!r} on this account; check "
                "the id (`charpack endpoint status`) and the API key's account"
            )
        if status >= 500:
            raise ServerUnavailable(f"{what} answered {status}: {text}")
        if status >= 400:
            raise CharpackError(f"{what} answered {status}: {text}")
        try:
            return response.json()
        except ValueError:
            raise ServerUnavailable(f"{what} answered {status} with no JSON: {text}") from None
