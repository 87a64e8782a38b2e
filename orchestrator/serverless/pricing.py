"""What one worker second of a RunPod Serverless endpoint costs: :class:`EndpointPrice`, the
``gpu`` block that pins an endpoint to one GPU type (its serverless pool from
``GET /v2/catalog/gpus`` with the pool's other cards excluded, so a worker second has one price,
the catalog's), and the price of an existing endpoint's GPU; the manifest's list price only when
the catalog lists none.

It creates nothing (:mod:`.endpoint` does) and adds up no bill (:mod:`.bill`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import PodError
from .endpoint_spec import EndpointSpec
from .rest_api import RestApi

__all__ = ["EndpointPrice", "catalog_price", "gpu_block", "manifest_price", "price_of"]


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


def gpu_block(api: RestApi, spec: EndpointSpec) -> tuple[dict[str, Any], EndpointPrice]:
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
    return block, catalog_price(found, spec)


def catalog_price(gpu: Mapping[str, Any], spec: EndpointSpec, count: int = 1) -> EndpointPrice:
    hourly = (gpu.get("price") or {}).get("serverless")
    if isinstance(hourly, (int, float)) and hourly > 0:
        return EndpointPrice(
            spec.gpu_type, count, hourly * count / 3600, f"RunPod catalog, pool {gpu.get('pool')}"
        )
    return manifest_price(spec, count)


def manifest_price(spec: EndpointSpec, count: int = 1) -> EndpointPrice:
    if spec.price_per_s <= 0:
        raise PodError(
            f"no serverless price known for {spec.gpu_type!r}: RunPod's catalog lists none and "
            "runpod/manifest.toml's serverless.price_per_s is for another GPU type"
        )
    return EndpointPrice(
        spec.gpu_type, count, spec.price_per_s * count, "runpod/manifest.toml list price"
    )


def price_of(api: RestApi, spec: EndpointSpec, e: Mapping[str, Any]) -> EndpointPrice:
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
        return catalog_price(dearest, named, count)
    return manifest_price(spec, count)
