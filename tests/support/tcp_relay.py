"""A TCP relay on 127.0.0.1 that shapes and breaks the link to a server, for tests and benchmarks.

It forwards plain TCP (HTTP and websockets alike) to a target port and can, while running:

- delay each direction by ``delay_s`` (50 ms each way is about a RunPod proxy's 100 ms RTT);
- throttle each direction to ``rate`` bytes/s (shared by all connections, like one link);
- :meth:`~TcpRelay.cut` every live connection (a proxy dropping websockets);
- :meth:`~TcpRelay.pause` forwarding without closing anything (a black-holed link: only
  pings that go unanswered reveal it) and :meth:`~TcpRelay.resume` it;
- :meth:`~TcpRelay.refuse` new connections (connection refused) and :meth:`~TcpRelay.accept`
  them again on the same port;
- answer the next matching HTTP request itself with a status (:meth:`~TcpRelay.fail_next`,
  nothing reaches the server), or forward it and lose the answer
  (:meth:`~TcpRelay.lose_next_response`: the server did the work, the client sees a 524 or a
  dropped connection).

Standard library only (threads); ``tc netem`` is not available on the project's kernels.
"""

from __future__ import annotations

import queue
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass

_REQUEST_LINE = re.compile(rb"^[A-Z]{3,7} /[^\r\n]* HTTP/1\.[01]\r\n")
_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 524: "Timeout"}


def _http_response(status: int) -> bytes:
    body = f"relay: HTTP {status}\n".encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class _Bucket:
    """Serialises chunks at ``rate`` bytes/s: each waits for the link to carry the ones before."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._free_at = 0.0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        rate = self.rate
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + n / rate
            done = self._free_at
        time.sleep(max(0.0, done - time.monotonic()))  # the simulated wire is busy


@dataclass
class _Fault:
    kind: str  # "fail" | "lose"
    status: int | None
    match: bytes | None


class _Link:
    """One client connection and its upstream twin, pumped in both directions."""

    def __init__(self, relay: TcpRelay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.lose: _Fault | None = None  # armed: the next answer on this link is lost
        self.closed = threading.Event()

    def start(self) -> None:
        """Pump both directions. Called once the relay counts the link, so that :meth:`cut`
        reaches every link whose bytes have already flowed."""
        relay, client, upstream = self.relay, self.client, self.upstream
        for src, dst, bucket, up in (
            (client, upstream, relay._up, True),
            (upstream, client, relay._down, False),
        ):
            q: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
            threading.Thread(target=self._read, args=(src, q, up), daemon=True).start()
            threading.Thread(target=self._write, args=(dst, q, bucket), daemon=True).start()

    def _read(
        self, src: socket.socket, q: queue.Queue[tuple[float, bytes] | None], up: bool
    ) -> None:
        end = False  # True: drop the whole link now (fault or error), not a clean half-close
        try:
            while not self.closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if up and _REQUEST_LINE.match(data):
                    self.relay._requests.append(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
                    fault = self.relay._take_fault(data)
                    if fault is not None and fault.kind == "fail":
                        self.client.sendall(_http_response(fault.status or 502))
                        end = True
                        break
                    if fault is not None:
                        self.lose = fault
                if not up and self.lose is not None:
                    if self.lose.status is not None:
                        self.client.sendall(_http_response(self.lose.status))
                    end = True
                    break
                q.put((time.monotonic() + self.relay.delay_s, data))
        except OSError:
            end = True
        if end:
            self.close()
        else:
            q.put(None)

    def _write(
        self, dst: socket.socket, q: queue.Queue[tuple[float, bytes] | None], bucket: _Bucket
    ) -> None:
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                due, data = item
                if self.closed.wait(max(0.0, due - time.monotonic())):
                    return
                while not self.relay._flowing.wait(0.05):  # paused: hold the bytes
                    if self.closed.is_set():
                        return
                bucket.take(len(data))
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the half-close on
        except OSError:
            self.close()
            return
        if dst is self.client:  # the server finished and everything is delivered
            self.close()

    def close(self, *, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                if reset:  # abortive close: the peer sees a connection reset
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)  # wakes our blocked reader without a FIN
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.relay._forget(self)


class TcpRelay:
    """Forward 127.0.0.1:<port> to ``target_host:target_port`` with a shapeable, breakable link.

    ``delay_s`` and ``rate`` may be changed while it runs. Use as a context manager.
    """

    def __init__(
        self,
        *,
        target_port: int,
        target_host: str = "127.0.0.1",
        delay_s: float = 0.0,
        rate: float | None = None,
        upstream_down_status: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.upstream_down_status = upstream_down_status
        self._up, self._down = _Bucket(), _Bucket()
        self.rate = rate
        self.accepted = 0
        self._links: set[_Link] = set()
        self._faults: list[_Fault] = []
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener: socket.socket | None = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def rate(self) -> float | None:
        """Bytes per second in each direction (``None``: unthrottled)."""
        return self._up.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._up.rate = self._down.rate = value

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._links)

    @property
    def requests(self) -> list[str]:
        """Heads (request line + headers) of every HTTP request seen, in order."""
        return list(self._requests)

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self.refuse()
        self.cut()
        if self._thread.is_alive():
            self._thread.join(5)

    def cut(self, *, reset: bool = False) -> int:
        """Close every live connection (RST with ``reset``); returns how many were cut."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close(reset=reset)
        return len(links)

    def pause(self) -> None:
        """Hold every byte on every connection (new ones too) without closing anything."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver the held bytes and forward again."""
        self._flowing.set()

    def refuse(self) -> None:
        """Stop listening: new connections are refused until :meth:`accept`."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop's blocked accept()
            except OSError:
                pass
            listener.close()

    def accept(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            if self._listener is None and not self._stop.is_set():
                self._listener = self._listen(self.port)

    def fail_next(self, *, status: int = 502, count: int = 1, match: str | None = None) -> None:
        """Answer the next ``count`` requests whose request line contains ``match`` with
        ``status`` and close their connection; the server never sees them."""
        with self._lock:
            self._faults += [_Fault("fail", status, match.encode() if match else None)] * count

    def lose_next_response(self, *, status: int | None = 524, match: str | None = None) -> None:
        """Forward the next matching request, then drop the server's answer: send ``status``
        instead (``None``: just close the connection)."""
        with self._lock:
            self._faults.append(_Fault("lose", status, match.encode() if match else None))

    def _take_fault(self, data: bytes) -> _Fault | None:
        line = data.split(b"\r\n", 1)[0]
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.match is None or fault.match in line:
                    return self._faults.pop(i)
        return None

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _listen(self, port: int) -> socket.socket:
        deadline = time.monotonic() + 5
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # the old listener is still being released by the kernel
                continue
            sock.listen(64)
            sock.settimeout(0.1)
            return sock

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                self._stop.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except OSError:  # timeout tick, or refuse() closed the listener
                continue
            client.settimeout(None)
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                if self.upstream_down_status is not None:
                    try:
                        client.sendall(_http_response(self.upstream_down_status))
                    except OSError:
                        pass
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
            link.start()
