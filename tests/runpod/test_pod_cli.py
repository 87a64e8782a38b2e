"""`charpack pod up|status|down` against a local stand-in of RunPod's API.

The RunPod SDK is real (it is pointed at the stand-in with RUNPOD_API_BASE_URL); the "pod"
it creates is reached through the real auth proxy in front of the real CPU ComfyUI
(CHARPACK_RUNPOD_PROXY_URL replaces https://<pod-id>-8188.proxy.runpod.net).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from charpack.cli import pod as cli_pod
from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.results import JobStatus
from charpack.comfy.stream import EventStream
from charpack.errors import AuthError, PodError
from charpack.pod import version as pod_version
from charpack.pod.lifecycle import PodInfo, load_pod_spec, pod_session
from charpack.pod.version import CharpackVersion
from tests.support.completion import finished
from tests.support.graphs import fresh, invert_graph

from .fake_runpod import FakeRunPod
from .fixtures_proxy import AuthProxy

VOLUME = {"id": "vol123abc", "name": "charpack", "size": 50, "dataCenterId": "EU-RO-1"}
CIVITAI = "civitai" + "7" * 32


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_pod.app, list(args), catch_exceptions=False)


def as_json(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout)


@pytest.fixture
def pod_env(fake_runpod: FakeRunPod, auth_proxy: AuthProxy, monkeypatch: pytest.MonkeyPatch):
    fake_runpod.volumes = [VOLUME]
    monkeypatch.setenv("CHARPACK_COMFY_TOKEN", auth_proxy.token)
    monkeypatch.setenv("CHARPACK_RUNPOD_PROXY_URL", auth_proxy.url)
    monkeypatch.setenv("CHARPACK_RUNPOD_VOLUME_ID", VOLUME["id"])
    monkeypatch.setenv("CIVITAI_TOKEN", CIVITAI)
    return fake_runpod


def _secrets_absent(text: str, fake: FakeRunPod, *extra: str) -> None:
    for secret in (fake.api_key, CIVITAI, *extra):
        assert secret not in text


# -- clear errors before anything is created --------------------------------------------------


def test_missing_api_key_names_the_variable(fake_runpod: FakeRunPod, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = invoke("up", "--volume-id", "v")
    assert result.exit_code == 4
    assert "RUNPOD_API_KEY is not set" in result.output
    assert "runpod.io/console/user/settings" in result.output
    assert fake_runpod.calls == []


def test_a_refused_api_key_is_reported_without_showing_it(fake_runpod: FakeRunPod, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_wrong_key_0123456789")
    result = invoke("status", "--json")
    assert result.exit_code == 4
    error = as_json(result)["error"]
    assert error["type"] == "PodError" and error["exit_code"] == 4
    assert error["message"].startswith("RunPod refused RUNPOD_API_KEY")
    assert "rp_wrong_key_0123456789" not in result.output


def test_missing_comfy_token_says_how_to_make_one(fake_runpod: FakeRunPod):
    result = invoke("up", "--volume-id", VOLUME["id"])
    assert result.exit_code == 4
    assert "CHARPACK_TOKEN is not set" in result.output
    assert "secrets.token_urlsafe(32)" in result.output
    assert "podFindAndDeployOnDemand" not in fake_runpod.ops()


def test_missing_volume_lists_the_accounts_volumes(fake_runpod: FakeRunPod, monkeypatch):
    fake_runpod.volumes = [VOLUME]
    monkeypatch.setenv("CHARPACK_COMFY_TOKEN", "k" * 43)
    result = invoke("up")
    assert result.exit_code == 4
    assert "no network volume chosen" in result.output
    assert "vol123abc (charpack, 50 GB, EU-RO-1)" in result.output
    assert "podFindAndDeployOnDemand" not in fake_runpod.ops()


def test_without_the_sdk_the_error_names_the_extra(fake_runpod: FakeRunPod, monkeypatch):
    monkeypatch.setitem(sys.modules, "runpod", None)  # as if `charpack[pod]` were not installed
    result = invoke("status")
    assert result.exit_code == 4
    assert "pip install 'charpack[pod]'" in result.output


# -- the lifecycle ----------------------------------------------------------------------------


@pytest.mark.nginx
@pytest.mark.server
def test_up_creates_the_pod_and_waits_until_comfyui_answers_through_the_proxy(
    pod_env: FakeRunPod, auth_proxy: AuthProxy
):
    result = invoke("up", "--json", "--poll-seconds", "0.05")

    assert result.exit_code == 0, result.output
    pod = as_json(result)["pod"]
    assert pod["url"] == auth_proxy.url and pod["healthy"] is True
    assert pod["status"] == "RUNNING" and pod["gpu"] == "RTX 4090"
    (deploy,) = [c.input for c in pod_env.calls if c.operation == "podFindAndDeployOnDemand"]
    spec = load_pod_spec()
    assert deploy["gpuTypeId"] == "NVIDIA GeForce RTX 4090"
    assert deploy["imageName"] == spec.image
    assert deploy["networkVolumeId"] == VOLUME["id"]
    assert deploy["dataCenterId"] == "EU-RO-1"  # the SDK placed it next to the volume
    assert deploy["volumeMountPath"] == "/workspace"
    assert deploy["ports"] == "8188/http,22/tcp"
    assert "12.8" in deploy["allowedCudaVersions"]
    assert "/workspace/charpack/runpod/start.sh" in deploy["dockerArgs"]
    assert deploy["env"]["CHARPACK_COMFY_TOKEN"] == auth_proxy.token
    assert deploy["env"]["CIVITAI_TOKEN"] == CIVITAI
    assert deploy["env"]["CHARPACK_REPO"] == spec.repo_url
    assert "RUNPOD_API_KEY" not in deploy["env"]
    _secrets_absent(result.output, pod_env, auth_proxy.token)


@pytest.mark.nginx
@pytest.mark.server
def test_up_twice_reuses_the_running_pod(pod_env: FakeRunPod):
    first = as_json(invoke("up", "--json", "--poll-seconds", "0.05"))["pod"]
    second = invoke("up", "--poll-seconds", "0.05")
    assert second.exit_code == 0, second.output
    assert f"ready pod {first['pod_id']}" in second.output
    assert pod_env.ops().count("podFindAndDeployOnDemand") == 1


@pytest.mark.nginx
@pytest.mark.server
def test_down_stops_the_pod_and_up_resumes_it(pod_env: FakeRunPod):
    pod_id = as_json(invoke("up", "--json", "--poll-seconds", "0.05"))["pod"]["pod_id"]

    down = invoke("down", "--json")

    assert down.exit_code == 0, down.output
    assert as_json(down)["pods"][0]["status"] == "EXITED"
    status = as_json(invoke("status", "--json"))["pods"]
    assert [(p["pod_id"], p["status"]) for p in status] == [(pod_id, "EXITED")]

    again = as_json(invoke("up", "--json", "--poll-seconds", "0.05"))["pod"]

    assert again["pod_id"] == pod_id and again["healthy"] is True
    assert pod_env.ops().count("podResume") == 1
    assert pod_env.ops().count("podFindAndDeployOnDemand") == 1


@pytest.mark.nginx
@pytest.mark.server
def test_a_pod_that_cannot_resume_is_replaced(pod_env: FakeRunPod):
    old = pod_env.add_pod("charpack", "EXITED")
    pod_env.resume_error = "There are not enough free GPUs on the host machine to start this pod."

    result = invoke("up", "--poll-seconds", "0.05")

    assert result.exit_code == 0, result.output
    assert "not enough free GPUs" in result.output and "replacing it" in result.output
    assert old not in pod_env.pods
    assert pod_env.ops().count("podTerminate") == 1
    assert pod_env.ops().count("podFindAndDeployOnDemand") == 1


@pytest.mark.nginx
@pytest.mark.server
def test_a_pod_with_another_token_is_a_clear_auth_error(pod_env: FakeRunPod, monkeypatch):
    monkeypatch.setenv("CHARPACK_COMFY_TOKEN", "other" * 9)
    result = invoke("up", "--poll-seconds", "0.05")
    assert result.exit_code == 3
    assert "refused our token" in result.output
    assert "charpack pod down --terminate" in result.output


@pytest.mark.nginx
@pytest.mark.server
def test_up_shows_what_provisioning_could_not_do(pod_env: FakeRunPod, auth_proxy: AuthProxy):
    report = auth_proxy.run_dir / "provision-report.json"
    report.write_text(
        json.dumps(
            {
                "ok": False,
                "failures": 1,
                "outcomes": [
                    {
                        "step": "model",
                        "item": "biglove_xl",
                        "status": "failed",
                        "detail": "needs a CivitAI token and CIVITAI_TOKEN is not set",
                        "fix": "export CIVITAI_TOKEN=<token>",
                    }
                ],
            }
        )
    )
    report.chmod(0o644)
    try:
        result = invoke("up", "--poll-seconds", "0.05")
    finally:
        report.unlink()
    assert result.exit_code == 0, result.output
    assert "provisioning reported 1 problem(s)" in result.output
    assert "biglove_xl: needs a CivitAI token and CIVITAI_TOKEN is not set" in result.output


@pytest.mark.nginx
@pytest.mark.server
def test_status_reports_health_and_down_on_nothing_is_harmless(pod_env: FakeRunPod):
    assert invoke("down").output.startswith("nothing to stop")
    invoke("up", "--json", "--poll-seconds", "0.05")
    (pod,) = as_json(invoke("status", "--json"))["pods"]
    assert pod["status"] == "RUNNING" and pod["healthy"] is True


@pytest.mark.nginx
@pytest.mark.server
def test_pod_session_stops_the_pod_after_the_block_even_when_it_fails(
    pod_env: FakeRunPod, auth_proxy: AuthProxy
):
    spec = load_pod_spec()
    with pytest.raises(RuntimeError, match="pack failed"):
        with pod_session(
            spec=spec, api_key=os.environ["RUNPOD_API_KEY"], comfy_token=auth_proxy.token
        ) as info:
            assert info.healthy
            raise RuntimeError("pack failed")
    assert pod_env.pods[info.pod_id]["desiredStatus"] == "EXITED"


def test_a_manifest_without_pod_settings_is_a_pod_error(tmp_path: Path, monkeypatch):
    broken = tmp_path / "manifest.toml"
    broken.write_text("schema = 1\n")
    monkeypatch.setenv("CHARPACK_POD_MANIFEST", str(broken))
    with pytest.raises(PodError, match="unusable"):
        load_pod_spec()


@pytest.mark.nginx
@pytest.mark.server
def test_the_orchestrator_client_runs_a_job_on_the_pod_with_its_token(
    pod_env: FakeRunPod, auth_proxy: AuthProxy, tmp_path: Path
):
    info = PodInfo(
        **{
            **as_json(invoke("up", "--json", "--poll-seconds", "0.05"))["pod"],
            "provision_failures": (),
        }
    )
    server = info.server(token=auth_proxy.token)
    color, prefix, pid = fresh("pod")
    with ComfyClient(config=server) as client, EventStream(config=server) as stream:
        assert stream.wait_connected(30), "the websocket did not connect through the proxy"
        client.submit(
            invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
        )
        result = finished(
            client=client, stream=stream, prompt_id=pid, deadline=time.monotonic() + 120
        )
        assert result.status is JobStatus.SUCCESS
        (ref,) = result.outputs
        got = client.download(ref, tmp_path / "pack" / "look_001.png")
    assert got.size > 0 and got.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    without = ServerConfig(url=info.url, name="no token")
    with ComfyClient(config=without) as client, pytest.raises(AuthError):
        client.submit(
            invert_graph(color=color + 1, prefix=prefix), prompt_id=fresh("x")[2], client_id="c"
        )


def test_loading_the_sdk_leaves_the_logging_levels_alone():
    # The runpod package forces urllib3's level on import; `charpack -v` must keep its debug.
    code = (
        "import logging\n"
        "from charpack.pod.api import RunPodApi\n"
        "logging.getLogger('urllib3').setLevel(logging.DEBUG)\n"
        "RunPodApi(api_key='k')\n"
        "print(logging.getLogger('urllib3').level)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == str(logging.DEBUG)


# -- the pod runs this client's charpack; CivitAI versions are the user's choice -------------


@pytest.mark.nginx
@pytest.mark.server
def test_up_pins_the_pod_to_this_clients_version_and_the_chosen_civitai_version(
    pod_env: FakeRunPod,
):
    result = invoke(
        "up", "--json", "--poll-seconds", "0.05", "--civitai-version", "biglove_xl=1744439"
    )

    assert result.exit_code == 0, result.output
    (deploy,) = [c.input for c in pod_env.calls if c.operation == "podFindAndDeployOnDemand"]
    assert deploy["env"]["CHARPACK_REF"] == pod_version.client_version().ref
    assert deploy["env"]["CHARPACK_CIVITAI_VERSIONS"] == "biglove_xl=1744439"
    # The "pod" (the real server behind the proxy) runs this checkout's nodes: nothing to say.
    assert as_json(result)["pod"]["provision_failures"] == []


@pytest.mark.nginx
@pytest.mark.server
def test_up_without_a_civitai_version_says_how_in_one_line(pod_env: FakeRunPod):
    result = invoke("up", "--poll-seconds", "0.05")

    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "civitai" in line.lower()]
    assert lines == [
        "biglove_xl: no CivitAI version chosen; choose one on "
        "https://civitai.com/models/897413 and pass charpack pod up --civitai-version "
        "biglove_xl=<versionId>"
    ]


def test_a_bad_civitai_version_is_refused_before_anything_is_created(fake_runpod: FakeRunPod):
    result = invoke("up", "--volume-id", "v", "--civitai-version", "biglove=latest")
    assert result.exit_code == 4
    assert "'biglove=latest': expected KEY=VERSION_ID" in result.output
    assert fake_runpod.calls == []


@pytest.mark.nginx
@pytest.mark.server
def test_a_pod_created_at_another_version_is_replaced_not_resumed(pod_env: FakeRunPod):
    old = pod_env.add_pod("charpack", "RUNNING")
    pod_env.pods[old]["env"] = ["CHARPACK_REF=main", "CHARPACK_COMFY_TOKEN=x"]

    result = invoke("up", "--poll-seconds", "0.05")

    assert result.exit_code == 0, result.output
    ref = pod_version.client_version().ref
    assert f"replacing pod {old}: it runs charpack main, this client is {ref}" in result.output
    assert old not in pod_env.pods
    assert pod_env.ops().count("podFindAndDeployOnDemand") == 1
    (new,) = pod_env.pods.values()
    assert f"CHARPACK_REF={ref}" in new["env"]


@pytest.mark.nginx
@pytest.mark.server
def test_a_pod_whose_nodes_are_not_this_clients_version_is_reported(
    pod_env: FakeRunPod, monkeypatch: pytest.MonkeyPatch
):
    # As when the pod could not fetch the client's commit (never pushed): the real server's
    # nodes are this checkout's, the client claims another release.
    monkeypatch.setattr(pod_version, "client_version", lambda: CharpackVersion("0.2.0"))

    result = invoke("up", "--poll-seconds", "0.05")

    assert result.exit_code == 0, result.output
    assert "provisioning reported 1 problem(s)" in result.output
    assert "charpack nodes: server runs charpack nodes 0.1.0" in result.output
    assert "this client is 0.2.0" in result.output and "could not check out v0.2.0" in result.output
