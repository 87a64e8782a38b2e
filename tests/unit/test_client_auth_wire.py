"""Credentials reach the server on HTTP and on the websocket handshake; refusals say what to set.

Uses a small recording server on 127.0.0.1 (tests/support/recording_server.py) to see exactly
what the client sends; ComfyUI's own behaviour is tested in tests/server/.
"""

from __future__ import annotations

import logging
import queue
import socket

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.events import Status
from charpack.comfy.stream import EventStream
from charpack.errors import AuthError, ServerUnavailable
from tests.support.recording_server import RecordingServer, Seen

TOKEN = "wire-tok-8d1f0b2a"


def _exchange(cfg: ServerConfig) -> tuple[dict[str, object], Status]:
    stream = EventStream(config=cfg)
    events = stream.subscribe()  # before start(): the first frame comes right after connecting
    with ComfyClient(config=cfg) as client, stream:
        stats = client.system_stats()
        first = events.get(timeout=10)
    assert isinstance(first, Status)
    return stats, first


def test_bearer_header_on_http_and_websocket() -> None:
    with RecordingServer() as server:
        cfg = ServerConfig.from_url(server.url, env={"CHARPACK_TOKEN": TOKEN})
        stats, _ = _exchange(cfg)
    assert stats["system"] == {"comfyui_version": "recorder"}
    http = [s for s in server.seen if s.path.startswith("/system_stats")]
    ws = [s for s in server.seen if s.path.startswith("/ws?clientId=")]
    assert http and ws
    for seen in (http[0], ws[0]):
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "Origin" not in seen.headers  # proxies rewrite Host; ComfyUI compares the two


def test_query_token_on_http_and_websocket() -> None:
    env = {"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "1"}
    with RecordingServer() as server:
        _exchange(ServerConfig.from_url(server.url, env=env))
    paths = [s.path for s in server.seen]
    assert f"/system_stats?token={TOKEN}" in paths
    assert any(p.startswith("/ws?clientId=") and p.endswith(f"&token={TOKEN}") for p in paths)
    assert all("Authorization" not in s.headers for s in server.seen)


def test_basic_auth_on_http_and_websocket() -> None:
    with RecordingServer() as server:
        cfg = ServerConfig.from_url(server.url, env={"CHARPACK_BASIC_AUTH": "ana:pw-77aa"})
        _exchange(cfg)
    assert {s.headers.get("Authorization") for s in server.seen} == {cfg.headers["Authorization"]}


def _needs_token(seen: Seen) -> bool:
    return seen.headers.get("Authorization") == f"Bearer {TOKEN}"


def test_refused_http_names_the_variable_and_hides_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other code may have quietened it
    with RecordingServer(require=_needs_token) as server:
        with ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
            with pytest.raises(AuthError) as missing:
                client.system_stats()
        wrong = ServerConfig.from_url(server.url, env={"CHARPACK_TOKEN": "wrong-tok-5521"})
        with ComfyClient(config=wrong) as client:
            with pytest.raises(AuthError) as refused:
                client.queue()
    assert "HTTP 401" in str(missing.value) and "set CHARPACK_TOKEN" in str(missing.value)
    assert "refused the credential from CHARPACK_TOKEN" in str(refused.value)
    assert "wrong-tok-5521" not in str(refused.value) + caplog.text


def test_refused_websocket_keeps_retrying_and_reports_why() -> None:
    with RecordingServer(require=_needs_token) as server:
        cfg = ServerConfig.from_url(server.url, env={"CHARPACK_TOKEN": "wrong-tok-5521"})
        stream = EventStream(config=cfg, backoff=0.01, backoff_max=0.05)
        with stream:
            events: queue.Queue[object] = stream.subscribe()
            # Wait on the condition: several refused handshakes recorded.
            while len([s for s in server.seen if s.path.startswith("/ws")]) < 3:
                assert events.empty()
                stream.wait_connected(0.05)
            assert not stream.connected
            assert stream.last_error is not None
            assert "HTTP 401" in stream.last_error and "CHARPACK_TOKEN" in stream.last_error
            assert "wrong-tok-5521" not in stream.last_error


def test_token_never_logged_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other code may have quietened it
    env = {"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "1"}
    with RecordingServer() as server:
        _exchange(ServerConfig.from_url(server.url, env=env))
    assert "/system_stats?token=***" in caplog.text  # urllib3 did log the request line
    assert TOKEN not in caplog.text


def test_unreachable_server_is_named_without_secrets() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    env = {"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "1"}
    cfg = ServerConfig.from_url(f"http://127.0.0.1:{port}", name="pod-b", env=env)
    with ComfyClient(config=cfg, attempts=2) as client:
        with pytest.raises(ServerUnavailable) as caught:
            client.system_stats()
    text = str(caught.value)
    assert text.startswith("pod-b (http://127.0.0.1:") and "Connection refused" in text
    assert TOKEN not in text
