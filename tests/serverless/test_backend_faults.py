"""Faults of ``charpack run --endpoint``, each ending with every image in the pack folder exactly
once and no finished job run again.

The endpoint is the fake of RunPod's ``/v2`` job API (``tests/support/fake_serverless.py``) whose
jobs run on charpack's REAL worker (the runpod SDK's local API on the real CPU ComfyUI), with
results in a real S3 API (moto's server): a worker process killed mid-job, jobs that time out
(one before it ran, one whose result was lost on the way although the worker stored it), an S3
upload refused, and the client SIGKILLed and resumed after RunPod forgot its jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from charpack.run.events import RunEvent
from charpack.serverless.backend import JOURNAL
from charpack.serverless.objects import done_key
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import write_pack
from tests.serverless.conftest import S3, LocalWorker
from tests.serverless.test_backend import assert_each_image_once, manifest, run
from tests.support.commands import charpack_command
from tests.support.fake_serverless import FakeServerless, Handler, runsync
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server


def until(condition: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.05)


def use_endpoint(fake: FakeServerless, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fake.env.items():
        monkeypatch.setenv(name, value)


def attempts(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return list(data["jobs"][key]["attempts"])


def test_a_worker_killed_mid_job_fails_it_and_it_runs_again_on_another_worker(
    worker_factory: Callable[..., LocalWorker],
    local_worker: LocalWorker,
    comfy_server: ComfyServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    doomed = worker_factory()
    target = {"url": doomed.url}
    handlers: dict[str, Handler] = {}

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        url = target["url"]  # the platform gives a retried job to a live worker
        return handlers.setdefault(url, runsync(url))(job)

    pack = write_pack(tmp_path, [{"name": "dock", "prompt": "standing on a dock", "count": 1}])
    out = tmp_path / "out"
    with FakeServerless(handler, workers=1) as fake:
        use_endpoint(fake, monkeypatch)

        def kill_mid_job(event: RunEvent) -> None:
            if event.kind != "started" or target["url"] != doomed.url:
                return
            prompt_id = fake.runs[0].input["prompt_id"]

            def running() -> bool:
                queue = requests.get(f"{comfy_server.url}/queue", timeout=10).json()
                return any(item[1] == prompt_id for item in queue["queue_running"])

            until(running, "the worker's ComfyUI to run the prompt")
            doomed.kill()
            target["url"] = local_worker.url

        summary = run(pack, out, fake, on_event=kill_mid_job)

        assert summary.exit_code == 0, summary.failures
        assert fake.statuses() == ["FAILED", "COMPLETED"]
    data = manifest(out)
    assert_each_image_once(out, data)
    (key,) = data["jobs"]
    first, second = attempts(data, key)
    assert first["status"] == "lost" and "worker exited" in first["error"]
    assert second["status"] == "success" and second["seed"] == first["seed"]


def test_timed_out_jobs_run_again_unless_s3_holds_their_result(
    local_worker: LocalWorker, s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pack = write_pack(tmp_path, [{"name": "lake", "prompt": "by a lake", "count": 2}])
    out = tmp_path / "out"
    with FakeServerless(runsync(local_worker.url), workers=1) as fake:
        use_endpoint(fake, monkeypatch)
        fake.time_out_next(1)  # the first job: timed out before a worker ran it
        fake.lose_next(1)  # the second: ran and stored its files, but RunPod says TIMED_OUT

        summary = run(pack, out, fake)

        assert summary.exit_code == 0, summary.failures
        ran = [(job.input["job_key"], job.status) for job in fake.runs]
    timed_out, lost = ran[0][0], ran[1][0]  # in the order the jobs were dispatched
    assert ran == [(timed_out, "TIMED_OUT"), (lost, "TIMED_OUT"), (timed_out, "COMPLETED")]
    data = manifest(out)
    assert_each_image_once(out, data)
    first, second = attempts(data, timed_out)
    assert first["status"] == "lost" and "timed out" in first["error"]
    assert second["status"] == "success"
    # The other's done.json said it finished: taken from S3, not run again.
    (only,) = attempts(data, lost)
    assert only["status"] == "success"


def test_an_s3_upload_refused_fails_the_job_and_it_runs_again(
    worker_factory: Callable[..., LocalWorker],
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with TcpRelay(target_port=int(urlsplit(s3.endpoint_url).port or 0)) as relay:
        worker = worker_factory(env={"CHARPACK_S3_ENDPOINT_URL": relay.url})
        pack = write_pack(tmp_path, [{"name": "hill", "prompt": "on a hill", "count": 1}])
        out = tmp_path / "out"
        # The worker's first write of an attempt's output is refused (a bucket policy denying it).
        relay.fail_next(status=403, match=f"PUT /{s3.bucket}/{s3.prefix}/runs/")
        with FakeServerless(runsync(worker.url), workers=1) as fake:
            use_endpoint(fake, monkeypatch)

            summary = run(pack, out, fake)

            assert summary.exit_code == 0, summary.failures
            assert fake.statuses() == ["FAILED", "COMPLETED"]
            assert "upload_failed" in str(fake.runs[0].error)
    data = manifest(out)
    assert_each_image_once(out, data)
    (key,) = data["jobs"]
    first, second = attempts(data, key)
    assert first["status"] == "lost" and second["status"] == "success"
    assert not s3.store().exists(done_key(s3.prefix, data["run_id"], key, first["prompt_id"]))


@pytest.mark.parametrize("then", ["still-queued", "forgotten", "unrecorded"])
def test_a_client_killed_and_resumed_gets_each_queued_job_once(
    then: str,
    local_worker: LocalWorker,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Resumed while RunPod still has the jobs (followed by the recorded job ids), after it
    forgot them, 30 minutes after they finished, or with their job ids never recorded (killed
    between ``/run`` and the record): the last two are taken from their done.json."""
    pack = write_pack(tmp_path, [{"name": "roof", "prompt": "on a roof terrace", "count": 2}])
    out = tmp_path / "out"
    with FakeServerless(runsync(local_worker.url), workers=1) as fake:
        fake.pause()  # no job starts before the client is gone
        env = {**os.environ, **s3.env, **fake.env}
        command = [
            *charpack_command(), "run", str(pack), "--out", str(out), "--json",
            "--endpoint", fake.endpoint_id, "--endpoint-workers", "1", "--no-contact-sheet",
        ]  # fmt: skip
        with (tmp_path / "client.log").open("wb") as log:
            client = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                journal = out / JOURNAL

                def both_queued() -> bool:
                    if client.poll() is not None:
                        raise AssertionError((tmp_path / "client.log").read_text()[-3000:])
                    return journal.exists() and len(journal.read_text().splitlines()) == 2

                until(both_queued, "the client to queue both jobs and record their ids")
            finally:
                client.send_signal(signal.SIGKILL)
                client.wait(timeout=30)
        assert not list(out.rglob("*.png"))
        fake.resume()
        if then != "still-queued":  # the jobs finish with no client
            fake.wait_for(lambda f: f.statuses() == ["COMPLETED", "COMPLETED"], timeout_s=600)
        if then == "forgotten":
            assert fake.expire() == 2  # 30 minutes later
        if then == "unrecorded":
            (out / JOURNAL).unlink()
        use_endpoint(fake, monkeypatch)

        summary = run(pack, out, fake)

        assert summary.exit_code == 0, summary.failures
        assert len(fake.runs) == 2  # nothing ran again
    data = manifest(out)
    assert_each_image_once(out, data)
    for key in data["jobs"]:
        (only,) = attempts(data, key)
        assert only["status"] == "success"
        assert (
            json.loads((out / data["jobs"][key]["image"]).with_suffix(".json").read_text())[
                "prompt_id"
            ]
            == only["prompt_id"]
        )


def test_an_image_changed_in_s3_is_refused_and_the_job_runs_again(
    local_worker: LocalWorker, s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = runsync(local_worker.url)
    changed: list[str] = []

    def then_replace_the_png(job: dict[str, Any]) -> dict[str, Any]:
        answer = real(job)
        if not changed:  # the first attempt's PNG is replaced after the worker stored it
            (png,) = [f for f in answer["output"]["files"] if f["filename"].endswith(".png")]
            s3.client.put_object(Bucket=s3.bucket, Key=png["s3_key"], Body=b"\x89PNG not it")
            changed.append(png["s3_key"])
        return answer

    pack = write_pack(tmp_path, [{"name": "barn", "prompt": "by a red barn", "count": 1}])
    out = tmp_path / "out"
    with FakeServerless(then_replace_the_png, workers=1) as fake:
        use_endpoint(fake, monkeypatch)

        summary = run(pack, out, fake)

        assert summary.exit_code == 0, summary.failures
        assert fake.statuses() == ["COMPLETED", "COMPLETED"]
    data = manifest(out)
    assert_each_image_once(out, data)
    (key,) = data["jobs"]
    first, second = attempts(data, key)
    assert first["status"] == "lost" and "not the file its sidecar describes" in first["error"]
    assert second["status"] == "success"
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def test_a_run_request_whose_answer_is_lost_is_not_made_twice(
    local_worker: LocalWorker, s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``POST /run`` queued the job but its answer never arrived: the attempt is posted again
    under the same prompt id only after S3 was asked, and the worker answers a repeat from the
    attempt's done.json, so one attempt, one image."""
    pack = write_pack(tmp_path, [{"name": "quay", "prompt": "on a quay", "count": 1}])
    out = tmp_path / "out"
    with FakeServerless(runsync(local_worker.url), workers=1) as fake:
        port = int(urlsplit(fake.base_url).port or 0)
        with TcpRelay(target_port=port) as relay:
            monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
            monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{relay.url}/v2")
            relay.lose_next_response(status=None, match=f"POST /v2/{fake.endpoint_id}/run")

            summary = run(pack, out, fake)

            assert summary.exit_code == 0, summary.failures
        assert {job.input["prompt_id"] for job in fake.runs} == {fake.runs[0].input["prompt_id"]}
        assert set(fake.statuses()) == {"COMPLETED"}
    data = manifest(out)
    assert_each_image_once(out, data)
    (key,) = data["jobs"]
    (only,) = attempts(data, key)
    assert only["status"] == "success"
