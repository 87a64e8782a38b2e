"""The persistent websocket to one ComfyUI server, read in a background thread.

Owns connecting to ``/ws?clientId=...`` with the server's auth headers and query token, pinging
every ``ping_interval`` seconds (Cloudflare drops sockets idle for ~100 s, and ComfyUI sends
nothing while a long node runs), noticing a dead peer (no pong), and reconnecting with backoff
until :meth:`EventStream.close`. Text frames become typed events (:mod:`charpack.comfy.events`)
delivered to every subscriber (a thread-safe queue or a callback). Binary frames are previews,
never outputs: they are counted and dropped. The websocket is a hint: after
:class:`~charpack.comfy.events.Reconnected`, callers reconcile by polling the HTTP client.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import websocket

from .auth import ServerConfig, install_log_redaction
from .events import Disconnected, Event, Reconnected, parse
from .transport import describe

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]


class EventStream:
    """One websocket per server and ``client_id``; events fan out to subscribers."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        client_id: str | None = None,
        ping_interval: float = 15.0,
        ping_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        backoff: float = 0.25,
        backoff_max: float = 10.0,
    ) -> None:
        if ping_interval > 20:
            raise ValueError("ping_interval above 20 s lets proxies drop idle websockets")
        install_log_redaction()
        self.config = config
        self.client_id = client_id or str(uuid.uuid4())
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.reconnects = 0
        self.binary_frames = 0
        self.last_error: str | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()
        self._ws: websocket.WebSocket | None = None
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout`` seconds pass; returns :attr:`connected`."""
        return self._connected.wait(timeout)

    def subscribe(self, sink: queue.Queue[Event] | Sink | None = None) -> Any:
        """Deliver every later event to ``sink`` (a new ``queue.Queue`` when omitted); returns it.

        Subscribe before submitting, so no event of the prompt can be missed.
        """
        target: Any = queue.Queue() if sink is None else sink
        with self._lock:
            self._sinks.append(target.put if isinstance(target, queue.Queue) else target)
        return target

    def unsubscribe(self, sink: queue.Queue[Event] | Sink) -> None:
        """Stop delivering to ``sink`` (a queue or callback passed to or made by subscribe)."""
        fn = sink.put if isinstance(sink, queue.Queue) else sink
        with self._lock:
            self._sinks = [s for s in self._sinks if s != fn]

    def _emit(self, event: Event) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(event)
            except Exception:  # one broken subscriber must not kill the reader thread
                log.exception("%s: event subscriber failed", self.config.label)

    def start(self) -> EventStream:
        """Start the background reader (idempotent); returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"charpack-ws-{self.config.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop reconnecting, close the socket and join the thread."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.abort()  # type: ignore[no-untyped-call]
            except Exception:  # already closed by the peer
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EventStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> websocket.WebSocket:
        ws = websocket.WebSocket(enable_multithread=True)
        # No Origin header: ComfyUI's origin check compares it with Host, which proxies rewrite.
        ws.connect(  # type: ignore[no-untyped-call]
            self.config.ws_url(client_id=self.client_id),
            header=[f"{k}: {v}" for k, v in self.config.headers.items()],
            timeout=self.connect_timeout,
            suppress_origin=True,
            http_no_proxy=["*"],  # like the HTTP session: environment proxies are not used
        )
        return ws

    def _delay(self, failures: int) -> float:
        base: float = min(self.backoff_max, self.backoff * 2.0**failures)
        return base * random.uniform(0.5, 1.0)

    def _run(self) -> None:
        failures = 0
        ever = False
        while not self._stop.is_set():
            try:
                ws = self._connect()
            except Exception as exc:
                self.last_error = self._reason(exc)
                delay = self._delay(failures)
                failures += 1
                log.info("%s: websocket connect failed (%s); retry in %.1f s",
                         self.config.label, self.last_error, delay)  # fmt: skip
                self._stop.wait(delay)
                continue
            self._ws = ws
            reason = "closed"
            if not self._stop.is_set():
                self._connected.set()
                if ever:
                    self.reconnects += 1
                    log.info("%s: websocket reconnected (%d)", self.config.label, self.reconnects)
                    self._emit(Reconnected(self.config.name, time.monotonic(), self.reconnects))
                ever = True
                opened = time.monotonic()
                reason = self._read(ws)
                self._connected.clear()
                # A socket that dies at once (a proxy accepting then dropping) must not turn
                # into a tight reconnect loop: short-lived connections count as failures.
                failures = failures + 1 if time.monotonic() - opened < 5.0 else 0
            self._ws = None
            try:
                ws.abort()  # type: ignore[no-untyped-call]
            except Exception:  # the socket is already gone
                pass
            ws.shutdown()  # type: ignore[no-untyped-call]
            if self._stop.is_set():
                break
            self.last_error = reason
            log.info("%s: websocket dropped (%s)", self.config.label, reason)
            self._emit(Disconnected(self.config.name, time.monotonic(), reason))
            self._stop.wait(self._delay(max(0, failures - 1)))

    def _read(self, ws: websocket.WebSocket) -> str:
        """Read frames until the socket dies or close() is called; returns why it ended."""
        tick = min(1.0, self.ping_interval / 2)
        ws.settimeout(tick)
        last_ping = time.monotonic()
        awaiting: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if awaiting is not None and now - awaiting > self.ping_timeout:
                return f"no pong for {self.ping_timeout:g} s"
            if awaiting is None and now - last_ping >= self.ping_interval:
                try:
                    ws.ping()
                except Exception as exc:
                    return self._reason(exc)
                last_ping = awaiting = now
            try:
                opcode, frame = ws.recv_data_frame(True)
            except (TimeoutError, websocket.WebSocketTimeoutException):
                continue
            except Exception as exc:
                return self._reason(exc)
            received = time.monotonic()
            awaiting = None  # any frame proves the peer alive
            if opcode == websocket.ABNF.OPCODE_TEXT:
                event = parse(frame.data, server=self.config.name, received=received)
                if event is not None:
                    self._emit(event)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                self.binary_frames += 1
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed by the server"
        return "closed"

    def _reason(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return f"HTTP {status} on the websocket handshake; {self.config.auth_hint()}"
        if status is not None:
            return f"HTTP {status} on the websocket handshake"
        return self.config.redact(describe(exc))
