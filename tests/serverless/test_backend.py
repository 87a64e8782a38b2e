"""``charpack run --endpoint``: the orchestrator's Serverless backend against a fake of RunPod's
``/v2`` job API whose jobs run on charpack's REAL worker (the runpod SDK's local API, the real
CPU ComfyUI with charpack's nodes), with results in a real S3 API (moto's server).

A whole pack goes through ``/run`` + ``GET /status``, its files come from S3 into the pack
folder (checked against the sidecars), every UI output (the identity score) reaches the manifest,
the endpoint takes part beside a ComfyUI server, and 429s are waited out. The faults are in
``test_backend_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.pack.packfile import load_pack
from charpack.run.events import RunEvent
from charpack.run.runner import RunControl, RunOptions, RunSummary, run_pack
from charpack.serverless.backend import JOURNAL, EndpointConfig
from charpack.serverless.objects import done_key
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import write_pack
from tests.serverless.conftest import S3, LocalWorker
from tests.support.fake_serverless import FakeServerless, runsync

pytestmark = pytest.mark.server


@pytest.fixture
def endpoint(
    local_worker: LocalWorker, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeServerless]:
    """A fake endpoint of one worker: the session's real local worker."""
    with FakeServerless(runsync(local_worker.url), workers=1) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        yield fake


def config(fake: FakeServerless, **changes: Any) -> EndpointConfig:
    return EndpointConfig(endpoint_id=fake.endpoint_id, workers=1, poll_interval=0.2, **changes)


def run(
    pack: Path, out: Path, fake: FakeServerless, *, servers: list[ServerConfig] | None = None,
    on_event: Callable[[RunEvent], None] | None = None, **options: Any,
) -> RunSummary:  # fmt: skip
    """``pack`` on the fake endpoint (and ``servers``) into ``out``."""
    return run_pack(
        load_pack(pack),
        servers=servers or [],
        endpoints=[config(fake)],
        options=RunOptions(
            out=out, contact_sheet=False, handle_signals=False, on_event=on_event, **options
        ),
    )


def manifest(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "manifest.json").read_text()))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pictures(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


def assert_each_image_once(out: Path, data: dict[str, Any]) -> None:
    """Every job done with one image whose bytes are the ones its record names, and no other
    picture in the pack folder."""
    recorded = []
    for key, entry in data["jobs"].items():
        assert entry["status"] == "done", (key, entry.get("error"))
        image = entry["image"]
        recorded.append(image)
        files = {f["path"]: f for a in entry["attempts"] for f in a.get("files") or []}
        assert sha256(out / image) == files[image]["sha256"]
    assert pictures(out) == sorted(recorded)


def test_a_pack_runs_on_an_endpoint_with_its_files_from_s3_and_every_ui_output(
    endpoint: FakeServerless, s3: S3, tmp_path: Path
) -> None:
    pack = write_pack(tmp_path, [{"name": "cafe", "prompt": "reading at a cafe table", "count": 2}])
    out = tmp_path / "out"

    summary = run(pack, out, endpoint)

    assert summary.exit_code == 0, summary.failures
    data = manifest(out)
    assert_each_image_once(out, data)
    run_id = data["run_id"]
    for key, entry in data["jobs"].items():
        (attempt,) = entry["attempts"]
        assert attempt["server"] == f"runpod-endpoint:{endpoint.endpoint_id}"
        # What the bill counts: the handler's own wall time on the worker.
        assert 0 < attempt["worker_s"] and attempt["execution_s"] <= attempt["worker_s"]
        # The identity node's UI output came through the handler: the score is recorded.
        assert isinstance(attempt["score"], float)
        # The sidecar landed beside the image, proving it belongs to this attempt.
        sidecar = json.loads((out / entry["image"]).with_suffix(".json").read_text())
        assert sidecar["prompt_id"] == attempt["prompt_id"]
        assert s3.store().exists(done_key(s3.prefix, run_id, key, attempt["prompt_id"]))
    # One /run per job, each with the per-job policy; the API's own states were followed.
    inputs = endpoint.inputs()
    assert sorted(i["job_key"] for i in inputs) == sorted(data["jobs"])
    assert endpoint.statuses() == ["COMPLETED", "COMPLETED"]
    assert all(job.policy == config(endpoint).policy.to_json() for job in endpoint.runs)
    assert ("GET", f"/v2/{endpoint.endpoint_id}/status/{endpoint.runs[0].id}") in endpoint.requests
    # The RunPod job ids are kept for a resumed run.
    journal = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    assert sorted(j["job_id"] for j in journal) == sorted(job.id for job in endpoint.runs)


def test_a_throttled_endpoint_is_waited_out_and_mixes_with_a_comfyui_server(
    endpoint: FakeServerless, comfy_server: ComfyServer, tmp_path: Path
) -> None:
    pack = write_pack(tmp_path, [{"name": "park", "prompt": "walking in a park", "count": 3}])
    out = tmp_path / "out"
    events: list[RunEvent] = []

    def throttle_once_up(event: RunEvent) -> None:
        events.append(event)
        if event.kind == "server_up" and event.data["server"].startswith("endpoint-"):
            endpoint.throttle(2)  # the next two requests (its first /run) answer 429

    summary = run_pack(
        load_pack(pack),
        servers=[ServerConfig.from_url(comfy_server.url)],
        endpoints=[config(endpoint)],
        options=RunOptions(
            out=out, contact_sheet=False, handle_signals=False, on_event=throttle_once_up,
            backlog=0,
        ),
    )  # fmt: skip

    assert summary.exit_code == 0, summary.failures
    data = manifest(out)
    assert_each_image_once(out, data)
    servers = {a["server"] for e in data["jobs"].values() for a in e["attempts"]}
    assert len(servers) == 2 and config(endpoint).url in servers  # both took part
    assert endpoint.throttled == 2  # answered 429, waited out
    # Nothing was queued twice: each of the endpoint's jobs ran once.
    on_endpoint = [i["job_key"] for i in endpoint.inputs()]
    assert len(on_endpoint) == len(set(on_endpoint)) >= 1
    assert endpoint.statuses().count("COMPLETED") == len(on_endpoint)


def test_ctrl_c_twice_cancels_the_endpoints_jobs_and_the_next_run_makes_them(
    endpoint: FakeServerless, tmp_path: Path
) -> None:
    pack = write_pack(tmp_path, [{"name": "pier", "prompt": "on a pier", "count": 2}])
    out = tmp_path / "out"
    endpoint.pause()  # queued, not started: the cancel reaches them in the queue
    control = RunControl()

    def press_twice() -> None:
        endpoint.wait_for(lambda f: len(f.runs) == 2)
        control.interrupt()
        control.interrupt()

    presser = threading.Thread(target=press_twice, daemon=True)
    presser.start()
    stopped = run(pack, out, endpoint, control=control)
    presser.join(timeout=60)

    assert stopped.interrupted and stopped.cancelled == 2
    assert endpoint.statuses() == ["CANCELLED", "CANCELLED"]
    endpoint.resume()

    summary = run(pack, out, endpoint)

    assert summary.exit_code == 0, summary.failures
    assert_each_image_once(out, manifest(out))
    assert endpoint.statuses() == ["CANCELLED", "CANCELLED", "COMPLETED", "COMPLETED"]


def test_the_workers_progress_updates_reach_the_run_as_node_and_step_events(
    endpoint: FakeServerless, local_worker: LocalWorker, tmp_path: Path
) -> None:
    real = runsync(local_worker.url)
    seen = {"node": threading.Event(), "step": threading.Event()}
    events: list[RunEvent] = []

    def with_progress(job: dict[str, Any]) -> dict[str, Any]:
        prompt_id, graph = job["input"]["prompt_id"], job["input"]["workflow"]
        node = next(iter(graph))
        update = {"stage": "node", "prompt_id": prompt_id, "node": node}
        endpoint.progress(job["id"], update)  # as runpod.serverless.progress_update does
        assert seen["node"].wait(60), "the client never showed the node update"
        update = {**update, "stage": "sampling", "value": 2, "max": 4}
        endpoint.progress(job["id"], update)
        assert seen["step"].wait(60), "the client never showed the step update"
        return real(job)

    def record(event: RunEvent) -> None:
        events.append(event)
        if event.kind in seen:
            seen[event.kind].set()

    endpoint.handler = with_progress
    pack = write_pack(tmp_path, [{"name": "deck", "prompt": "on a ship deck", "count": 1}])

    summary = run(pack, tmp_path / "out", endpoint, on_event=record)

    assert summary.exit_code == 0, summary.failures
    kinds = [e.kind for e in events]
    assert kinds.index("started") < kinds.index("node") < kinds.index("step") < kinds.index("done")
    (step,) = [e for e in events if e.kind == "step"]
    assert (step.data["value"], step.data["max"]) == (2, 4)
