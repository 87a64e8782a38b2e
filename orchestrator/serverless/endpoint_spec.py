"""What RunPod Serverless endpoint to create: :class:`EndpointSpec`, read by
:func:`load_endpoint_spec` from ``runpod/manifest.toml`` ``[serverless]`` plus options (image,
GPU type, max workers, network volume); the workers' environment (the S3 settings, which travel
as the endpoint's environment and are never shown, or references to RunPod secrets); the REST
v2 body created from the container settings directly (v2 needs no template), and the fields an
existing endpoint lacks.

It calls no API (:mod:`.endpoint` does) and prices nothing (:mod:`.pricing`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..comfy.auth import register_secret
from ..errors import PodError
from ..pod.spec import MANIFEST_ENV, VOLUME_ENV, default_manifest_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "IMAGE_ENV",
    "WORKER_ENV_OPTIONAL",
    "WORKER_ENV_REQUIRED",
    "WORKER_SECRETS",
    "EndpointSpec",
    "desired_body",
    "differences",
    "load_endpoint_spec",
    "worker_environment",
]

IMAGE_ENV = "CHARPACK_ENDPOINT_IMAGE"
# What the worker needs from the environment (charpack.serverless.objects reads the same names).
WORKER_ENV_REQUIRED = ("CHARPACK_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
WORKER_ENV_OPTIONAL = ("CHARPACK_S3_ENDPOINT_URL", "CHARPACK_S3_PREFIX", "AWS_DEFAULT_REGION")
WORKER_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    image: str
    gpu_type: str
    price_per_s: float  # the manifest's list price, when the catalog cannot be read
    max_workers: int
    min_workers: int
    idle_timeout_s: int
    execution_timeout_s: int
    queue_delay_s: float
    flashboot: bool
    container_disk_gb: int
    allowed_cuda_versions: tuple[str, ...]
    network_volume_id: str = ""


def load_endpoint_spec(
    *,
    manifest_path: Path | None = None,
    name: str | None = None,
    image: str | None = None,
    gpu_type: str | None = None,
    max_workers: int | None = None,
    network_volume_id: str | None = None,
) -> EndpointSpec:
    """The endpoint to create: the manifest's ``[serverless]`` table, options winning."""
    path = manifest_path or default_manifest_path()
    try:
        t = tomllib.loads(path.read_text(encoding="utf-8"))["serverless"]
        spec = EndpointSpec(
            name=str(t["name"]),
            image=str(t["image"]),
            gpu_type=str(t["gpu_type"]),
            price_per_s=float(t["price_per_s"]),
            max_workers=int(t["max_workers"]),
            min_workers=int(t["min_workers"]),
            idle_timeout_s=int(t["idle_timeout_s"]),
            execution_timeout_s=int(t["execution_timeout_s"]),
            queue_delay_s=float(t["queue_delay_s"]),
            flashboot=bool(t["flashboot"]),
            container_disk_gb=int(t["container_disk_gb"]),
            allowed_cuda_versions=tuple(str(v) for v in t["allowed_cuda_versions"]),
        )
    except FileNotFoundError:
        raise PodError(
            f"{path} not found: reinstall charpack with its recipe or set {MANIFEST_ENV}"
        ) from None
    except (KeyError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise PodError(f"{path}: the [serverless] table is unusable ({exc})") from None
    chosen_image = (image or os.environ.get(IMAGE_ENV, "")).strip() or spec.image
    if max_workers is not None and max_workers < max(1, spec.min_workers):
        raise PodError(f"--max-workers {max_workers}: at least 1 (and the manifest's min_workers)")
    return replace(
        spec,
        name=name or spec.name,
        image=chosen_image,
        gpu_type=gpu_type or spec.gpu_type,
        price_per_s=spec.price_per_s if not gpu_type or gpu_type == spec.gpu_type else 0.0,
        max_workers=spec.max_workers if max_workers is None else max_workers,
        network_volume_id=(network_volume_id or os.environ.get(VOLUME_ENV, "")).strip(),
    )


def worker_environment(env: Mapping[str, str], secret_refs: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment; a variable in ``secret_refs`` (variable -> RunPod secret name)
    is passed as a reference to that RunPod secret (``{{ RUNPOD_SECRET_<name> }}``), so the
    endpoint stores no credential of its own."""
    for var, secret in secret_refs.items():
        if var not in (*WORKER_ENV_REQUIRED, *WORKER_ENV_OPTIONAL):
            known = ", ".join((*WORKER_ENV_REQUIRED, *WORKER_ENV_OPTIONAL))
            raise PodError(f"--runpod-secret {var}=...: {var} is not a worker setting ({known})")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", secret):
            raise PodError(
                f"--runpod-secret {var}={secret!r}: a RunPod secret name is letters, digits, "
                "'_' and '-' (create it at https://www.runpod.io/console/user/secrets)"
            )
    missing = [k for k in WORKER_ENV_REQUIRED if not env.get(k, "").strip()]
    if missing:
        raise PodError(
            f"{', '.join(missing)} not set: the endpoint's workers upload each image to your "
            "S3-compatible bucket. Export CHARPACK_S3_BUCKET, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and CHARPACK_S3_ENDPOINT_URL for storage other than AWS); "
            "see docs/serverless.md"
        )
    out = {k: env[k].strip() for k in (*WORKER_ENV_REQUIRED, *WORKER_ENV_OPTIONAL) if env.get(k)}
    register_secret(*(out[k] for k in WORKER_SECRETS))
    for var, secret in secret_refs.items():
        out[var] = "{{ RUNPOD_SECRET_" + secret + " }}"
    return out


def desired_body(
    spec: EndpointSpec, gpu: dict[str, Any], volume: Mapping[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": "QUEUE",
        "image": spec.image,
        "env": env,
        "disk": spec.container_disk_gb,
        "gpu": gpu,
        "workers": {
            "min": spec.min_workers,
            "max": spec.max_workers,
            "idleTimeout": spec.idle_timeout_s,
        },
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": spec.queue_delay_s},
        "networkVolumes": [str(volume["id"])],
        "dataCenterIds": [str(volume["dataCenter"])],  # a volume pins its data centre
        "timeout": spec.execution_timeout_s * 1000,
        "flashboot": "FLASHBOOT" if spec.flashboot else "OFF",
    }


def differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``want`` that ``have`` does not already hold, for a PATCH."""
    out: dict[str, Any] = {}
    for key, value in want.items():
        if key == "type":
            continue  # immutable, and always QUEUE for ours
        current = have.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            if any(current.get(k) != v for k, v in value.items()):
                out[key] = value
        elif current != value:
            out[key] = value
    return out
