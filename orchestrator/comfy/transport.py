"""HTTP transport to one ComfyUI server: timeouts, retries and error mapping.

Owns the ``requests.Session``, the bounded timeouts (no call may come near the RunPod proxy's
100 s cut), the retry policy for safe requests (connection errors, 502/503/504 and Cloudflare's
52x) and the translation of transport failures into :mod:`charpack.errors`. It knows no
ComfyUI route; :mod:`charpack.comfy.client` does. ``POST /prompt`` goes through
:meth:`HttpCore.send_once`, which never retries and reports whether the request may have reached
the server.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import requests

from ..errors import AuthError, CharpackError, ServerUnavailable
from .auth import ServerConfig, install_log_redaction, redact

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({502, 503, 504, 520, 521, 522, 523, 524})
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")]+")
_SPACE_RE = re.compile(r"\s+")
EXCERPT_CHARS = 200
_EXCERPT_SCAN = 16_384  # of a body, only this much is read for an excerpt (then redacted)


class Ambiguous(CharpackError):
    """A request failed after it may have reached the server (timeout, reset, 5xx).

    ``body`` is an excerpt of a 5xx answer's body, already redacted (see :func:`excerpt`).
    Internal to the client (it decides whether to post again), yet a CharpackError like every
    exception the package raises.
    """

    def __init__(self, reason: str, status: int | None = None, body: str = "") -> None:
        self.reason = reason
        self.status = status
        self.body = body
        super().__init__(reason)


def excerpt(response: requests.Response) -> str:
    """The start of an error answer's body as one line, with every secret masked.

    Servers and proxies echo requests in error pages (``Authorization: Bearer …``), so the
    text is redacted whole before it is cut: a secret cut in half would escape the masks.
    """
    try:
        # One chunk: a streamed answer (a download) may never end.
        head = next(response.iter_content(_EXCERPT_SCAN), b"")
        text = head.decode("utf-8", "replace") if isinstance(head, bytes) else str(head)
    except (requests.RequestException, OSError, RuntimeError):
        return ""
    line = _SPACE_RE.sub(" ", "".join(c if c.isprintable() else " " for c in text)).strip()
    line = redact(line)
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


def describe(exc: BaseException) -> str:
    """A short reason for a transport failure, free of URLs (they may carry tokens)."""
    match = _ERRNO_RE.search(str(exc))
    name = type(exc).__name__
    return f"{name}: {match.group(0).strip()}" if match else name


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly did not reach the server (connect phase failed)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = repr(exc)
    return isinstance(exc, requests.ConnectionError) and (
        "NewConnectionError" in text or "NameResolutionError" in text
    )


class HttpCore:
    """Bounded, retrying HTTP to one server; every public call of the client goes through it."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        attempts: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        session: requests.Session | None = None,
    ) -> None:
        if read_timeout > 60:
            raise ValueError("read_timeout above 60 s risks the RunPod proxy's 100 s cut (524)")
        install_log_redaction()
        self.config = config
        self.timeout = (connect_timeout, read_timeout)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.session = session or requests.Session()
        self.session.headers.update(config.headers)
        self.session.trust_env = False  # proxies/netrc from the environment would bypass our auth

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        return f"{self.config.url}{path}"

    def params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**(params or {}), **self.config.query}

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter for ``attempt`` (0-based)."""
        base: float = min(self.backoff_max, self.backoff * (2**attempt))
        return base * random.uniform(0.5, 1.0)

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        data: Any = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """Send a request that is safe to repeat; retry transient failures, map the rest.

        Returns the response when its status is in ``ok``; raises :class:`AuthError` on
        401/403 and :class:`ServerUnavailable` otherwise.
        """
        what = what or f"{method} {path}"
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.delay(attempt - 1))
            try:
                response = self.session.request(
                    method,
                    self.url(path),
                    params=self.params(params),
                    json=json,
                    files=files,
                    data=data,
                    stream=stream,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                last = describe(exc)
                log.info("%s: %s failed (%s), attempt %d", self.config.label, what, last, attempt)
                continue
            if response.status_code in ok:
                return response
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                response.close()
                log.info("%s: %s answered %s, attempt %d", self.config.label, what, last, attempt)
                continue
            raise self.status_error(response, what)
        raise ServerUnavailable(
            f"{self.config.label}: {what} failed {self.attempts} times ({last}); check that the "
            "server (pod) is running and the URL is right."
        )

    def send_once(self, method: str, path: str, *, json: Any) -> requests.Response:
        """One attempt, no retry. Raises :class:`Ambiguous` when the server may have got it.

        Certain failures before the request left (connection refused, connect timeout) raise
        :class:`ServerUnavailable`; 401/403 raise :class:`AuthError`; every other status is
        returned to the caller, except 5xx, which is ambiguous.
        """
        try:
            response = self.session.request(
                method,
                self.url(path),
                params=self.params(None),
                json=json,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            if never_sent(exc):
                raise ServerUnavailable(
                    f"{self.config.label}: cannot connect ({describe(exc)}); check that the "
                    "server (pod) is running and the URL is right."
                ) from None
            raise Ambiguous(describe(exc)) from None
        if response.status_code in (401, 403):
            raise self.status_error(response, f"{method} {path}")
        if response.status_code >= 500:
            body = excerpt(response)
            response.close()
            raise Ambiguous(f"HTTP {response.status_code}", status=response.status_code, body=body)
        return response

    def status_error(self, response: requests.Response, what: str) -> Exception:
        """The error for an unexpected status (the response is consumed and closed)."""
        status = response.status_code
        body = excerpt(response) if status >= 500 else ""
        response.close()
        if status in (401, 403):
            return AuthError(
                f"{self.config.label}: {what} was refused (HTTP {status}); "
                f"{self.config.auth_hint()}."
            )
        if status >= 500:
            said = f" ({body})" if body else ""
            return ServerUnavailable(
                f"{self.config.label}: {what} answered HTTP {status}{said}; the server failed - "
                "check its log (RunPod: the pod's logs)."
            )
        return ServerUnavailable(
            f"{self.config.label}: {what} answered HTTP {status}; is {self.config.url} a "
            "ComfyUI server (and its version 0.3.75 or newer)?"
        )

    def json(self, response: requests.Response, what: str) -> Any:
        """The JSON body of ``response``, or :class:`ServerUnavailable` naming what came back."""
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown type")
            raise ServerUnavailable(
                f"{self.config.label}: {what} answered {kind}, not JSON; is {self.config.url} "
                "a ComfyUI server, not a login page or another service?"
            ) from None
