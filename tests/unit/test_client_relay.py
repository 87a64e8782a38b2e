"""The TCP relay the client tests and benchmarks shape and break links with, and the client's
reaction to those breaks on the transport level (retries, websocket reconnects)."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest
import requests

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.events import Disconnected, Event, Reconnected, Status
from charpack.comfy.stream import EventStream
from charpack.errors import ServerUnavailable
from tests.support.recording_server import RecordingServer
from tests.support.tcp_relay import TcpRelay


def _config(url: str) -> ServerConfig:
    return ServerConfig.from_url(url, env={})


def test_relay_forwards_http_and_counts_requests() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        with ComfyClient(config=_config(relay.url)) as client:
            client.system_stats()
            client.system_stats()
    assert [r.split("\r\n")[0] for r in relay.requests] == ["GET /system_stats HTTP/1.1"] * 2
    assert len(server.seen) == 2


def test_get_is_retried_through_proxy_errors() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        relay.fail_next(status=524, count=1, match="/system_stats")
        relay.fail_next(status=502, count=1, match="/system_stats")
        with ComfyClient(config=_config(relay.url), backoff=0.01) as client:
            assert client.system_stats()["system"]
    assert len(relay.requests) == 3 and len(server.seen) == 1


def test_get_gives_up_with_a_named_error() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        relay.fail_next(status=503, count=3)
        cfg = ServerConfig.from_url(relay.url, name="pod-c", env={})
        with ComfyClient(config=cfg, attempts=3, backoff=0.01) as client:
            with pytest.raises(ServerUnavailable) as caught:
                client.queue()
    assert str(caught.value).startswith("pod-c (")
    assert "failed 3 times (HTTP 503)" in str(caught.value)
    assert server.seen == []


def test_lost_response_reaches_the_server_but_not_the_client() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        relay.lose_next_response(status=524)
        response = requests.get(f"{relay.url}/x", timeout=10)
    assert response.status_code == 524
    assert [s.path for s in server.seen] == ["/x"]


def test_refuse_and_accept_on_the_same_port() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        relay.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=5).close()
        relay.accept()
        assert requests.get(f"{relay.url}/y", timeout=10).status_code == 200


def _next(events: queue.Queue[Event], kind: type) -> Event:
    while True:
        event = events.get(timeout=10)
        if isinstance(event, kind):
            return event


def test_websocket_cut_is_noticed_and_reconnected() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        stream = EventStream(config=_config(relay.url), backoff=0.01)
        events: queue.Queue[Event] = stream.subscribe()  # before the first frame can arrive
        with stream:
            _next(events, Status)
            assert stream.connected
            relay.refuse()
            assert relay.cut() == 1
            gone = _next(events, Disconnected)
            assert stream.reconnects == 0
            relay.accept()
            back = _next(events, Reconnected)
            assert isinstance(back, Reconnected) and back.count == 1 == stream.reconnects
            assert gone.received <= back.received
            _next(events, Status)  # the new socket delivers events again
    ws = [s for s in server.seen if s.path.startswith("/ws")]
    assert len(ws) == 2 and ws[0].path == ws[1].path  # same clientId after the reconnect


def test_black_holed_websocket_is_detected_by_unanswered_pings() -> None:
    with RecordingServer() as server, TcpRelay(target_port=server.port) as relay:
        stream = EventStream(
            config=_config(relay.url), ping_interval=0.2, ping_timeout=0.5, backoff=0.01
        )
        events: queue.Queue[Event] = stream.subscribe()
        with stream:
            _next(events, Status)
            relay.pause()  # nothing is closed: only the missing pong shows the link is dead
            gone = _next(events, Disconnected)
            assert isinstance(gone, Disconnected) and gone.reason == "no pong for 0.5 s"
            relay.resume()
            assert isinstance(_next(events, Reconnected), Reconnected)


def test_delay_and_rate_are_applied_lower_bounds() -> None:
    # Lower bounds only: a shaped link can never be faster than its settings.
    with RecordingServer() as server, TcpRelay(target_port=server.port, delay_s=0.05) as relay:
        with requests.Session() as session:
            session.get(f"{relay.url}/warm", timeout=10)
            start = time.monotonic()
            session.get(f"{relay.url}/rtt", timeout=10)
            assert time.monotonic() - start >= 0.1  # 50 ms each way
        relay.delay_s = 0.0
        relay.rate = 200_000.0
        body = b"x" * 100_000
        start = time.monotonic()
        requests.post(f"{relay.url}/up", data=body, timeout=10)
        assert time.monotonic() - start >= 0.5


def test_a_link_is_counted_before_its_first_byte_arrives() -> None:
    # cut() must reach every connection a client has already heard from. A target that speaks
    # first (as a websocket server's first frame does) makes the window as wide as it gets.
    banner = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def speak_first() -> None:
        while True:
            try:
                conn, _ = banner.accept()
            except OSError:
                return
            held.append(conn)
            conn.sendall(b"hello")

    threading.Thread(target=speak_first, daemon=True).start()
    try:
        with TcpRelay(target_port=banner.getsockname()[1]) as relay:
            for _ in range(200):
                with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as conn:
                    assert conn.recv(5) == b"hello"
                    assert relay.cut() == 1
    finally:
        banner.close()
        for conn in held:
            conn.close()
