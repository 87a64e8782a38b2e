"""Where a ComfyUI server is and how to authenticate to it; keeping those secrets out of text.

Owns :class:`ServerConfig` (base URL, auth headers, auth query parameters, display name), built
from a URL plus credentials from the environment, and the redaction helpers that every log line,
exception message and ``repr()`` of the orchestrator goes through: log records are masked by a
handler on the package's root logger ``charpack`` (and on the HTTP/websocket libraries' roots),
so no module can miss it, and by a filter on every handler the CLI installs. It does no network I/O.

Credentials (read by :meth:`ServerConfig.from_url`; they apply to HTTP and the websocket alike):

- ``CHARPACK_TOKEN``: sent as ``Authorization: Bearer <token>`` (ai-dock Caddy, ComfyUI-Login,
  our nginx), or as ``?token=<token>`` when ``CHARPACK_TOKEN_QUERY=1``;
- ``CHARPACK_BASIC_AUTH``: ``user:password`` for HTTP Basic auth (an nginx/Caddy in front);
- a URL may also carry ``user:password@`` or ``?token=``; both are moved out of the URL.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

from ..errors import ServerConfigError

TOKEN_ENV = "CHARPACK_TOKEN"
BASIC_ENV = "CHARPACK_BASIC_AUTH"
QUERY_ENV = "CHARPACK_TOKEN_QUERY"
MASK = "***"
# Every credential charpack reads from the environment: the ComfyUI server's, RunPod's, and the
# model hosts' the pod is given. A server may echo any of them back (an error page quoting the
# request's headers), so all are masked wherever server text is shown or stored.
SECRET_ENVS = (TOKEN_ENV, BASIC_ENV, "RUNPOD_API_KEY", "CIVITAI_TOKEN", "HF_TOKEN")

_SECRET_PARAMS = ("token", "access_token", "api_key", "apikey", "key", "auth", "password", "sig")
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
_PARAM_RE = re.compile(r"(?i)([?&;](?:" + "|".join(_SECRET_PARAMS) + r")=)[^&#\s'\"]+")
_AUTH_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_USERINFO_RE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(*values: str) -> None:
    """Mask these values from now on wherever :func:`redact` runs (messages, logs, repr)."""
    # Shorter values would mask ordinary text everywhere (a password "b" hides every "b"); the
    # header/parameter patterns in redact() still catch them where credentials are written.
    forms: set[str] = set()
    for value in values:
        if len(value) >= 4:
            # As sent in a query string (?token=a%2Fb) or form body (a+b): a server may echo
            # the request line rather than the decoded value.
            forms.update((value, quote(value, safe=""), quote_plus(value), quote(value)))
    with _secrets_lock:
        _secrets.update(forms)
    if forms:
        install_log_redaction()  # whatever command registered it, its logs are masked from now


def register_env_secrets(env: Mapping[str, str] | None = None) -> None:
    """Mask every credential of :data:`SECRET_ENVS` set in ``env`` (default ``os.environ``):
    the value, and for ``CHARPACK_BASIC_AUTH`` also the password alone and the base64 form the
    ``Authorization: Basic`` header carries."""
    env = os.environ if env is None else env
    for name in SECRET_ENVS:
        value = env.get(name, "").strip()
        if not value:
            continue
        register_secret(value)
        if name == BASIC_ENV:
            register_secret(value.partition(":")[2], base64.b64encode(value.encode()).decode())


def redact(text: str) -> str:
    """``text`` with known secrets, auth header values, token parameters and passwords masked."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _USERINFO_RE.sub(rf"\1:{MASK}@", text)
    text = _PARAM_RE.sub(rf"\1{MASK}", text)
    return _AUTH_RE.sub(rf"\1 {MASK}", text)


def redact_url(url: str) -> str:
    """A URL safe to show: password and token-like query values masked."""
    return redact(url)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with the values of credential headers masked."""
    return {k: MASK if k.lower() in _SECRET_HEADERS else redact(v) for k, v in headers.items()}


class _RedactingFilter(logging.Filter):
    """Masks a record in place (message, arguments, traceback text); lets every record pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as logging does
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class _RedactingHandler(logging.Handler):
    """Sits on a package's root logger and masks each record of the package, and of every module
    under it, in place, before the handlers further up (the root logger's) see it.

    A logger's filters only see the records logged on that very logger, not its children's;
    the handlers of a logger see the records of all its children. So one handler on
    ``charpack`` covers every ``charpack.*`` module, including one added or moved later.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        _FILTER.filter(record)
        last = logging.lastResort
        # This handler counts as one, so logging would no longer fall back to lastResort (a
        # warning printed on stderr when nothing is configured): do what it would have done.
        if last is not None and record.levelno >= last.level and not _other_handlers(record):
            last.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() is used
        pass


def _other_handlers(record: logging.LogRecord) -> bool:
    """Whether a handler other than a redacting one will see ``record`` on its way up."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(not isinstance(h, _RedactingHandler) for h in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


_FILTER = _RedactingFilter()
# The package roots whose records are masked wherever they go: charpack's own, and the HTTP and
# websocket libraries it uses (urllib3 logs "GET /view?token=..." at DEBUG). Roots, not modules:
# every logger below one is covered.
_PACKAGE_ROOTS = ("charpack", "urllib3", "requests", "websocket")


def log_redaction_filter() -> logging.Filter:
    """The filter that masks secrets in a record: put it on every handler that writes logs."""
    return _FILTER


def install_log_redaction() -> None:
    """Mask secrets in the records of charpack and the HTTP/websocket libraries wherever they go,
    and in every record the root logger's handlers write (idempotent).

    A redacting handler on each package root masks the package's records before any handler
    above sees them; a filter on a handler sees the records of every logger that reaches it, so
    the root's handlers (the CLI's among them) and lastResort mask records of any logger name.
    """
    # lastResort prints warnings when no handler is configured (a library used from a script).
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for name in _PACKAGE_ROOTS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _RedactingHandler) for h in logger.handlers):
            logger.addHandler(_RedactingHandler())


# At import, so the records of a script that never configures a server are masked too.
install_log_redaction()


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ServerConfigError(f"{name}={value!r} is not a switch; set it to 1 (on) or 0 (off).")


def _clean(value: str, source: str, *, spaces: bool = False) -> str:
    if any((c.isspace() and not (spaces and c == " ")) or ord(c) < 32 for c in value):
        raise ServerConfigError(
            f"{source} contains whitespace or control characters; set it to the bare credential."
        )
    return value


@dataclass(frozen=True)
class ServerConfig:
    """One ComfyUI server: base URL without credentials, auth headers and auth query parameters.

    ``headers`` and ``query`` are sent with every HTTP request and the websocket handshake.
    ``repr()`` and :attr:`label` never show their values. Build one with :meth:`from_url`.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    credential_source: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerConfigError(
                f"server URL {redact(self.url)!r} is not an http(s) URL; write it as "
                "https://<pod-id>-8188.proxy.runpod.net or http://127.0.0.1:8188."
            )
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ServerConfigError(
                "ServerConfig.url must carry no credentials, query or fragment; "
                "use ServerConfig.from_url() to move them into headers/query."
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "query", MappingProxyType(dict(self.query)))
        if not self.name:
            object.__setattr__(self, "name", parts.netloc)
        register_secret(*self.headers.values(), *self.query.values())
        for value in self.headers.values():
            if " " in value:
                register_secret(value.split(" ", 1)[1])

    @classmethod
    def from_url(
        cls, url: str, *, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Parse ``url`` and take credentials from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        register_env_secrets(env)
        url = url.strip()
        if "://" not in url:
            raise ServerConfigError(
                f"server URL {redact(url)!r} has no scheme; write https://{redact(url)} "
                "(or http:// for a server on this machine)."
            )
        parts = urlsplit(url)
        if parts.scheme in ("ws", "wss"):
            raise ServerConfigError(
                f"server URL {redact(url)!r} is a websocket URL; give the http(s) URL "
                "(the websocket address is derived from it)."
            )
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        source: list[str] = []
        extra = dict(parse_qsl(parts.query, keep_blank_values=True))
        url_token = extra.pop("token", None)
        if extra or parts.fragment:
            raise ServerConfigError(
                f"server URL {redact(url)!r} has query parameters or a fragment other than "
                "token=; give only scheme://host[:port][/path]."
            )
        token = _clean(env.get(TOKEN_ENV, "").strip(), TOKEN_ENV)
        basic = _clean(env.get(BASIC_ENV, "").strip(), BASIC_ENV, spaces=True)
        as_query = _flag(env, QUERY_ENV)
        if url_token is not None:
            if token:
                raise ServerConfigError(
                    f"both the URL's token= and {TOKEN_ENV} are set; keep only one of them."
                )
            query["token"] = _clean(url_token, "the URL's token= parameter")
            source.append("the URL's token= parameter")
        if parts.username is not None:
            if basic:
                raise ServerConfigError(
                    f"both the URL's user:password@ and {BASIC_ENV} are set; keep only one."
                )
            basic = f"{parts.username}:{parts.password or ''}"
            source.append("the URL's user:password@")
        elif basic:
            source.append(BASIC_ENV)
        if basic and ":" not in basic:
            raise ServerConfigError(f"{BASIC_ENV} must look like user:password (one colon).")
        if as_query and not token:
            raise ServerConfigError(f"{QUERY_ENV}=1 sends {TOKEN_ENV} as ?token=; set {TOKEN_ENV}.")
        if token and basic and not as_query:
            raise ServerConfigError(
                f"{TOKEN_ENV} and Basic credentials both need the Authorization header; set only "
                f"one, or {QUERY_ENV}=1 to send the token as ?token= instead."
            )
        if token:
            source.append(f"{TOKEN_ENV} (as ?token=)" if as_query else TOKEN_ENV)
            if as_query:
                query["token"] = token
            else:
                headers["Authorization"] = f"Bearer {token}"
        if basic:
            register_secret(basic, basic.partition(":")[2])
            encoded = base64.b64encode(basic.encode()).decode()
            headers["Authorization"] = f"Basic {encoded}"
        netloc = parts.hostname or ""
        if ":" in netloc:  # IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        base = f"{parts.scheme}://{netloc}{parts.path}"
        return cls(
            url=base,
            headers=headers,
            query=query,
            name=name or netloc,
            credential_source=" and ".join(source) or None,
        )

    @property
    def label(self) -> str:
        """How messages name this server (never with credentials)."""
        return self.name if self.name == urlsplit(self.url).netloc else f"{self.name} ({self.url})"

    @property
    def ws_base(self) -> str:
        """The websocket URL of the server's ``/ws`` route, without query."""
        scheme = "wss" if self.url.startswith("https://") else "ws"
        return f"{scheme}://{self.url.split('://', 1)[1]}/ws"

    def ws_url(self, *, client_id: str) -> str:
        """The full websocket URL for ``client_id`` (carries the query token: never log it)."""
        return f"{self.ws_base}?{urlencode({'clientId': client_id, **self.query}, quote_via=quote)}"

    def auth_hint(self) -> str:
        """Which credential to set (or check) after a 401/403."""
        if self.credential_source:
            return f"the server refused the credential from {self.credential_source}; check it"
        return (
            f"set {TOKEN_ENV} (Bearer token) or {BASIC_ENV}=user:password; add {QUERY_ENV}=1 for "
            "servers that take the token as ?token="
        )

    def __repr__(self) -> str:
        return (
            f"ServerConfig(url={self.url!r}, name={self.name!r}, "
            f"headers={redact_headers(self.headers)!r}, "
            f"query={ {k: MASK for k in self.query}!r}, "
            f"credential_source={self.credential_source!r})"
        )

    def redact(self, value: Any) -> str:
        """``str(value)`` with this server's (and every other known) secret masked."""
        return redact(str(value))
