"""The /v2 job API client against the fake endpoint: what each platform answer becomes.

No ComfyUI here: the fake's jobs run a stand-in handler. The states and shapes are the
platform's (``tests/support/fake_serverless.py``); these tests pin how charpack reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from charpack.cli import run as cli_run
from charpack.errors import AuthError
from charpack.pack.packfile import load_pack
from charpack.run.runner import RunOptions, run_pack
from charpack.serverless.backend import EndpointConfig
from charpack.serverless.jobs_api import (
    COMPLETED,
    FAILED,
    EndpointNotFound,
    JobsApi,
    Policy,
    Throttled,
)
from tests.server.test_run_pack import write_pack
from tests.support.fake_serverless import FakeServerless

RELEASE = threading.Event()


def handler(job: dict[str, Any]) -> dict[str, Any]:
    RELEASE.wait(30)
    if job["input"].get("fail"):
        return {"error": '{"type": "upload_failed", "message": "denied", "retry": true}'}
    return {"output": {"echo": job["input"]["n"]}}


@pytest.fixture
def fake() -> Iterator[FakeServerless]:
    RELEASE.clear()
    with FakeServerless(handler, workers=1, queue_limit=2) as endpoint:
        try:
            yield endpoint
        finally:
            RELEASE.set()  # a held job ends before the fake stops


def api(fake: FakeServerless, **changes: str) -> JobsApi:
    values = {"api_key": fake.api_key, "base_url": fake.base_url, **changes}
    return JobsApi(changes.get("endpoint_id", fake.endpoint_id), **{
        k: v for k, v in values.items() if k != "endpoint_id"
    })  # fmt: skip


def test_a_job_is_queued_with_its_policy_and_its_output_read_back(fake: FakeServerless) -> None:
    client = api(fake)
    policy = Policy(execution_timeout_ms=60_000, ttl_ms=3_600_000)

    job_id = client.run({"n": 7}, policy=policy)
    RELEASE.set()
    fake.wait_for(lambda f: f.statuses() == [COMPLETED])

    status = client.status(job_id)
    assert status is not None and status.final
    assert (status.status, status.output) == (COMPLETED, {"echo": 7})
    assert status.delay_ms is not None and status.execution_ms is not None
    assert fake.runs[0].policy == {"executionTimeout": 60_000, "ttl": 3_600_000}


def test_a_failed_job_carries_the_workers_error(fake: FakeServerless) -> None:
    client = api(fake)
    job_id = client.run({"n": 1, "fail": True}, policy=Policy())
    RELEASE.set()
    fake.wait_for(lambda f: f.statuses() == [FAILED])

    status = client.status(job_id)
    assert status is not None and status.status == FAILED
    assert status.error is not None and "upload_failed" in status.error


def test_a_full_queue_is_throttled_and_nothing_is_queued(fake: FakeServerless) -> None:
    client = api(fake)
    client.run({"n": 0}, policy=Policy())
    fake.wait_for(lambda f: f.statuses() == ["IN_PROGRESS"])  # held by the handler
    for n in (1, 2):  # two wait: the queue is full
        client.run({"n": n}, policy=Policy())

    with pytest.raises(Throttled, match="429"):
        client.run({"n": 9}, policy=Policy())
    assert len(fake.runs) == 3


def test_a_forgotten_job_is_none_not_an_error(fake: FakeServerless) -> None:
    client = api(fake)
    job_id = client.run({"n": 2}, policy=Policy())
    RELEASE.set()
    fake.wait_for(lambda f: f.statuses() == [COMPLETED])
    assert fake.expire() == 1

    assert client.status(job_id) is None


def test_a_wrong_key_or_endpoint_says_which(fake: FakeServerless) -> None:
    with pytest.raises(AuthError, match="RUNPOD_API_KEY"):
        api(fake, api_key="not-the-key").health()
    with pytest.raises(EndpointNotFound, match="no-such-endpoint"):
        api(fake, endpoint_id="no-such-endpoint").health()
    assert set(api(fake).health()) == {"jobs", "workers"}


def test_the_policy_keeps_to_runpods_limits() -> None:
    with pytest.raises(ValueError, match="5 s"):
        Policy(execution_timeout_ms=5000)
    with pytest.raises(ValueError, match="ttl"):
        Policy(ttl_ms=1000)


def test_a_run_on_an_endpoint_refusing_the_key_stops_before_the_pack_folder_is_used(
    fake: FakeServerless, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.base_url)
    monkeypatch.setenv("RUNPOD_API_KEY", "not-the-key")
    pack = load_pack(write_pack(tmp_path, [{"name": "cafe", "prompt": "at a cafe", "count": 1}]))
    out = tmp_path / "out"

    with pytest.raises(AuthError, match="RUNPOD_API_KEY"):
        run_pack(
            pack,
            servers=[],
            endpoints=[EndpointConfig(endpoint_id=fake.endpoint_id)],
            options=RunOptions(out=out, handle_signals=False, contact_sheet=False),
        )
    assert not out.exists()
    assert fake.runs == []


def test_charpack_run_endpoint_without_an_api_key_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    pack = write_pack(tmp_path, [{"name": "cafe", "prompt": "at a cafe", "count": 1}])
    out = tmp_path / "out"
    app = typer.Typer(add_completion=False)
    app.command()(cli_run.run)

    result = CliRunner().invoke(
        app, [str(pack), "--out", str(out), "--endpoint", "abc123", "--no-contact-sheet"]
    )

    assert result.exit_code == 2, result.output
    assert "RUNPOD_API_KEY" in result.output
    assert not out.exists()
