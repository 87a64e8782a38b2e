"""A local stand-in for RunPod's REST API v2 (api.runpod.io/v2) for `charpack endpoint` tests.

Answers what `charpack endpoint` sends, in the shapes of RunPod's v2 OpenAPI schema
(docs.runpod.io/api-reference-v2): ``GET/POST /v2/serverless``, ``GET/PATCH/DELETE
/v2/serverless/{id}``, ``GET /v2/serverless/{id}/workers``, ``GET /v2/catalog/gpus`` (with
``pool`` and ``price.serverless``), ``GET /v2/network-volumes[/{id}]``, ``GET
/v2/billing/serverless``; lists wrapped in an object, errors as RFC 9457 problems. It checks
bodies as the schema does: unknown fields are 422 (``unevaluatedProperties: false``), missing
``name``/``type``/``scaling``/``image`` 400, excluded types outside the pools 400. The job API's
``GET /v2/{endpoint_id}/health`` is served too (its counts set by the test). Requests without
the right Bearer key get 401. Every request is recorded with its body for assertions.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import LoopbackServer, QuietHandler

# Catalog entries as GET /v2/catalog/gpus lists them (prices: USD per GPU hour).
GPUS = [
    {"id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "pool": "ADA_24", "memory": 24,
     "price": {"secure": 0.69, "community": 0.34, "serverless": 1.116}},
    {"id": "NVIDIA L4", "name": "L4", "pool": "AMPERE_24", "memory": 24,
     "price": {"secure": 0.43, "community": 0.29, "serverless": 0.684}},
    {"id": "NVIDIA RTX A5000", "name": "RTX A5000", "pool": "AMPERE_24", "memory": 24,
     "price": {"secure": 0.27, "community": 0.16, "serverless": 0.684}},
    {"id": "NVIDIA GeForce RTX 3090", "name": "RTX 3090", "pool": "AMPERE_24", "memory": 24,
     "price": {"secure": 0.43, "community": 0.22, "serverless": 0.684}},
    {"id": "NVIDIA H100 80GB HBM3", "name": "H100 SXM", "pool": "ADA_80_PRO", "memory": 80,
     "price": {"secure": 2.69, "community": 1.99, "serverless": 4.176}},
    {"id": "NVIDIA GeForce RTX 3080", "name": "RTX 3080", "pool": None, "memory": 10,
     "price": {"secure": 0.17, "community": 0.17}},
]  # fmt: skip
CREATE_FIELDS = {
    "args", "disk", "env", "image", "ports", "registry", "gpu", "cpu", "name", "scaling", "type",
    "dataCenterIds", "flashboot", "networkVolumes", "templateId", "timeout", "workers",
}  # fmt: skip


@dataclass
class Request:
    method: str
    path: str
    body: Any


@dataclass
class FakeRunPodRest:
    api_key: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)  # endpoint id -> /health
    billing: dict[str, list[float]] = field(default_factory=dict)  # endpoint id -> daily USD
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = LoopbackServer(_handler(self)).__enter__()
        self.url = self._server.url

    def close(self) -> None:
        self._server.__exit__()

    def calls(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests if method in (None, r.method)]

    def bodies(self, method: str, prefix: str = "/v2/serverless") -> list[Any]:
        return [r.body for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # -- dispatch ---------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self.requests.append(Request(method, path, body))
            if path == "/v2/catalog/gpus" and method == "GET":
                return 200, {"gpus": GPUS}
            if path == "/v2/network-volumes" and method == "GET":
                return 200, {"networkVolumes": self.volumes}
            if m := re.fullmatch(r"/v2/network-volumes/([\w-]+)", path):
                found = [v for v in self.volumes if v["id"] == m.group(1)]
                return (200, found[0]) if found else _problem(404, "Network volume not found")
            if path == "/v2/serverless":
                if method == "GET":
                    return 200, {"endpoints": list(self.endpoints.values())}
                if method == "POST":
                    return self._create(body)
            if m := re.fullmatch(r"/v2/serverless/(\w+)(/workers)?", path):
                return self._endpoint(method, m.group(1), bool(m.group(2)), body)
            if path == "/v2/billing/serverless" and method == "GET":
                eid = query.get("serverlessId", [""])[0]
                records = [
                    {"serverlessId": eid, "totalAmount": amount, "gpuAmount": amount,
                     "cpuAmount": 0, "diskAmount": 0, "feeAmount": 0,
                     "startTime": f"2026-11-{i + 1:02d}T00:00:00Z",
                     "endTime": f"2026-11-{i + 2:02d}T00:00:00Z"}
                    for i, amount in enumerate(self.billing.get(eid, []))
                ]  # fmt: skip
                return 200, {"records": records, "metadata": {"recordCount": len(records)}}
            if (m := re.fullmatch(r"/v2/(\w+)/health", path)) and method == "GET":
                if m.group(1) not in self.endpoints:
                    return _problem(404, "Endpoint not found")
                return 200, self.health.get(
                    m.group(1),
                    {"jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0,
                              "retried": 0}, "workers": {"idle": 0, "running": 0}},
                )  # fmt: skip
        return _problem(404, "Not Found")

    def _validate(self, body: Any, *, create: bool) -> tuple[int, Any] | None:
        if not isinstance(body, dict):
            return _problem(400, "body must be a JSON object")
        unknown = sorted(set(body) - CREATE_FIELDS - ({"type"} if create else set()))
        if unknown or (not create and "type" in body):
            return _problem(422, "Unprocessable Entity", [f"unknown field {k}" for k in unknown])
        if create:
            missing = [k for k in ("name", "type", "scaling") if k not in body]
            if "image" not in body and "templateId" not in body:
                missing.append("image")
            if missing:
                return _problem(400, "Bad Request", [f"{k} is required" for k in missing])
            if ("gpu" in body) == ("cpu" in body):
                return _problem(400, "Bad Request", ["specify exactly one of gpu or cpu"])
        gpu = body.get("gpu")
        if gpu is not None:
            pools = set(gpu.get("pools") or [])
            in_pools = {g["id"] for g in GPUS if g["pool"] in pools}
            bad = [t for t in gpu.get("excludedTypes") or [] if t not in in_pools]
            if not pools or bad:
                return _problem(400, "Bad Request", [f"{t} is not in pools" for t in bad])
        workers = body.get("workers") or {}
        if not 1 <= workers.get("idleTimeout", 5) <= 3600:
            return _problem(400, "Bad Request", ["workers.idleTimeout: 1 to 3600"])
        if workers.get("min", 0) > workers.get("max", 3):
            return _problem(400, "Bad Request", ["workers.min exceeds workers.max"])
        return None

    def _create(self, body: Any) -> tuple[int, Any]:
        if problem := self._validate(body, create=True):
            return problem
        eid = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
        endpoint = {
            "disk": 10,
            "env": {},
            "workers": {"min": 0, "max": 3, "idleTimeout": 10},
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": 300000,
            "flashboot": "OFF",
            **body,
            "id": eid,
            "createdAt": "2026-12-02T04:00:00Z",
            "requestUrls": {
                k: f"https://api.runpod.ai/v2/{eid}/{k}" for k in ("run", "runSync", "health")
            },
        }
        self.endpoints[eid] = endpoint
        return 201, endpoint

    def _endpoint(self, method: str, eid: str, workers: bool, body: Any) -> tuple[int, Any]:
        endpoint = self.endpoints.get(eid)
        if endpoint is None:
            return _problem(404, "The requested endpoint does not exist.")
        if workers and method == "GET":
            running = self.health.get(eid, {}).get("workers", {})
            summary = {"running": running.get("running", 0), "idle": running.get("idle", 0),
                       "initializing": 0, "throttled": 0, "unhealthy": 0}  # fmt: skip
            summary["total"] = sum(summary.values())
            return 200, {"workers": [], "summary": summary, "endpointVersion": 1}
        if method == "GET":
            return 200, endpoint
        if method == "PATCH":
            if problem := self._validate(body, create=False):
                return problem
            for key, value in body.items():
                if isinstance(value, dict) and isinstance(endpoint.get(key), dict):
                    endpoint[key] = {**endpoint[key], **value}
                else:
                    endpoint[key] = value
            return 200, endpoint
        if method == "DELETE":
            del self.endpoints[eid]
            return 204, None
        return _problem(405, "Method Not Allowed")


def _problem(status: int, detail: str, errors: list[str] | None = None) -> tuple[int, Any]:
    titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable"}
    body: dict[str, Any] = {"title": titles.get(status, "Error"), "status": status,
                            "detail": detail}  # fmt: skip
    if errors:
        body["errors"] = errors
    return status, body


def _handler(fake: FakeRunPodRest) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._send(*_problem(401, "a valid API key is required"))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return self._send(*_problem(400, "body is not JSON"))
            return self._send(*fake.answer(self.command, self.path, body))

        do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        def _send(self, code: int, payload: Any) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(code)
            kind = "application/problem+json" if code >= 400 else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
