"""Pod lifecycle: bring a RunPod GPU pod up with ComfyUI behind our auth proxy, and down again.

Public API (used by ``charpack pod`` and ``charpack run --pod``):

- `load_pod_spec` — what to create, from ``runpod/manifest.toml`` ``[pod]`` plus options;
- `ensure_pod_up` — find the named pod, resume or create it, wait until ComfyUI answers
  through the proxy, return a `PodInfo` (URL, id, provisioning failures);
- `stop_pod` — stop it (GPU billing ends; the network volume keeps everything) or terminate it;
- `pod_status` — what exists under that name; `pod_session` — up for a block, then stopped.

The pod starts by cloning the charpack repo onto the volume (first time only) and running
``runpod/start.sh``: provisioning (idempotent) then nginx + ComfyUI. Secrets travel as the pod's
environment (RunPod stores it with the pod) and are never printed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from .auth import register_secret
from .errors import PodError
from .pod_api import PodRequest, RunPodApi, api_key_from_env
from .pod_health import provision_failures, proxy_url, wait_healthy
from .pod_spec import (
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
    for name in PASSED_SECRETS:
        if value := os.environ.get(name, "").strip():
            register_secret(value)
            env[name] = value
    return env


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
    return replace(
        _info(pod, spec.public_port),
        healthy=True,
        provision_failures=tuple(provision_failures(url=info.url, token=comfy_token)),
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
