"""The error policy both kinds of worker share (charpack.run.control.ControlLoop): what a
failed turn of a worker's control thread tells the runner, and whether the thread goes on."""

from __future__ import annotations

import logging
import queue
from typing import Any

import pytest

from charpack.comfy.auth import MASK, ServerConfig
from charpack.errors import AuthError, CharpackError, ServerUnavailable
from charpack.run.control import ControlLoop
from charpack.run.messages import Unusable
from charpack.run.worker import ServerWorker
from charpack.serverless.backend import EndpointWorker


class _Loop(ControlLoop):
    def __init__(self, down_errors: tuple[type[Exception], ...] | None = None) -> None:
        self.name = "pod-a"
        self.config = ServerConfig.from_url("http://127.0.0.1:9", name="pod-a", env={})
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.commands = queue.Queue()
        self.downs: list[str] = []
        if down_errors is not None:
            self.down_errors = down_errors

    def _set_up(self, up: bool, reason: str = "") -> None:
        assert up is False
        self.downs.append(reason)

    def sent(self) -> list[Any]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get())
        return out


def _raise(exc: Exception) -> Any:
    def step(_taken: Any) -> None:
        raise exc

    return step


def test_a_turn_that_works_goes_on_and_tells_the_runner_nothing() -> None:
    loop, seen = _Loop(), []
    assert loop._turn(seen.append, "command") is True
    assert seen == ["command"] and loop.sent() == [] and loop.downs == []


def test_refused_credentials_end_the_thread_as_an_auth_failure() -> None:
    loop = _Loop()
    assert loop._turn(_raise(AuthError("pod-a refused CHARPACK_TOKEN")), None) is False
    assert loop.sent() == [Unusable("pod-a", "pod-a refused CHARPACK_TOKEN", auth=True)]
    assert loop.downs == []


def test_a_server_that_stops_answering_is_marked_down_and_the_thread_goes_on() -> None:
    loop = _Loop()
    assert loop._turn(_raise(ServerUnavailable("pod-a: connection refused")), None) is True
    assert loop.downs == ["pod-a: connection refused"] and loop.sent() == []


def test_a_bug_ends_the_thread_logged_and_reported_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = _Loop()
    with caplog.at_level(logging.ERROR, logger="charpack.run.control"):
        ended = not loop._turn(_raise(KeyError("http://h/view?token=s3cr3t-value")), None)
    assert ended and loop.downs == []
    (sent,) = loop.sent()
    assert isinstance(sent, Unusable) and sent.auth is False and sent.server == "pod-a"
    assert "KeyError" in sent.message and "s3cr3t-value" not in sent.message
    assert MASK in sent.message
    assert "pod-a" in caplog.text and "worker failed" in caplog.text
    assert caplog.records[0].exc_info is not None  # the traceback, for the bug report


def test_which_errors_mean_down_is_each_workers_own() -> None:
    # A ComfyUI server is down only when it does not answer; any other charpack error in its
    # turn is a bug. An endpoint's jobs API and S3 errors all mean "probe it again".
    assert ServerWorker.down_errors == (ServerUnavailable,)
    assert EndpointWorker.down_errors == (CharpackError,)
    endpoint_like = _Loop(down_errors=EndpointWorker.down_errors)
    assert endpoint_like._turn(_raise(CharpackError("S3 GET failed")), None) is True
    assert endpoint_like.downs == ["S3 GET failed"]
    server_like = _Loop()
    assert server_like._turn(_raise(CharpackError("S3 GET failed")), None) is False
    assert [type(m) for m in server_like.sent()] == [Unusable]
