"""charpack's Serverless worker under the real runpod SDK's local API (``/runsync``), on the real
CPU ComfyUI with charpack's nodes, storing into a real S3 API (moto's server).

Each job is a real pack job built by charpack (``write_pack`` → ``load_pack`` → ``expand``: the
full pipeline graph at the test world's small size, with the identity score and the pack saver);
its face reference is a fresh file, uploaded to S3 as the orchestrator does, so the worker must
bring it into ComfyUI and the server's cache serves nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.pack.jobs import Job, expand, prompt_id_for
from charpack.pack.packfile import load_pack
from charpack.run.fetcher import expected_of
from charpack.serverless.objects import done_key, input_key, output_prefix
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import write_pack
from tests.serverless.conftest import S3, LocalWorker
from tests.support.loopback import LoopbackServer, QuietHandler

pytestmark = pytest.mark.server


def make_job(folder: Path, scene: str = "cafe") -> Job:
    path = write_pack(folder, [{"name": scene, "prompt": "reading at a cafe table", "count": 1}])
    (job,) = expand(load_pack(path))
    return job


def job_input(job: Job, s3: S3, *, upload: bool = True) -> dict[str, Any]:
    """The job as the orchestrator sends it; its pictures put in S3 once (HEAD first)."""
    run_id = str(uuid.uuid4())
    store = s3.store()
    inputs = []
    for item in job.uploads:
        key = input_key(s3.prefix, item.image_value)
        if upload and store.head(key) is None:
            store.upload_file(item.path, key, sha256=item.sha256)
        inputs.append({"name": item.image_value, "s3_key": key})
    return {
        "workflow": job.make_graph(),
        "prompt_id": prompt_id_for(run_id, job.key, 1),
        "job_key": job.key,
        "run_id": run_id,
        "inputs": inputs,
        "expect": {
            "max_files": 2,
            "max_bytes": expected_of(job).max_image_bytes,
            "subfolder": expected_of(job).subfolder,
        },
    }


def attempt_prefix(s3: S3, given: dict[str, Any]) -> str:
    return output_prefix(s3.prefix, given["run_id"], given["job_key"], given["prompt_id"])


def object_bytes(s3: S3, key: str) -> bytes:
    return bytes(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())


def execution_start(server: ComfyServer, prompt_id: str) -> list[Any]:
    """The history's ``execution_start`` messages of ``prompt_id`` (a second run replaces them)."""
    entry = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()[prompt_id]
    return [m for m in entry["status"]["messages"] if m[0] == "execution_start"]


def test_a_pack_job_completes_with_every_ui_output_and_its_files_in_s3_png_then_done_last(
    local_worker: LocalWorker, s3: S3, tmp_path: Path
) -> None:
    job = make_job(tmp_path)
    given = job_input(job, s3)
    answer = local_worker.runsync(given)

    assert answer["status"] == "COMPLETED", answer
    out = answer["output"]
    assert out["prompt_id"] == given["prompt_id"] and out["status"] == "success"
    assert out["comfyui_version"] == "0.3.75"
    assert out["execution_s"] > 0 and out["finished_ms"] >= out["started_ms"]
    # Every UI output, not only images: the identity node's scores and warnings, the saver's
    # pack files and sidecars (worker-comfyui drops all but images).
    (score,) = [ui for ui in out["ui"].values() if "scores" in ui]
    assert {"scores", "warnings", "model_pack"} <= set(score) and score["scores"][0] > 0
    (save,) = [ui for ui in out["ui"].values() if "sidecars" in ui]
    assert len(save["pack_images"]) == len(save["sidecars"]) == 1

    prefix = attempt_prefix(s3, given)
    files = {f["key"]: f for f in out["files"]}
    assert set(files) == {"pack_images", "sidecars"}
    png, sidecar = files["pack_images"], files["sidecars"]
    assert png["filename"] == save["pack_images"][0]["filename"]
    assert png["filename"].startswith(job.stem) and png["filename"].endswith(".png")
    for record in (png, sidecar):
        assert record["s3_key"] == prefix + record["filename"]
        data = object_bytes(s3, record["s3_key"])
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert len(data) == record["bytes"]
    meta = json.loads(object_bytes(s3, sidecar["s3_key"]))
    assert meta["prompt_id"] == given["prompt_id"]
    assert meta["sha256"] == png["sha256"] and meta["size"] == png["bytes"]

    marker = done_key(s3.prefix, given["run_id"], given["job_key"], given["prompt_id"])
    assert json.loads(object_bytes(s3, marker)) == out
    # Sidecar, then the PNG (present = complete), then done.json last of all.
    assert s3.write_order(prefix) == [sidecar["s3_key"], png["s3_key"], marker]


def test_the_same_prompt_posted_again_runs_once_and_gets_the_same_answer(
    local_worker: LocalWorker, s3: S3, comfy_server: ComfyServer, tmp_path: Path
) -> None:
    given = job_input(make_job(tmp_path), s3)
    first = local_worker.runsync(given)
    assert first["status"] == "COMPLETED", first
    started = execution_start(comfy_server, given["prompt_id"])
    prefix = attempt_prefix(s3, given)
    stored = s3.write_order(prefix)

    # Finished attempt: answered from done.json (identical, worker time included).
    again = local_worker.runsync(given)
    assert again["status"] == "COMPLETED" and again["output"] == first["output"]

    # The worker died after ComfyUI ran it but before its files reached S3: the retry reattaches
    # to ComfyUI's history (the same run: same server timestamps) and stores the files.
    for key in stored:
        s3.client.delete_object(Bucket=s3.bucket, Key=key)
    retried = local_worker.runsync(given)
    assert retried["status"] == "COMPLETED", retried
    out = retried["output"]
    assert out["started_ms"] == first["output"]["started_ms"]
    assert out["files"] == first["output"]["files"]
    assert s3.write_order(prefix) == stored
    assert execution_start(comfy_server, given["prompt_id"]) == started


def test_an_upload_that_fails_fails_the_job_and_writes_no_done_marker(
    worker_factory: Any,
    local_worker: LocalWorker,
    s3: S3,
    comfy_server: ComfyServer,
    tmp_path: Path,
) -> None:
    job = make_job(tmp_path)
    given = job_input(job, s3, upload=False)
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as client:
        for item in job.uploads:  # already on this worker's ComfyUI: no S3 read before the run
            client.upload_image(item)
    gone = f"charpack-gone-{uuid.uuid4().hex[:8]}"
    worker = worker_factory(env={"CHARPACK_S3_BUCKET": gone})
    answer = worker.runsync(given)

    assert answer["status"] == "FAILED", answer
    error = json.loads(answer["error"])
    assert error["type"] == "upload_failed" and error["retry"] is True
    assert "NoSuchBucket" in error["message"] and gone in error["message"]
    assert "charpack-test-secret" not in worker.log_tail(400)
    s3.client.create_bucket(Bucket=gone)
    assert list(s3.store(bucket=gone).keys("")) == []  # no done.json, nothing half-written
    # ComfyUI did run it; a healthy worker reattaches and stores it without running it again.
    started = execution_start(comfy_server, given["prompt_id"])
    retried = local_worker.runsync(given)
    assert retried["status"] == "COMPLETED" and retried["output"]["status"] == "success"
    assert execution_start(comfy_server, given["prompt_id"]) == started


def test_a_rejected_graph_fails_without_retry_and_bad_input_is_refused(
    local_worker: LocalWorker, s3: S3, tmp_path: Path
) -> None:
    given = job_input(make_job(tmp_path), s3)
    given["workflow"] = {"x": {"class_type": "CharpackNoSuchNode", "inputs": {}}}
    answer = local_worker.runsync(given)
    assert answer["status"] == "FAILED"
    error = json.loads(answer["error"])
    assert error["type"] == "prompt_rejected" and error["retry"] is False
    assert s3.keys(attempt_prefix(s3, given)) == []

    bad = dict(given, job_key="../etc")
    error = json.loads(local_worker.runsync(bad)["error"])
    assert error["type"] == "invalid_input" and "job key" in error["message"]


class ProgressSink(LoopbackServer):
    """Where the SDK sends a worker's results and progress on the platform
    (``RUNPOD_WEBHOOK_POST_OUTPUT``): records each posted body."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                outer.posted.append(json.loads(self.rfile.read(length)))
                self.reply({})

        super().__init__(Handler)

    def wait_for(self, test: Any, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not (found := [p for p in list(self.posted) if test(p)]):
            assert time.monotonic() < deadline, f"no such progress update in {self.posted}"
            time.sleep(0.05)
        return found


def test_progress_updates_go_out_through_the_sdk_while_the_graph_runs(
    worker_factory: Any, s3: S3, tmp_path: Path
) -> None:
    given = job_input(make_job(tmp_path), s3)
    with ProgressSink() as sink:
        worker = worker_factory(env={"RUNPOD_WEBHOOK_POST_OUTPUT": f"{sink.url}/job-done?id=$ID"})
        answer = worker.runsync(given)
        assert answer["status"] == "COMPLETED", answer

        def update(stage: str) -> Any:
            return lambda p: p.get("status") == "IN_PROGRESS" and p["output"]["stage"] == stage

        (queued,) = sink.wait_for(update("queued"))
        assert queued["output"]["prompt_id"] == given["prompt_id"]
        nodes = {p["output"]["node"] for p in sink.wait_for(update("node"))}
        assert set(given["workflow"]) & nodes  # the graph's own nodes, as they ran
        sink.wait_for(update("uploading"))


def test_an_exclusive_worker_cancels_what_an_earlier_timed_out_job_left_on_its_comfyui(
    worker_factory: Any, comfy_server_factory: Any, s3: S3, tmp_path: Path
) -> None:
    server = comfy_server_factory(standin_step_seconds=0.5)  # the orphans are still running
    worker = worker_factory(comfy_url=server.url, env={"CHARPACK_WORKER_EXCLUSIVE": "1"})
    orphans = []
    with ComfyClient(config=ServerConfig(url=server.url)) as client:
        for n in range(2):  # what jobs the platform gave up on left: one running, one queued
            left = make_job(tmp_path / f"left-{n}")
            for item in left.uploads:
                client.upload_image(item)
            orphans.append(str(uuid.uuid4()))
            client.submit(left.make_graph(), prompt_id=orphans[-1], client_id="gone")
        assert set(client.queue().running + client.queue().pending) == set(orphans)

        given = job_input(make_job(tmp_path / "next"), s3)
        answer = worker.runsync(given)
        assert answer["status"] == "COMPLETED" and answer["output"]["status"] == "success"
        for orphan in orphans:  # cancelled: never ran, or interrupted where it was
            result = client.result(orphan)
            assert result is None or result.status.value == "interrupted", result
        assert len(client.queue()) == 0


def test_files_that_are_not_what_the_job_makes_are_refused_and_nothing_is_stored(
    local_worker: LocalWorker, s3: S3, tmp_path: Path
) -> None:
    given = job_input(make_job(tmp_path), s3)
    given["expect"] = dict(given["expect"], subfolder="another-pack/cafe")
    answer = local_worker.runsync(given)
    assert answer["status"] == "FAILED", answer
    error = json.loads(answer["error"])
    assert error["type"] == "output_refused" and "another-pack/cafe" in error["message"]
    assert s3.keys(attempt_prefix(s3, given)) == []


def test_an_endpoint_without_a_bucket_fails_each_job_saying_so_without_retry(
    worker_factory: Any, s3: S3, tmp_path: Path
) -> None:
    worker = worker_factory(env={"CHARPACK_S3_BUCKET": ""})
    answer = worker.runsync(job_input(make_job(tmp_path), s3))
    assert answer["status"] == "FAILED"
    error = json.loads(answer["error"])
    assert error["type"] == "worker_config" and error["retry"] is False
    assert "CHARPACK_S3_BUCKET" in error["message"]
