"""`charpack endpoint up|status|down` against a local stand-in of RunPod's REST API v2.

The stand-in (fake_runpod_rest.py) follows the v2 OpenAPI shapes and refuses what the schema
refuses, so a body charpack sends that RunPod would reject fails here too. The command runs as
the user runs it (typer's runner over `charpack.cli.main`), with its settings from the shipped
runpod/manifest.toml.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from charpack.cli import main as cli_main
from charpack.folder.manifest import Manifest
from charpack.serverless.bill import PRICE_ENV
from charpack.serverless.endpoint import load_endpoint_spec
from tests.support.pack_folders import JobSpec, Shot, build

from .conftest import REPO
from .fake_runpod_rest import FakeRunPodRest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VOLUME = {"id": "vol123abc", "name": "charpack", "size": 50, "dataCenter": "EU-RO-1",
          "type": "STANDARD"}  # fmt: skip
S3_SECRET = "s3secret" + secrets.token_hex(16)
S3_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
SERVERLESS = tomllib.loads((REPO / "runpod" / "manifest.toml").read_text())["serverless"]


@pytest.fixture
def rest(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunPodRest]:
    fake = FakeRunPodRest(api_key="rp_" + secrets.token_hex(16), volumes=[VOLUME])
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)  # the management API (v2 REST)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{fake.url}/v2")  # the job API (/health)
    monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
    monkeypatch.setenv("CHARPACK_RUNPOD_VOLUME_ID", VOLUME["id"])
    monkeypatch.setenv("CHARPACK_S3_BUCKET", "charpack-out")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    for name in ("CHARPACK_ENDPOINT_IMAGE", "CHARPACK_S3_ENDPOINT_URL", "CHARPACK_S3_PREFIX",
                 "AWS_DEFAULT_REGION", "CHARPACK_POD_MANIFEST"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    yield fake
    fake.close()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_main.app, ["endpoint", *args], catch_exceptions=False)


def as_json(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout)


def _no_secrets(text: str, fake: FakeRunPodRest) -> None:
    for secret in (fake.api_key, S3_SECRET, S3_KEY_ID):
        assert secret not in text


# -- clear errors before anything is created --------------------------------------------------


def test_missing_api_key_names_the_variable(rest: FakeRunPodRest, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = invoke("up")
    assert result.exit_code == 4
    assert "RUNPOD_API_KEY is not set" in result.output
    assert rest.requests == []


def test_a_refused_key_is_reported_without_showing_it(rest: FakeRunPodRest, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_wrong_key_0123456789")
    result = invoke("status", "--json")
    assert result.exit_code == 4
    error = as_json(result)["error"]
    assert error["type"] == "PodError"
    assert error["message"].startswith("RunPod refused RUNPOD_API_KEY")
    assert "rp_wrong_key_0123456789" not in result.output


def test_missing_s3_settings_are_named_before_anything_is_created(rest, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("CHARPACK_S3_BUCKET")
    result = invoke("up")
    assert result.exit_code == 4
    assert "CHARPACK_S3_BUCKET, AWS_SECRET_ACCESS_KEY not set" in result.output
    assert rest.requests == []


def test_missing_volume_lists_the_accounts_volumes(rest: FakeRunPodRest, monkeypatch):
    monkeypatch.delenv("CHARPACK_RUNPOD_VOLUME_ID")
    result = invoke("up")
    assert result.exit_code == 4
    assert "no network volume chosen" in result.output
    assert "vol123abc (charpack, 50 GB, EU-RO-1)" in result.output
    assert rest.calls("POST") == []


def test_a_gpu_type_without_a_serverless_pool_lists_the_ones_that_have_one(rest):
    result = invoke("up", "--gpu-type", "NVIDIA GeForce RTX 3080")
    assert result.exit_code == 4
    assert "'NVIDIA GeForce RTX 3080' is not in a RunPod serverless pool" in result.output
    assert "NVIDIA GeForce RTX 4090" in result.output and "NVIDIA L4" in result.output
    assert rest.calls("POST") == []


# -- the lifecycle ----------------------------------------------------------------------------


def test_up_creates_the_endpoint_from_the_manifest(rest: FakeRunPodRest):
    result = invoke("up", "--json")

    assert result.exit_code == 0, result.output
    (body,) = rest.bodies("POST")
    assert body["name"] == SERVERLESS["name"] and body["type"] == "QUEUE"
    assert body["image"] == SERVERLESS["image"]
    # One card: the 4090's pool, nothing else in it (so a worker second has one price).
    assert body["gpu"]["pools"] == ["ADA_24"] and "excludedTypes" not in body["gpu"]
    assert body["gpu"]["allowedCudaVersions"] == SERVERLESS["allowed_cuda_versions"]
    assert body["workers"] == {"min": SERVERLESS["min_workers"],
                               "max": SERVERLESS["max_workers"],
                               "idleTimeout": SERVERLESS["idle_timeout_s"]}  # fmt: skip
    assert body["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": SERVERLESS["queue_delay_s"]}
    assert body["timeout"] == SERVERLESS["execution_timeout_s"] * 1000
    assert body["networkVolumes"] == [VOLUME["id"]]
    assert body["dataCenterIds"] == ["EU-RO-1"]  # the volume's data centre
    assert body["flashboot"] == "FLASHBOOT"
    assert body["env"] == {"CHARPACK_S3_BUCKET": "charpack-out", "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                           "AWS_SECRET_ACCESS_KEY": S3_SECRET}  # fmt: skip
    endpoint = as_json(result)["endpoint"]
    assert endpoint["endpoint_id"] in rest.endpoints and endpoint["changed"] == ["created"]
    price = endpoint["price"]
    assert price["gpu_type"] == "NVIDIA GeForce RTX 4090"
    assert price["usd_per_s"] == pytest.approx(1.116 / 3600)  # the catalog's serverless price
    assert price["source"] == "RunPod catalog, pool ADA_24"
    assert endpoint["max_per_hour"] == pytest.approx(1.116 * SERVERLESS["max_workers"], abs=1e-3)
    _no_secrets(result.output, rest)


def test_a_card_in_a_shared_pool_excludes_the_pools_other_cards(rest: FakeRunPodRest):
    result = invoke("up", "--gpu-type", "NVIDIA L4", "--json")
    assert result.exit_code == 0, result.output
    (body,) = rest.bodies("POST")
    assert body["gpu"]["pools"] == ["AMPERE_24"]
    assert body["gpu"]["excludedTypes"] == ["NVIDIA GeForce RTX 3090", "NVIDIA RTX A5000"]
    assert as_json(result)["endpoint"]["price"]["usd_per_s"] == pytest.approx(0.684 / 3600)


def test_up_again_changes_nothing_and_a_new_option_patches_only_that(rest: FakeRunPodRest):
    first = as_json(invoke("up", "--json"))["endpoint"]
    again = invoke("up")
    assert again.exit_code == 0, again.output
    assert f"unchanged endpoint {first['endpoint_id']}" in again.output
    workers = SERVERLESS["max_workers"]  # the run keeps as many jobs running there
    assert f"--endpoint {first['endpoint_id']} --endpoint-workers {workers}" in again.output
    assert rest.calls("PATCH") == []

    result = invoke("up", "--max-workers", "50", "--image", "reg.example/worker:2", "--json")

    assert result.exit_code == 0, result.output
    (patch,) = rest.bodies("PATCH")
    assert set(patch) == {"workers", "image"}  # the worker env is not resent
    assert patch["workers"]["max"] == 50 and patch["image"] == "reg.example/worker:2"
    endpoint = as_json(result)["endpoint"]
    assert endpoint["endpoint_id"] == first["endpoint_id"] and len(rest.endpoints) == 1
    assert endpoint["changed"] == ["image", "workers"] and endpoint["workers_max"] == 50


def test_rotated_s3_keys_are_patched_into_the_workers_env(rest: FakeRunPodRest, monkeypatch):
    assert invoke("up").exit_code == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET + "new")
    result = invoke("up")
    assert result.exit_code == 0, result.output
    (patch,) = rest.bodies("PATCH")
    assert set(patch) == {"env"} and patch["env"]["AWS_SECRET_ACCESS_KEY"] == S3_SECRET + "new"
    assert "updated env" in result.output
    _no_secrets(result.output, rest)


def test_runpod_secret_references_keep_the_credentials_out_of_the_endpoint(rest):
    result = invoke(
        "up", "--runpod-secret", "AWS_SECRET_ACCESS_KEY=charpack_s3_secret",
        "--runpod-secret", "AWS_ACCESS_KEY_ID=charpack_s3_id",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (body,) = rest.bodies("POST")
    assert body["env"]["AWS_SECRET_ACCESS_KEY"] == "{{ RUNPOD_SECRET_charpack_s3_secret }}"
    assert body["env"]["AWS_ACCESS_KEY_ID"] == "{{ RUNPOD_SECRET_charpack_s3_id }}"
    assert S3_SECRET not in json.dumps(rest.bodies("POST"))

    wrong = invoke("up", "--runpod-secret", "HOME=x")
    assert wrong.exit_code == 4 and "HOME is not a worker setting" in wrong.output


def test_fifty_workers_of_a_dear_gpu_warn_about_the_spend_limit(rest: FakeRunPodRest):
    result = invoke("up", "--gpu-type", "NVIDIA H100 80GB HBM3", "--max-workers", "50")
    assert result.exit_code == 0, result.output
    assert "up to $208.80/h with all 50 workers busy" in result.output
    assert "over RunPod's default $80/h spend limit" in result.output


def test_status_shows_workers_queue_price_and_bill(rest: FakeRunPodRest):
    eid = as_json(invoke("up", "--json"))["endpoint"]["endpoint_id"]
    rest.health[eid] = {
        "jobs": {"completed": 40, "failed": 1, "inProgress": 3, "inQueue": 7, "retried": 0},
        "workers": {"idle": 1, "running": 3},
    }
    rest.billing[eid] = [1.25, 0.5]

    result = invoke("status", "--json")

    assert result.exit_code == 0, result.output
    (shown,) = as_json(result)["endpoints"]
    assert shown["endpoint_id"] == eid
    assert shown["jobs"]["inQueue"] == 7 and shown["workers"]["running"] == 3
    assert shown["billed_usd"] == 1.75
    assert shown["price"]["usd_per_s"] == pytest.approx(1.116 / 3600)
    text = invoke("status").output
    assert eid in text and "7 inQueue 3 inProgress" in text and "$1.75" in text


def test_down_refuses_a_busy_endpoint_then_deletes_it(rest: FakeRunPodRest):
    eid = as_json(invoke("up", "--json"))["endpoint"]["endpoint_id"]
    rest.health[eid] = {"jobs": {"inProgress": 2, "inQueue": 5}, "workers": {"running": 2}}

    refused = invoke("down")
    assert refused.exit_code == 4
    assert f"endpoint {eid} still has 7 job(s) queued or running" in refused.output
    assert eid in rest.endpoints and rest.calls("DELETE") == []

    rest.health[eid] = {"jobs": {"inProgress": 0, "inQueue": 0}, "workers": {"idle": 1}}
    result = invoke("down", "--json")
    assert result.exit_code == 0, result.output
    assert [e["endpoint_id"] for e in as_json(result)["endpoints"]] == [eid]
    assert rest.endpoints == {} and rest.calls("DELETE") == [f"DELETE /v2/serverless/{eid}"]
    assert "nothing to delete" in invoke("down").output


def test_down_refuses_when_the_queue_cannot_be_read(rest: FakeRunPodRest, monkeypatch):
    assert invoke("up").exit_code == 0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"http://127.0.0.1:{closed}/v2")
    refused = invoke("down")
    assert refused.exit_code == 4 and "cannot read endpoint" in refused.output
    assert len(rest.endpoints) == 1
    assert invoke("down", "--force").exit_code == 0 and rest.endpoints == {}


def test_down_force_deletes_a_busy_endpoint(rest: FakeRunPodRest):
    eid = as_json(invoke("up", "--json"))["endpoint"]["endpoint_id"]
    rest.health[eid] = {"jobs": {"inProgress": 1, "inQueue": 0}, "workers": {"running": 1}}
    assert invoke("down", "--force").exit_code == 0
    assert rest.endpoints == {}


def test_an_unknown_endpoint_id_says_where_to_look(rest: FakeRunPodRest):
    result = invoke("status", "--endpoint-id", "nosuchendpoint")
    assert result.exit_code == 4
    assert "no endpoint nosuchendpoint in this account" in result.output


def test_without_requests_the_sdk_is_not_needed(rest: FakeRunPodRest, monkeypatch):
    # The endpoint commands speak REST themselves: the RunPod SDK (charpack[pod]) is optional.
    monkeypatch.setitem(sys.modules, "runpod", None)
    result = invoke("up")
    assert result.exit_code == 0, result.output
    assert [body["name"] for body in rest.bodies("POST")] == [SERVERLESS["name"]]


# -- the manifest's [serverless] table --------------------------------------------------------


def _provision_manifest() -> ModuleType:
    # runpod/ runs on a bare pod (standard library only): loaded from its file, as on the pod.
    name = "charpack_test_provision_manifest"
    spec = importlib.util.spec_from_file_location(name, REPO / "runpod" / "provision_manifest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_shipped_serverless_table_passes_the_manifest_check_and_is_what_up_reads():
    manifest = _provision_manifest().load_manifest(REPO / "runpod" / "manifest.toml")
    spec = load_endpoint_spec()
    assert manifest.serverless["gpu_type"] == spec.gpu_type
    assert manifest.serverless["price_per_s"] == spec.price_per_s
    assert manifest.serverless["max_workers"] == spec.max_workers
    assert manifest.serverless["volume_mount"] == "/runpod-volume"


def test_a_bad_serverless_table_is_named_key_by_key(tmp_path: Path):
    text = (REPO / "runpod" / "manifest.toml").read_text()
    bad = (
        text.replace('volume_mount = "/runpod-volume"', 'volume_mount = "/workspace"')
        .replace("idle_timeout_s = 5\n", "idle_timeout_s = 0\nmax_gpus = 3\n")
        .replace("min_workers = 0", "min_workers = 99")
        .replace("price_per_s = 0.00031\n", "")
    )
    path = tmp_path / "manifest.toml"
    path.write_text(bad)
    pm = _provision_manifest()
    with pytest.raises(pm.PodManifestError) as caught:
        pm.load_manifest(path)
    problems = caught.value.problems
    assert (
        "serverless.volume_mount: '/workspace' is not \"/runpod-volume\" (where Serverless "
        "mounts the network volume)" in problems
    )
    assert any(p.startswith("serverless.idle_timeout_s: 0 is not seconds from 1") for p in problems)
    assert any(p.startswith("serverless.price_per_s: missing") for p in problems)
    assert "serverless.min_workers: more than max_workers" in problems
    assert "serverless: unknown key(s) max_gpus" in problems


# -- the bill in charpack report --------------------------------------------------------------

POD = "https://pod-a-8188.proxy.runpod.net"
ENDPOINT = "runpod-endpoint:ep7xk2m9q4"  # what the Serverless backend records as the server


def _mixed_pack(folder: Path, *, worker_s: dict[int, float]) -> None:
    """Two attempts on a pod and three on an endpoint (one of them failed: RunPod bills it)."""
    build(
        folder,
        [
            JobSpec("cafe", 1, [Shot(1, 0.6, execution_s=10, queue_wait_s=2, server=POD)]),
            JobSpec("cafe", 2, [Shot(2, 0.6, execution_s=20, queue_wait_s=0, server=POD)]),
            JobSpec("cafe", 3, [Shot(3, None, "error", "worker lost", execution_s=4,
                                     server=ENDPOINT),
                                Shot(4, 0.7, execution_s=12, server=ENDPOINT)]),
            JobSpec("cafe", 4, [Shot(5, 0.8, execution_s=12, server=ENDPOINT)]),
        ],
    )  # fmt: skip
    manifest = Manifest.load(folder)
    for entry in manifest:
        for attempt in entry.get("attempts") or []:
            if attempt["seed"] in worker_s:
                attempt["worker_s"] = worker_s[attempt["seed"]]  # type: ignore[typeddict-unknown-key]
        manifest.put(entry)
    manifest.save()


def _report(folder: Path, *args: str) -> Any:
    return CliRunner().invoke(cli_main.app, ["report", str(folder), *args], catch_exceptions=False)


def test_report_bills_endpoint_attempts_per_worker_second_and_pods_by_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(PRICE_ENV, raising=False)
    _mixed_pack(tmp_path, worker_s={3: 5.5, 4: 14.0, 5: 13.5})

    result = _report(tmp_path, "--price-per-hour", "0.69", "--json")

    assert result.exit_code == 0, result.output
    data = as_json(result)
    (bill,) = data["endpoint_bills"]
    assert bill["endpoint_id"] == "ep7xk2m9q4" and bill["attempts"] == 3
    assert bill["worker_s"] == pytest.approx(33.0) and bill["measured"] == "worker"
    assert bill["usd_per_s"] == SERVERLESS["price_per_s"]  # nothing recorded: the manifest's
    assert "runpod/manifest.toml list price" in bill["price_source"]
    assert bill["cost"] == pytest.approx(33.0 * SERVERLESS["price_per_s"], abs=1e-5)
    # The pod's span (12 + 20 s) is billed by the hour; the endpoint's is not a span.
    assert data["server_spans_s"] == {POD: pytest.approx(32.0)}
    pods = 32.0 / 3600 * 0.69
    assert data["cost"] == pytest.approx(pods + 33.0 * SERVERLESS["price_per_s"], abs=1e-4)
    text = _report(tmp_path, "--price-per-hour", "0.69").output
    assert "bill of endpoint ep7xk2m9q4: 33.0 worker seconds in 3 attempts" in text
    assert "cost of pods: 0.01 GPU hours on 1 server(s)" in text and "total: $" in text


def test_the_price_the_run_recorded_wins_and_execution_seconds_are_called_a_lower_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(PRICE_ENV, raising=False)
    _mixed_pack(tmp_path, worker_s={})
    manifest = Manifest.load(tmp_path)
    price = {"usd_per_s": 0.00019, "gpu_type": "NVIDIA L4",
             "source": "RunPod catalog, pool AMPERE_24"}  # fmt: skip
    manifest.set_server(ENDPOINT, {"name": "endpoint-ep7xk2m9q4", "price": price})
    manifest.save()

    (bill,) = as_json(_report(tmp_path, "--json"))["endpoint_bills"]
    assert bill["usd_per_s"] == 0.00019
    assert bill["price_source"] == "NVIDIA L4, RunPod catalog, pool AMPERE_24"
    assert bill["worker_s"] == pytest.approx(4 + 12 + 12) and bill["measured"] == "execution"
    assert "(ComfyUI execution only: a lower bound)" in _report(tmp_path).output

    monkeypatch.setenv(PRICE_ENV, "0.001")
    (bill,) = as_json(_report(tmp_path, "--json"))["endpoint_bills"]
    assert bill["usd_per_s"] == 0.001 and bill["price_source"] == f"from {PRICE_ENV}"


def test_a_pod_only_pack_reports_its_cost_as_before(tmp_path: Path):
    build(tmp_path, [JobSpec("cafe", 1, [Shot(1, 0.6, execution_s=10, queue_wait_s=2)])])
    data = as_json(_report(tmp_path, "--price-per-hour", "1.8", "--json"))
    assert data["endpoint_bills"] == [] and data["cost"] == pytest.approx(12 / 3600 * 1.8)
