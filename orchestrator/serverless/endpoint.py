"""``charpack endpoint up|status|down``: the RunPod Serverless endpoint that runs charpack jobs.

Public API (used by ``charpack endpoint`` and by the run's bill):

- `load_endpoint_spec` — what to create, from ``runpod/manifest.toml`` ``[serverless]`` plus
  options (image, GPU type, max workers, network volume);
- `endpoint_up` — create the endpoint named ``spec.name``, or update the settings that differ;
- `endpoint_status` — the endpoint, its workers, its queue (the job API's ``/health``) and what
  RunPod billed for it; `endpoint_down` — delete it (refused while jobs are queued or running);
- `endpoint_price` — the endpoint's GPU type and its price per worker second, for the report.

Through RunPod's REST API v2 (:mod:`.rest_api`). This module owns the endpoint's lifecycle
(finding it by name, its network volume, create or PATCH, status, delete) and
:class:`EndpointInfo`; the spec, the workers' environment and the body to create are
:mod:`.endpoint_spec`'s, the GPU block and its price :mod:`.pricing`'s. It does not submit jobs
(:mod:`charpack.serverless.backend` does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import PodError
from ..pod.api import api_key_from_env
from ..pod.spec import VOLUME_ENV
from .endpoint_spec import (
    EndpointSpec,
    desired_body,
    differences,
    load_endpoint_spec,
    worker_environment,
)
from .pricing import EndpointPrice, gpu_block, price_of
from .rest_api import RestApi

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

JOBS_BASE_ENV = "RUNPOD_ENDPOINT_BASE_URL"  # the job API (/run, /health): another host
DEFAULT_JOBS_BASE = "https://api.runpod.ai/v2"
SPEND_LIMIT_PER_HOUR = 80.0  # RunPod's default account spend limit (serverless/pricing docs)


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
    worker_env = worker_environment(os.environ if env is None else env, secret_refs or {})
    api = RestApi(api_key=api_key)
    volume = _volume(api, spec)
    gpu, price = gpu_block(api, spec)
    want = desired_body(spec, gpu, volume, worker_env)
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
    patch = differences(have, want)
    if not patch:
        return _info(have, price, spec)
    updated = api.call(
        "PATCH", f"/v2/serverless/{have['id']}", f"update endpoint {have['id']}", json=patch
    )
    log.info("updated endpoint %s: %s", have["id"], ", ".join(sorted(patch)))
    return _info(updated or have, price, spec, changed=tuple(sorted(patch)))


def endpoint_price(*, endpoint_id: str, api_key: str, spec: EndpointSpec) -> EndpointPrice:
    """What a worker second of endpoint ``endpoint_id`` costs (the bill of a run on it)."""
    api = RestApi(api_key=api_key)
    return price_of(api, spec, _mine(api, spec, endpoint_id)[0])


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
                price_of(api, spec, e),
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
