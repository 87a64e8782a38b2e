"""Pod lifecycle: bring a RunPod GPU pod up with ComfyUI behind our auth proxy, and down again.

Public API (used by ``charpack pod`` and ``charpack run --pod``):

- `load_pod_spec` — what to create, from ``runpod/manifest.toml`` ``[pod]`` plus options;
- `ensure_pod_up` — find the named pod, resume or create it, wait until ComfyUI answers
  through the proxy, return a `PodInfo` (URL, id, provisioning failures);
- `stop_pod` — stop it (GPU billing ends; the network volume keeps everything) or terminate it;
- `pod_status` — what exists under that name; `pod_session` — up for a block, then stopped.

The pod starts by cloning the charpack repo onto the volume (first time only) and running
``runpod/start.sh``: the checkout moves to ``CHARPACK_REF`` (this client's version, so the pod's
node pack is the client's), then provisioning (idempotent) then nginx + ComfyUI. A pod created
at another version (or with other CivitAI choices) is replaced rather than resumed: its
environment is fixed at creation, and everything it provisioned lives on the network volume.
Secrets travel as the pod's environment (RunPod stores it with the pod) and are never printed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ..comfy.auth import ServerConfig, register_secret
from ..comfy.client import ComfyClient
from ..errors import AuthError, PodError, ServerUnavailable
from . import version as pod_version
from .api import PodRequest, RunPodApi, api_key_from_env
from .health import provision_failures, proxy_url, wait_healthy
from .spec import (
    CIVITAI_VERSIONS_ENV,
    DEFAULT_NAME,
    PASSED_SECRETS,
    POD_TOKEN_ENV,
    VOLUME_ENV,
    PodInfo,
    PodSpec,
    comfy_token_from_env,
    load_pod_spec,
)

__all__ = [
    "DEFAULT_NAME",
    "PodInfo",
    "PodSpec",
    "api_key_from_env",
    "comfy_token_from_env",
    "ensure_pod_up",
    "load_pod_spec",
    "pod_session",
    "pod_status",
    "stop_pod",
]

log = logging.getLogger(__name__)


def _info(pod: Mapping[str, Any], spec_port: int) -> PodInfo:
    runtime = pod.get("runtime") or {}
    machine = pod.get("machine") or {}
    return PodInfo(
        pod_id=str(pod["id"]),
        name=str(pod.get("name", "")),
        status=str(pod.get("desiredStatus", "UNKNOWN")),
        url=proxy_url(pod_id=str(pod["id"]), port=spec_port),
        gpu=machine.get("gpuDisplayName"),
        cost_per_hr=pod.get("costPerHr"),
        uptime_s=runtime.get("uptimeInSeconds"),
    )


def pod_status(*, spec: PodSpec, api_key: str) -> list[PodInfo]:
    api = RunPodApi(api_key=api_key)
    return [_info(p, spec.public_port) for p in api.pods() if p.get("name") == spec.name]


def _docker_args(spec: PodSpec) -> str:
    # RunPod passes this as the container command; the API cannot carry double quotes in it.
    repo = f"{spec.volume_mount}/{spec.repo_dir}"
    return (
        "bash -c 'set -e; if [ ! -d " + repo + "/.git ]; then git clone --quiet "
        "$CHARPACK_REPO " + repo + "; fi; exec bash " + repo + "/runpod/start.sh'"
    )


def _pod_env(spec: PodSpec, token: str) -> dict[str, str]:
    env = {
        POD_TOKEN_ENV: token,
        "CHARPACK_REPO": spec.repo_url,
        "CHARPACK_REF": spec.repo_ref,
        "CHARPACK_ROOT": spec.volume_mount,
    }
    if spec.provision_args:
        env["CHARPACK_PROVISION_ARGS"] = " ".join(spec.provision_args)
    if spec.civitai_versions:
        env[CIVITAI_VERSIONS_ENV] = _civitai_text(spec.civitai_versions)
    for name in PASSED_SECRETS:
        if value := os.environ.get(name, "").strip():
            register_secret(value)
            env[name] = value
    return env


def _civitai_text(versions: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{key}={version}" for key, version in versions)


def _env_of(pod: Mapping[str, Any]) -> dict[str, str]:
    """A pod's environment as RunPod reports it (``["KEY=value", ...]``; {} when not given)."""
    out: dict[str, str] = {}
    for item in pod.get("env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            out[key] = value
        elif isinstance(item, dict) and "key" in item:
            out[str(item["key"])] = str(item.get("value", ""))
    return out


def _outdated(pod: Mapping[str, Any], spec: PodSpec) -> str | None:
    """Why ``pod`` cannot serve ``spec`` as it is (None when it can, or when RunPod does not
    show its environment): another charpack ref, or other CivitAI versions than asked for."""
    env = _env_of(pod)
    if not env:
        return None
    ref = env.get("CHARPACK_REF", "")
    if ref != spec.repo_ref:
        return f"it runs charpack {ref or 'main'}, this client is {spec.repo_ref}"
    wanted = _civitai_text(spec.civitai_versions)
    if spec.civitai_versions and env.get(CIVITAI_VERSIONS_ENV, "") != wanted:
        had = env.get(CIVITAI_VERSIONS_ENV) or "none"
        return f"its CivitAI versions are {had}, not {wanted}"
    return None


def _create(api: RunPodApi, spec: PodSpec, token: str) -> str:
    if not spec.network_volume_id:
        volumes = api.network_volumes()
        listing = (
            "; ".join(
                f"{v.get('id')} ({v.get('name')}, {v.get('size')} GB, {v.get('dataCenterId')})"
                for v in volumes
            )
            or "none yet: create a 50 GB one at https://www.runpod.io/console/user/storage"
        )
        raise PodError(
            f"no network volume chosen: pass --volume-id or export {VOLUME_ENV}=<id>. "
            f"Your volumes: {listing}"
        )
    created = api.create(
        PodRequest(
            name=spec.name,
            image=spec.image,
            gpu_type=spec.gpu_type,
            cloud_type=spec.cloud_type,
            network_volume_id=spec.network_volume_id,
            volume_mount=spec.volume_mount,
            container_disk_gb=spec.container_disk_gb,
            ports=f"{spec.public_port}/http,22/tcp",  # 22: SSH with the account key
            env=_pod_env(spec, token),
            docker_args=_docker_args(spec),
            allowed_cuda_versions=spec.allowed_cuda_versions,
        )
    )
    log.info("created pod %s (%s)", created["id"], spec.gpu_type)
    return str(created["id"])


def ensure_pod_up(
    *,
    spec: PodSpec,
    api_key: str,
    comfy_token: str,
    timeout_s: float = 3600,
    poll_s: float = 5.0,
    on_progress: Callable[[str], None] | None = None,
) -> PodInfo:
    """Resume or create the pod named ``spec.name`` and wait until its ComfyUI answers."""
    deadline = time.monotonic() + timeout_s
    say = on_progress or (lambda _msg: None)
    api = RunPodApi(api_key=api_key)
    mine = [p for p in api.pods() if p.get("name") == spec.name]
    for pod in list(mine):
        if why := _outdated(pod, spec):
            # A pod's environment is fixed when it is created; the volume keeps the rest.
            say(f"replacing pod {pod['id']}: {why} (the network volume keeps models and outputs)")
            api.terminate(str(pod["id"]))
            mine.remove(pod)
    kept = _env_of(mine[0]) if mine else {}
    for key, model in spec.civitai_unchosen():
        if not kept.get(CIVITAI_VERSIONS_ENV):
            say(
                f"{key}: no CivitAI version chosen; choose one on https://civitai.com/models/"
                f"{model} and pass charpack pod up --civitai-version {key}=<versionId>"
            )
    running = [p for p in mine if p.get("desiredStatus") == "RUNNING"]
    if running:
        pod_id = str(running[0]["id"])
        say(f"pod {pod_id} is already running")
    elif mine:
        pod_id = str(mine[0]["id"])
        say(f"resuming pod {pod_id}")
        try:
            api.resume(pod_id)
        except PodError as exc:
            # Everything lives on the network volume, so a fresh pod elsewhere is equivalent.
            say(f"cannot resume {pod_id} ({exc}); replacing it with a new pod")
            api.terminate(pod_id)
            pod_id = _create(api, spec, comfy_token)
    else:
        say(f"creating a {spec.gpu_type} pod")
        pod_id = _create(api, spec, comfy_token)
    info = _info(api.pod(pod_id) or {"id": pod_id, "name": spec.name}, spec.public_port)
    say(f"waiting for ComfyUI at {info.url}")
    wait_healthy(url=info.url, token=comfy_token, deadline=deadline, on_progress=say, poll_s=poll_s)
    pod = api.pod(pod_id) or {"id": pod_id, "name": spec.name}
    failures = provision_failures(url=info.url, token=comfy_token)
    if problem := _version_problem(info.server(token=comfy_token), spec):
        failures.append(problem)
    return replace(_info(pod, spec.public_port), healthy=True, provision_failures=tuple(failures))


def _version_problem(config: ServerConfig, spec: PodSpec) -> str | None:
    """A line when the pod's charpack nodes are not this client's (e.g. the ref could not be
    fetched on the pod: a commit that was never pushed)."""
    try:
        with ComfyClient(config=config, attempts=2) as client:
            theirs = pod_version.server_version(client)
    except (ServerUnavailable, AuthError):
        return None  # ComfyUI answered the health probe; preflight checks again before a run
    ours = pod_version.client_version()
    if theirs is not None and theirs.matches(ours):
        return None
    problem, fix = pod_version.mismatch_message(theirs, ours)
    return (
        f"charpack nodes: {problem}; the pod could not check out {spec.repo_ref} (is that "
        f"commit pushed to {spec.repo_url}? see /workspace/logs/start.log) (fix: {fix})"
    )


def stop_pod(
    *, spec: PodSpec, api_key: str, pod_id: str | None = None, terminate: bool = False
) -> list[PodInfo]:
    """Stop (or terminate) the pod ``pod_id``, or every running pod named ``spec.name``."""
    api = RunPodApi(api_key=api_key)
    targets = [
        p for p in api.pods() if (p.get("id") == pod_id if pod_id else p.get("name") == spec.name)
    ]
    if pod_id and not targets:
        raise PodError(f"no pod {pod_id} in this RunPod account; see charpack pod status")
    done = []
    for pod in targets:
        if terminate:
            api.terminate(str(pod["id"]))
            done.append(replace(_info(pod, spec.public_port), status="TERMINATED"))
        elif pod.get("desiredStatus") == "RUNNING":
            result = api.stop(str(pod["id"]))
            done.append(
                replace(
                    _info(pod, spec.public_port), status=str(result.get("desiredStatus", "EXITED"))
                )
            )
    return done


@contextmanager
def pod_session(
    *,
    spec: PodSpec,
    api_key: str,
    comfy_token: str,
    timeout_s: float = 3600,
    on_progress: Callable[[str], None] | None = None,
) -> Iterator[PodInfo]:
    """The pod up for the duration of the block, then stopped whatever happens inside (also
    when it never became ready), so no GPU bills while nothing runs."""
    try:
        info = ensure_pod_up(
            spec=spec,
            api_key=api_key,
            comfy_token=comfy_token,
            timeout_s=timeout_s,
            on_progress=on_progress,
        )
    except BaseException:
        stop_pod(spec=spec, api_key=api_key)
        raise
    try:
        yield info
    finally:
        stop_pod(spec=spec, api_key=api_key, pod_id=info.pod_id)
