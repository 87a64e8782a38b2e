"""``charpack endpoint up|status|down``: the RunPod Serverless endpoint that runs charpack jobs.

Public API (used by ``charpack endpoint`` and by the run's bill):

- `load_endpoint_spec` — what to create, from ``runpod/manifest.toml`` ``[serverless]`` plus
  options (image, GPU type, max workers, network volume);
- `endpoint_up` — create the endpoint named ``spec.name``, or update the settings that differ;
- `endpoint_status` — the endpoint, its workers, its queue (the job API's ``/health``) and what
  RunPod billed for it; `endpoint_down` — delete it (refused while jobs are queued or running);
- `endpoint_price` — the endpoint's GPU type and its price per worker second, for the report.

Through RunPod's REST API v2 (``$RUNPOD_API_BASE_URL/v2/serverless``, default
``https://api.runpod.io``: the host the SDK's GraphQL uses too, so tests point both at stand-ins
with one variable). The endpoint is created from the container settings directly (v2 needs no
template). Its GPU is one type: its serverless pool from ``GET /v2/catalog/gpus`` with the
pool's other cards excluded, so a worker second has one price, the catalog's. The worker's S3
settings travel as the endpoint's environment (RunPod stores them with it) and are never shown.
It does not submit jobs (:mod:`charpack.serverless.backend` does).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from ..comfy.auth import redact, register_secret
from ..errors import PodError
from ..pod.api import API_KEY_ENV, api_key_from_env
from ..pod.spec import MANIFEST_ENV, VOLUME_ENV, default_manifest_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "EndpointInfo",
    "EndpointPrice",
    "EndpointSpec",
    "api_key_from_env",
    "endpoint_down",
    "endpoint_price",
    "endpoint_status",
    "endpoint_up",
    "load_endpoint_spec",
]

log = logging.getLogger(__name__)

API_BASE_ENV = "RUNPOD_API_BASE_URL"
DEFAULT_API_BASE = "https://api.runpod.io"
JOBS_BASE_ENV = "RUNPOD_ENDPOINT_BASE_URL"  # the job API (/run, /health): another host
DEFAULT_JOBS_BASE = "https://api.runpod.ai/v2"
IMAGE_ENV = "CHARPACK_ENDPOINT_IMAGE"
# What the worker needs from the environment (charpack.serverless.objects reads the same names).
WORKER_ENV_REQUIRED = ("CHARPACK_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
WORKER_ENV_OPTIONAL = ("CHARPACK_S3_ENDPOINT_URL", "CHARPACK_S3_PREFIX", "AWS_DEFAULT_REGION")
WORKER_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SPEND_LIMIT_PER_HOUR = 80.0  # RunPod's default account spend limit (serverless/pricing docs)


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


@dataclass(frozen=True)
class EndpointPrice:
    """What one worker second of an endpoint costs, and where that number comes from."""

    gpu_type: str
    gpu_count: int
    usd_per_s: float
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu_type": self.gpu_type,
            "gpu_count": self.gpu_count,
            "usd_per_s": self.usd_per_s,
            "source": self.source,
        }


@dataclass(frozen=True)
class EndpointInfo:
    """One endpoint as charpack reports it."""

    endpoint_id: str
    name: str
    image: str
    gpu_type: str
    workers_min: int
    workers_max: int
    idle_timeout_s: int | None
    network_volumes: tuple[str, ...]
    data_centers: tuple[str, ...]
    price: EndpointPrice | None = None
    changed: tuple[str, ...] = ()  # what `up` created or updated ("created", "workers.max", ...)
    workers: dict[str, int] | None = None  # running/idle/initializing/... (status)
    jobs: dict[str, int] | None = None  # inQueue/inProgress/completed/failed (status)
    billed_usd: float | None = None  # what RunPod billed for it, last 30 days (status)

    @property
    def max_per_hour(self) -> float | None:
        """Dollars per hour with every allowed worker busy."""
        return None if self.price is None else self.price.usd_per_s * 3600 * self.workers_max

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "name": self.name,
            "image": self.image,
            "gpu_type": self.gpu_type,
            "workers_min": self.workers_min,
            "workers_max": self.workers_max,
            "idle_timeout_s": self.idle_timeout_s,
            "network_volumes": list(self.network_volumes),
            "data_centers": list(self.data_centers),
            "price": None if self.price is None else self.price.to_json(),
            "max_per_hour": None if self.max_per_hour is None else round(self.max_per_hour, 4),
            "changed": list(self.changed),
            "workers": self.workers,
            "jobs": self.jobs,
            "billed_usd": self.billed_usd,
        }


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


class RestApi:
    """RunPod's REST API v2 with the key set; every failure becomes a `PodError` that says what
    to do. Request bodies (which carry the worker's secrets) are never logged."""

    def __init__(self, *, api_key: str, base_url: str | None = None) -> None:
        base = base_url or os.environ.get(API_BASE_ENV, "").strip() or DEFAULT_API_BASE
        self.base = base.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            r = self._session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise PodError(
                f"cannot reach the RunPod API to {what} ({type(exc).__name__}); check the "
                "network and retry"
            ) from None
        if r.status_code in (401, 403):
            raise PodError(
                f"RunPod refused {API_KEY_ENV} while trying to {what}; check the key and its "
                "permissions (https://www.runpod.io/console/user/settings)"
            )
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise PodError(f"RunPod could not {what}: {_problem(r)}")
        return r.json() if r.content else {}


def _problem(r: requests.Response) -> str:
    """An RFC 9457 problem (title, status, detail, errors) as one line."""
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {r.status_code}"
    parts = [str(body.get("detail") or body.get("title") or f"HTTP {r.status_code}")]
    parts += [str(e) for e in body.get("errors") or []]
    return redact("; ".join(parts))[:500]


def _worker_env(env: Mapping[str, str], secret_refs: Mapping[str, str]) -> dict[str, str]:
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


def _gpu(api: RestApi, spec: EndpointSpec) -> tuple[dict[str, Any], EndpointPrice]:
    """The ``gpu`` block pinning ``spec.gpu_type`` (its pool minus the pool's other cards)."""
    gpus = (api.call("GET", "/v2/catalog/gpus", "list GPU types") or {}).get("gpus") or []
    found = next((g for g in gpus if g.get("id") == spec.gpu_type), None)
    if found is None or not found.get("pool"):
        offered = sorted(str(g.get("id")) for g in gpus if g.get("pool"))
        raise PodError(
            f"GPU type {spec.gpu_type!r} is not in a RunPod serverless pool; use one of: "
            f"{', '.join(offered) or 'none listed'} (serverless.gpu_type or --gpu-type)"
        )
    pool = str(found["pool"])
    others = sorted(str(g["id"]) for g in gpus if g.get("pool") == pool and g["id"] != found["id"])
    block: dict[str, Any] = {"pools": [pool], "count": 1}
    if others:
        block["excludedTypes"] = others
    if spec.allowed_cuda_versions:
        block["allowedCudaVersions"] = list(spec.allowed_cuda_versions)
    return block, _catalog_price(found, spec)


def _catalog_price(gpu: Mapping[str, Any], spec: EndpointSpec, count: int = 1) -> EndpointPrice:
    hourly = (gpu.get("price") or {}).get("serverless")
    if isinstance(hourly, (int, float)) and hourly > 0:
        return EndpointPrice(
            spec.gpu_type, count, hourly * count / 3600, f"RunPod catalog, pool {gpu.get('pool')}"
        )
    return _manifest_price(spec, count)


def _manifest_price(spec: EndpointSpec, count: int = 1) -> EndpointPrice:
    if spec.price_per_s <= 0:
        raise PodError(
            f"no serverless price known for {spec.gpu_type!r}: RunPod's catalog lists none and "
            "runpod/manifest.toml's serverless.price_per_s is for another GPU type"
        )
    return EndpointPrice(
        spec.gpu_type, count, spec.price_per_s * count, "runpod/manifest.toml list price"
    )


def _volume(api: RestApi, spec: EndpointSpec) -> dict[str, Any]:
    if spec.network_volume_id:
        found = api.call(
            "GET", f"/v2/network-volumes/{spec.network_volume_id}", "read the network volume"
        )
        if found:
            return dict(found)
    volumes = (api.call("GET", "/v2/network-volumes", "list network volumes") or {}).get(
        "networkVolumes"
    ) or []
    listing = (
        "; ".join(
            f"{v.get('id')} ({v.get('name')}, {v.get('size')} GB, {v.get('dataCenter')})"
            for v in volumes
        )
        or "none yet: create one at https://www.runpod.io/console/user/storage"
    )
    what = (
        f"network volume {spec.network_volume_id!r} is not in this account"
        if spec.network_volume_id
        else f"no network volume chosen: pass --volume-id or export {VOLUME_ENV}=<id>"
    )
    raise PodError(
        f"{what}; the endpoint's workers read the models from it (the pod's volume, "
        f"provisioned by charpack pod up). Your volumes: {listing}"
    )


def _desired(spec: EndpointSpec, gpu: dict[str, Any], volume: Mapping[str, Any],
             env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
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


def _differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
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


def _mine(api: RestApi, spec: EndpointSpec, endpoint_id: str | None) -> list[dict[str, Any]]:
    if endpoint_id:
        found = api.call("GET", f"/v2/serverless/{endpoint_id}", f"read endpoint {endpoint_id}")
        if not found:
            raise PodError(f"no endpoint {endpoint_id} in this account; see charpack endpoint "
                           "status")  # fmt: skip
        return [dict(found)]
    listed = (api.call("GET", "/v2/serverless", "list endpoints") or {}).get("endpoints") or []
    return [dict(e) for e in listed if e.get("name") == spec.name]


def _info(e: Mapping[str, Any], price: EndpointPrice | None, spec: EndpointSpec,
          **extra: Any) -> EndpointInfo:  # fmt: skip
    workers = e.get("workers") or {}
    return EndpointInfo(
        endpoint_id=str(e["id"]),
        name=str(e.get("name", "")),
        image=str(e.get("image", "")),
        gpu_type=price.gpu_type if price else spec.gpu_type,
        workers_min=int(workers.get("min", 0)),
        workers_max=int(workers.get("max", 0)),
        idle_timeout_s=workers.get("idleTimeout"),
        network_volumes=tuple(str(v) for v in e.get("networkVolumes") or ()),
        data_centers=tuple(str(v) for v in e.get("dataCenterIds") or ()),
        price=price,
        **extra,
    )


def endpoint_up(
    *,
    spec: EndpointSpec,
    api_key: str,
    env: Mapping[str, str] | None = None,
    secret_refs: Mapping[str, str] | None = None,
) -> EndpointInfo:
    """Create the endpoint named ``spec.name``, or PATCH the settings of the existing one that
    differ from ``spec``; idempotent (a second call changes nothing). ``secret_refs`` passes
    worker variables as references to RunPod secrets instead of their values."""
    worker_env = _worker_env(os.environ if env is None else env, secret_refs or {})
    api = RestApi(api_key=api_key)
    volume = _volume(api, spec)
    gpu, price = _gpu(api, spec)
    want = _desired(spec, gpu, volume, worker_env)
    mine = _mine(api, spec, None)
    if len(mine) > 1:
        ids = ", ".join(str(e["id"]) for e in mine)
        raise PodError(
            f"{len(mine)} endpoints are named {spec.name!r} ({ids}); delete the extra ones "
            "(charpack endpoint down --endpoint-id ID) or choose another --name"
        )
    if not mine:
        created = api.call("POST", "/v2/serverless", f"create endpoint {spec.name}", json=want)
        log.info("created endpoint %s (%s)", created.get("id"), spec.gpu_type)
        return _info(created, price, spec, changed=("created",))
    have = mine[0]
    patch = _differences(have, want)
    if not patch:
        return _info(have, price, spec)
    updated = api.call(
        "PATCH", f"/v2/serverless/{have['id']}", f"update endpoint {have['id']}", json=patch
    )
    log.info("updated endpoint %s: %s", have["id"], ", ".join(sorted(patch)))
    return _info(updated or have, price, spec, changed=tuple(sorted(patch)))


def _price_of(api: RestApi, spec: EndpointSpec, e: Mapping[str, Any]) -> EndpointPrice:
    """The price of ``e``'s GPU: its pool's catalog price (the types it did not exclude)."""
    gpu = e.get("gpu") or {}
    pools = list(gpu.get("pools") or [])
    count = int(gpu.get("count") or 1)
    try:
        gpus = (api.call("GET", "/v2/catalog/gpus", "list GPU types") or {}).get("gpus") or []
    except PodError:
        gpus = []
    excluded = set(gpu.get("excludedTypes") or ())
    kept = [g for g in gpus if g.get("pool") in pools and g.get("id") not in excluded]
    if kept:
        dearest = max(kept, key=lambda g: (g.get("price") or {}).get("serverless") or 0)
        names = sorted(str(g["id"]) for g in kept)
        named = replace(spec, gpu_type=names[0] if len(names) == 1 else " | ".join(names))
        return _catalog_price(dearest, named, count)
    return _manifest_price(spec, count)


def endpoint_price(*, endpoint_id: str, api_key: str, spec: EndpointSpec) -> EndpointPrice:
    """What a worker second of endpoint ``endpoint_id`` costs (the bill of a run on it)."""
    api = RestApi(api_key=api_key)
    return _price_of(api, spec, _mine(api, spec, endpoint_id)[0])


def _health(endpoint_id: str, api_key: str) -> dict[str, Any] | None:
    base = os.environ.get(JOBS_BASE_ENV, "").strip() or DEFAULT_JOBS_BASE
    try:
        r = requests.get(
            f"{base.rstrip('/')}/{endpoint_id}/health",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=15,
        )
    except requests.RequestException:
        return None
    return dict(r.json()) if r.ok else None


def _billed(api: RestApi, endpoint_id: str) -> float | None:
    try:
        found = api.call(
            "GET",
            "/v2/billing/serverless",
            "read the endpoint's billing",
            params={"serverlessId": endpoint_id, "bucketSize": "day", "lastN": 30},
        )
    except PodError:
        return None
    records = (found or {}).get("records")
    if not isinstance(records, list):
        return None
    return round(sum(float(r.get("totalAmount") or 0) for r in records), 4)


def endpoint_status(
    *, spec: EndpointSpec, api_key: str, endpoint_id: str | None = None
) -> list[EndpointInfo]:
    """The endpoint(s) named ``spec.name`` (or ``endpoint_id``): settings, price, workers,
    queue and the last 30 days' bill."""
    api = RestApi(api_key=api_key)
    out = []
    for e in _mine(api, spec, endpoint_id):
        eid = str(e["id"])
        workers = api.call("GET", f"/v2/serverless/{eid}/workers", "list the endpoint's workers")
        health = _health(eid, api_key) or {}
        jobs = health.get("jobs")
        out.append(
            _info(
                e,
                _price_of(api, spec, e),
                spec,
                workers=dict((workers or {}).get("summary") or {}) or None,
                jobs=dict(jobs) if isinstance(jobs, dict) else None,
                billed_usd=_billed(api, eid),
            )
        )
    return out


def endpoint_down(
    *, spec: EndpointSpec, api_key: str, endpoint_id: str | None = None, force: bool = False
) -> list[EndpointInfo]:
    """Delete the endpoint(s) named ``spec.name`` (or ``endpoint_id``). RunPod cancels queued
    and running jobs on delete, so a busy endpoint is refused unless ``force``."""
    api = RestApi(api_key=api_key)
    done = []
    for e in _mine(api, spec, endpoint_id):
        eid = str(e["id"])
        health = _health(eid, api_key)
        if health is None and not force:
            raise PodError(
                f"cannot read endpoint {eid}'s queue (its /health at ${JOBS_BASE_ENV} or "
                f"{DEFAULT_JOBS_BASE} did not answer), so deleting it might cancel jobs; retry, "
                "or pass --force to delete it anyway"
            )
        jobs = (health or {}).get("jobs") or {}
        busy = int(jobs.get("inQueue", 0)) + int(jobs.get("inProgress", 0))
        if busy and not force:
            raise PodError(
                f"endpoint {eid} still has {busy} job(s) queued or running; deleting it cancels "
                "them. Let the run finish (or stop it), then retry; --force deletes anyway"
            )
        api.call("DELETE", f"/v2/serverless/{eid}", f"delete endpoint {eid}")
        done.append(_info(e, None, spec, changed=("deleted",)))
    return done
