"""The RunPod API as charpack uses it: a thin, typed layer over the ``runpod`` SDK.

Owns the lazy SDK import (an optional extra: ``pip install 'charpack[pod]'``), the API key
from ``RUNPOD_API_KEY``, and the translation of SDK failures into `PodError` messages that say
what to do. It never logs or shows an SDK query: pod mutations carry the pod's environment,
which holds tokens. The SDK sends GraphQL to ``$RUNPOD_API_BASE_URL/graphql`` (default
``https://api.runpod.io``), which is how tests point it at a local stand-in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..comfy.auth import register_secret
from ..errors import PodError

API_KEY_ENV = "RUNPOD_API_KEY"
T = TypeVar("T")


def _sdk() -> Any:
    # Importing the SDK forces some loggers' levels (urllib3, paramiko, uvicorn): keep ours,
    # so `charpack -v` still shows (redacted) HTTP debug lines after a pod command.
    names = ("urllib3", "paramiko", "uvicorn")
    levels = {name: logging.getLogger(name).level for name in names}
    missing = PodError(
        "the RunPod SDK is not installed; install the extra: pip install 'charpack[pod]'"
    )
    try:
        import runpod
    except ImportError:
        raise missing from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    if getattr(runpod, "__file__", None) is None or not hasattr(runpod, "get_pods"):
        # Without the SDK, `import runpod` from a checkout's root finds the runpod/ recipe
        # folder (a namespace package), which has no API.
        raise missing
    return runpod


def api_key_from_env(env: Mapping[str, str] | None = None) -> str:
    key = (os.environ if env is None else env).get(API_KEY_ENV, "").strip()
    if not key:
        raise PodError(
            f"{API_KEY_ENV} is not set; create an API key at "
            "https://www.runpod.io/console/user/settings and export "
            f"{API_KEY_ENV}=<key> (it is read from the environment only, never stored)"
        )
    register_secret(key)
    return key


@dataclass(frozen=True)
class PodRequest:
    """What to create (the SDK's ``create_pod`` arguments charpack uses)."""

    name: str
    image: str
    gpu_type: str
    cloud_type: str
    network_volume_id: str
    volume_mount: str
    container_disk_gb: int
    ports: str
    env: Mapping[str, str]
    docker_args: str
    allowed_cuda_versions: tuple[str, ...]


class RunPodApi:
    """Calls into the SDK with the key set, every failure turned into a `PodError`."""

    def __init__(self, *, api_key: str) -> None:
        self._runpod = _sdk()
        self._runpod.api_key = api_key

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        err = self._runpod.error
        try:
            return fn()
        except err.AuthenticationError:
            raise PodError(
                f"RunPod refused {API_KEY_ENV} while trying to {what}; check the key (or create "
                "a new one at https://www.runpod.io/console/user/settings)"
            ) from None
        except err.QueryError as exc:
            # str(exc) is RunPod's message; exc.query (which can hold tokens) is never shown.
            raise PodError(f"RunPod could not {what}: {exc.message}") from None
        except ValueError as exc:
            raise PodError(f"RunPod could not {what}: {exc}") from None
        except OSError as exc:
            raise PodError(
                f"cannot reach the RunPod API to {what} ({type(exc).__name__}); check the "
                "network and retry"
            ) from None

    def pods(self) -> list[dict[str, Any]]:
        return list(self._call("list pods", self._runpod.get_pods) or [])

    def pod(self, pod_id: str) -> dict[str, Any] | None:
        result = self._call(f"read pod {pod_id}", lambda: self._runpod.get_pod(pod_id))
        return dict(result) if result else None

    def network_volumes(self) -> list[dict[str, Any]]:
        user = self._call("list network volumes", self._runpod.get_user)
        return list((user or {}).get("networkVolumes") or [])

    def create(self, req: PodRequest) -> dict[str, Any]:
        for key, value in req.env.items():
            if any(c in value for c in '"\\\n'):
                raise PodError(
                    f"the value of {key} contains a quote, backslash or newline, which the pod "
                    "API cannot carry; use a token without them"
                )
        result = self._call(
            f"create a {req.gpu_type} pod",
            lambda: self._runpod.create_pod(
                name=req.name,
                image_name=req.image,
                gpu_type_id=req.gpu_type,
                cloud_type=req.cloud_type,
                gpu_count=1,
                volume_in_gb=0,
                container_disk_in_gb=req.container_disk_gb,
                ports=req.ports,
                volume_mount_path=req.volume_mount,
                env=dict(req.env),
                docker_args=req.docker_args,
                network_volume_id=req.network_volume_id,
                allowed_cuda_versions=list(req.allowed_cuda_versions),
            ),
        )
        return dict(result)

    def resume(self, pod_id: str) -> dict[str, Any]:
        return dict(self._call(f"resume pod {pod_id}", lambda: self._runpod.resume_pod(pod_id, 1)))

    def stop(self, pod_id: str) -> dict[str, Any]:
        return dict(self._call(f"stop pod {pod_id}", lambda: self._runpod.stop_pod(pod_id)))

    def terminate(self, pod_id: str) -> None:
        self._call(f"terminate pod {pod_id}", lambda: self._runpod.terminate_pod(pod_id))
