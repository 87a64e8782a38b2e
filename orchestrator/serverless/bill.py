"""The bill of a run's attempts on RunPod Serverless endpoints: worker seconds × price.

Owns reading which attempts ran on an endpoint (their ``server`` is the backend's
``runpod-endpoint:<id>``), how many worker seconds each cost and at what price, for
``charpack report`` (:mod:`charpack.folder.report`). It reads only what the pack folder's
manifest holds; no network.

Worker seconds per attempt: ``worker_s`` when the run recorded it (the handler's wall time on
the worker: inputs, ComfyUI, uploads), else ``execution_s`` (ComfyUI's execution only, so the
bill is then a lower bound and says so). Every attempt counts, failed ones too: RunPod bills
them. Not counted, because the manifest cannot know them: cold starts and the idle timeout
after the last job (``charpack endpoint status`` shows what RunPod actually billed).

Price per worker second, first found: ``$CHARPACK_PRICE_PER_WORKER_SECOND``; the price the run
recorded for that endpoint in the manifest header (``servers[<url>]["price"]``, from
:func:`charpack.serverless.endpoint.endpoint_price`); the list price in runpod/manifest.toml
``[serverless]`` for its GPU type.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CharpackError

SERVER_PREFIX = "runpod-endpoint:"
PRICE_ENV = "CHARPACK_PRICE_PER_WORKER_SECOND"


def endpoint_id_of(server: object) -> str | None:
    """The endpoint id of an attempt's ``server``, or None for a pod or plain server."""
    if isinstance(server, str) and server.startswith(SERVER_PREFIX):
        return server[len(SERVER_PREFIX) :] or None
    return None


@dataclass(frozen=True)
class EndpointBill:
    """One endpoint's part of a run: attempts, worker seconds and what they cost."""

    endpoint_id: str
    attempts: int
    worker_s: float
    measured: str  # "worker": handler wall time; "execution": ComfyUI only (a lower bound)
    usd_per_s: float
    price_source: str

    @property
    def cost(self) -> float:
        return self.worker_s * self.usd_per_s

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "attempts": self.attempts,
            "worker_s": round(self.worker_s, 3),
            "measured": self.measured,
            "usd_per_s": self.usd_per_s,
            "price_source": self.price_source,
            "cost": round(self.cost, 5),
        }


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return float(value) if ok else None


def _price(
    endpoint_id: str, servers: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[float, str]:
    raw = env.get(PRICE_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value < 0:
            raise CharpackError(
                f"{PRICE_ENV}={raw!r} is not a price: set dollars per worker second, e.g. 0.00031"
            )
        return value, f"from {PRICE_ENV}"
    recorded = (servers.get(f"{SERVER_PREFIX}{endpoint_id}") or {}).get("price")
    if isinstance(recorded, Mapping) and _number(recorded.get("usd_per_s")) is not None:
        where = recorded.get("source") or "recorded by the run"
        return float(recorded["usd_per_s"]), f"{recorded.get('gpu_type', 'GPU')}, {where}"
    from .endpoint import load_endpoint_spec  # the manifest, read only when nothing else says

    try:
        spec = load_endpoint_spec()
    except CharpackError as exc:
        raise CharpackError(f"no price per worker second for endpoint {endpoint_id}: {exc}; "
                         f"set {PRICE_ENV}") from None  # fmt: skip
    return spec.price_per_s, f"{spec.gpu_type}, runpod/manifest.toml list price"


def endpoint_bills(
    attempts: Iterable[Mapping[str, Any]],
    servers: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> list[EndpointBill]:
    """The bill of every endpoint among ``attempts`` (all of a pack's, any server)."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    estimated: set[str] = set()
    for attempt in attempts:
        eid = endpoint_id_of(attempt.get("server"))
        if eid is None:
            continue
        counts[eid] = counts.get(eid, 0) + 1
        worker = _number(attempt.get("worker_s"))
        if worker is None:
            worker = _number(attempt.get("execution_s"))
            if worker is not None or attempt.get("status") not in ("submitted", None):
                estimated.add(eid)
        seconds[eid] = seconds.get(eid, 0.0) + (worker or 0.0)
    env = os.environ if env is None else env
    bills = []
    for eid in sorted(counts):
        price, source = _price(eid, servers, env)
        measured = "execution" if eid in estimated else "worker"
        bills.append(EndpointBill(eid, counts[eid], seconds[eid], measured, price, source))
    return bills
