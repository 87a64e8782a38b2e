"""The client against a real ComfyUI when the link or the server breaks.

A TCP relay (tests/support/tcp_relay.py) sits where the RunPod proxy would: it drops
websockets, refuses connections, answers 502/524 itself or loses the server's answer.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.completion import Completion, Lost
from charpack.comfy.events import Done, Event, Executing, Reconnected
from charpack.comfy.results import JobState, JobStatus
from charpack.comfy.stream import EventStream
from charpack.errors import ServerUnavailable
from tests.comfy.server import free_port
from tests.support.completion import finish, finished
from tests.support.graphs import fresh, invert_graph, next_event, slow_graph
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server


@pytest.fixture
def relay(comfy_server: Any) -> Iterator[TcpRelay]:
    with TcpRelay(target_port=comfy_server.port) as r:
        yield r


def _deadline(seconds: float = 120.0) -> float:
    return time.monotonic() + seconds


def _files(comfy_server: Any, prefix: str) -> list[str]:
    folder, stem = prefix.split("/")
    return sorted(p.name for p in (Path(comfy_server.output_dir) / folder).glob(f"{stem}_*"))


def test_completion_found_by_polling_while_the_websocket_is_down(
    comfy_server: Any, relay: TcpRelay
) -> None:
    direct = ServerConfig.from_url(comfy_server.url, env={})
    via_proxy = ServerConfig.from_url(relay.url, env={})
    with ComfyClient(config=direct) as client, EventStream(config=via_proxy) as stream:
        events: queue.Queue[Event] = stream.subscribe()
        assert stream.wait_connected(30)
        color, prefix, pid = fresh("wscut")
        client.submit(
            slow_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
        )
        next_event(events, Executing, lambda e: e.prompt_id == pid and e.node == "blur")
        relay.refuse()
        assert relay.cut() == 1  # mid-job, and no way back in until accept()
        result = finished(
            client=client, stream=stream, prompt_id=pid, deadline=_deadline(), poll_interval=0.2
        )
        assert result.status is JobStatus.SUCCESS and len(result.outputs) == 1
        assert not stream.connected and stream.reconnects == 0
        missed: list[Event] = []
        while not events.empty():
            missed.append(events.get())
        assert not [e for e in missed if isinstance(e, Done)]  # it came from polling
        relay.accept()
        assert next_event(events, Reconnected).count == 1
    assert _files(comfy_server, prefix) == [f"{prefix.split('/')[1]}_00001_.png"]


def test_websocket_cut_and_reconnect_keeps_following_the_prompt(
    comfy_server: Any, relay: TcpRelay
) -> None:
    direct = ServerConfig.from_url(comfy_server.url, env={})
    with ComfyClient(config=direct) as client:
        stream = EventStream(config=ServerConfig.from_url(relay.url, env={}), backoff=0.01)
        with stream:
            events: queue.Queue[Event] = stream.subscribe()
            color, prefix, pid = fresh("reconnect")
            assert stream.wait_connected(30)
            client.submit(
                slow_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
            )
            next_event(events, Executing, lambda e: e.prompt_id == pid and e.node == "blur")
            relay.cut()
            # No polling on a timer (60 s): the reconnect and the websocket's end marker decide.
            result = finished(
                client=client, stream=stream, prompt_id=pid, deadline=_deadline(), poll_interval=60
            )
    assert stream.reconnects >= 1
    assert result.prompt_id == pid and result.status is JobStatus.SUCCESS


def test_post_whose_answer_was_lost_is_not_posted_again(comfy_server: Any, relay: TcpRelay) -> None:
    cfg = ServerConfig.from_url(relay.url, env={})
    with ComfyClient(config=cfg, settle_s=0.1) as client:
        for status in (524, None):  # a proxy timeout page, then a dropped connection
            color, prefix, pid = fresh("lostanswer")
            relay.lose_next_response(status=status, match="POST /prompt")
            submitted = client.submit(
                invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id="c"
            )
            assert submitted.recovered and submitted.prompt_id == pid
            result = finished(client=client, prompt_id=pid, deadline=_deadline(), poll_interval=0.1)
            assert result.ok
            assert _files(comfy_server, prefix) == [f"{prefix.split('/')[1]}_00001_.png"]
    posts = [r for r in relay.requests if r.startswith("POST /prompt")]
    assert len(posts) == 2  # one per prompt: neither was re-posted


def test_post_that_never_reached_the_server_is_posted_again(
    comfy_server: Any, relay: TcpRelay
) -> None:
    cfg = ServerConfig.from_url(relay.url, env={})
    color, prefix, pid = fresh("reposted")
    relay.fail_next(status=502, match="POST /prompt")
    with ComfyClient(config=cfg, settle_s=0.1, backoff=0.01) as client:
        submitted = client.submit(
            invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id="c"
        )
        assert not submitted.recovered
        assert finished(client=client, prompt_id=pid, deadline=_deadline(), poll_interval=0.1).ok
    assert len([r for r in relay.requests if r.startswith("POST /prompt")]) == 2
    assert _files(comfy_server, prefix) == [f"{prefix.split('/')[1]}_00001_.png"]


def test_post_is_not_repeated_when_the_server_cannot_be_asked(
    comfy_server: Any, relay: TcpRelay
) -> None:
    cfg = ServerConfig.from_url(relay.url, env={})
    color, prefix, pid = fresh("unknowable")
    relay.lose_next_response(status=None, match="POST /prompt")
    relay.fail_next(status=502, count=1000, match="GET ")  # /queue and /history stay down
    with ComfyClient(config=cfg, attempts=2, backoff=0.01) as client:
        with pytest.raises(ServerUnavailable, match="may still be queued: check job_state"):
            client.submit(invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id="c")
    assert len([r for r in relay.requests if r.startswith("POST /prompt")]) == 1
    with ComfyClient(config=ServerConfig.from_url(comfy_server.url, env={})) as direct:
        assert finished(
            client=direct, prompt_id=pid, deadline=_deadline(), poll_interval=0.1
        ).ok  # the one POST did run


def test_submit_to_a_refusing_server_fails_clearly(relay: TcpRelay) -> None:
    cfg = ServerConfig.from_url(relay.url, name="pod-z", env={})
    relay.refuse()
    _, prefix, pid = fresh("refused")
    with ComfyClient(config=cfg, backoff=0.01) as client:
        with pytest.raises(ServerUnavailable) as caught:
            client.submit(invert_graph(color=1, prefix=prefix), prompt_id=pid, client_id="c")
    assert "pod-z" in str(caught.value) and "Connection refused" in str(caught.value)


def test_prompt_lost_in_a_server_restart_is_reported_lost(comfy_server_factory: Any) -> None:
    server = comfy_server_factory()  # private: this test kills it
    with TcpRelay(target_port=server.port, upstream_down_status=502) as relay:
        cfg = ServerConfig.from_url(relay.url, env={})
        stream = EventStream(config=cfg, backoff=0.05)
        events: queue.Queue[Event] = stream.subscribe()
        with ComfyClient(config=cfg, backoff=0.05) as client, stream:
            assert stream.wait_connected(30)
            color, prefix, pid = fresh("restart")
            client.submit(
                slow_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
            )
            next_event(events, Executing, lambda e: e.prompt_id == pid and e.node == "blur")
            server.kill()  # a crash mid-job; the pod comes back with the same volume
            relay.target = ("127.0.0.1", free_port())
            server.restart(port=relay.target[1])
            next_event(events, Reconnected)
            assert client.job_state(pid) is JobState.LOST
            lost = finish(
                client=client, stream=stream, prompt_id=pid, deadline=_deadline(), poll_interval=0.2
            )
            assert lost == Lost(pid, cfg.name)
            tracker = Completion(client=client, stream=stream)
            tracker.add(pid)
            assert tracker.reconcile() == [Lost(pid, cfg.name)]


def test_tokens_reach_a_real_server_and_never_the_logs(
    relay: TcpRelay, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other code may have quietened it
    token = "real-srv-tok-4a7d99"
    env = {"CHARPACK_TOKEN": token, "CHARPACK_TOKEN_QUERY": "1"}
    cfg = ServerConfig.from_url(relay.url, env=env)
    color, prefix, pid = fresh("token")
    with ComfyClient(config=cfg) as client, EventStream(config=cfg) as stream:
        assert stream.wait_connected(30)
        client.submit(
            invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
        )
        result = finished(client=client, stream=stream, prompt_id=pid, deadline=_deadline())
        client.download(result.outputs[0], tmp_path / "out.png")
    lines = [r.split("\r\n")[0] for r in relay.requests]
    for route in ("GET /ws?", "POST /prompt?", "GET /history/", "GET /view?"):
        matching = [line for line in lines if line.startswith(route)]
        assert matching and all(f"token={token}" in line for line in matching), route
    assert "token=***" in caplog.text  # urllib3 logged the requests, masked
    assert token not in caplog.text
