"""A local stand-in for RunPod's GraphQL API (api.runpod.io/graphql) for `charpack pod` tests.

RunPod cannot be reached from tests, so this answers the operations the ``runpod`` 1.12 SDK
sends, in the shapes RunPod documents (docs.runpod.io "Manage Pods" GraphQL examples):
podFindAndDeployOnDemand, podResume, podStop, podTerminate, pod(input: {podId}),
myself { pods }, myself { networkVolumes }, gpuTypes(input: {id}). The SDK is pointed here with
its own setting, ``RUNPOD_API_BASE_URL``. Requests without the right Bearer key get 401, as
RunPod answers. Every operation is recorded with its parsed input for assertions.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer

GPU_TYPES = {
    "NVIDIA GeForce RTX 4090": {
        "displayName": "RTX 4090",
        "memoryInGb": 24,
        "securePrice": 0.69,
        "communityPrice": 0.34,
    },
}


@dataclass
class Call:
    operation: str
    input: dict[str, Any]


@dataclass
class FakeRunPod:
    api_key: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    resume_error: str | None = None  # RunPod's message when a stopped pod cannot resume
    runtime_after: int = 1  # pod queries before a new/resumed pod reports a runtime

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._polls: dict[str, int] = {}
        self._server = LoopbackServer(_handler(self)).__enter__()
        self.url = self._server.url

    def close(self) -> None:
        self._server.__exit__()

    def ops(self) -> list[str]:
        return [c.operation for c in self.calls]

    def add_pod(self, name: str, status: str) -> str:
        pod_id = self._new_pod({"name": name, "gpuTypeId": "NVIDIA GeForce RTX 4090"})
        self.pods[pod_id]["desiredStatus"] = status
        return pod_id

    # -- operations -------------------------------------------------------------------------

    def answer(self, query: str) -> dict[str, Any]:
        with self._lock:
            for op, fn in (
                ("podFindAndDeployOnDemand", self._deploy),
                ("podResume", self._resume),
                ("podStop", self._stop),
                ("podTerminate", self._terminate),
                ("gpuTypes", self._gpu_types),
            ):
                if re.search(rf"\b{op}\s*\(", query):
                    args = _parse_input(query, op)
                    self.calls.append(Call(op, args))
                    return fn(args)
            if re.search(r"\bpod\s*\(\s*input", query):
                args = _parse_input(query, "pod")
                self.calls.append(Call("pod", args))
                return {"data": {"pod": self._pod_view(args["podId"])}}
            if "myself" in query and "networkVolumes" in query:
                self.calls.append(Call("myself.networkVolumes", {}))
                return {
                    "data": {
                        "myself": {"id": "user1", "pubKey": "", "networkVolumes": self.volumes}
                    }
                }
            if "myself" in query and "pods" in query:
                self.calls.append(Call("myself.pods", {}))
                return {
                    "data": {
                        "myself": {"pods": [self._pod_view(pid, count=False) for pid in self.pods]}
                    }
                }
        return {"errors": [{"message": "Cannot query this field"}], "data": None}

    def _new_pod(self, args: dict[str, Any]) -> str:
        pod_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
        self.pods[pod_id] = {
            "id": pod_id,
            "name": args.get("name", ""),
            "imageName": args.get("imageName", ""),
            "desiredStatus": "RUNNING",
            "env": [f"{k}={v}" for k, v in args.get("env", {}).items()],
            "dockerArgs": args.get("dockerArgs", ""),
            "ports": args.get("ports", ""),
            "volumeMountPath": args.get("volumeMountPath", ""),
            "containerDiskInGb": args.get("containerDiskInGb"),
            "gpuCount": args.get("gpuCount", 1),
            "costPerHr": GPU_TYPES.get(args.get("gpuTypeId", ""), {}).get("securePrice"),
            "machineId": "machine1",
            "gpuDisplayName": GPU_TYPES.get(args.get("gpuTypeId", ""), {}).get("displayName"),
        }
        self._polls[pod_id] = 0
        return pod_id

    def _deploy(self, args: dict[str, Any]) -> dict[str, Any]:
        pod_id = self._new_pod(args)
        pod = self.pods[pod_id]
        return {
            "data": {
                "podFindAndDeployOnDemand": {
                    "id": pod_id,
                    "imageName": pod["imageName"],
                    "env": pod["env"],
                    "machineId": "machine1",
                    "machine": {"podHostId": f"{pod_id}-64410065"},
                }
            }
        }

    def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.resume_error:
            return {"errors": [{"message": self.resume_error}], "data": None}
        pod = self.pods[args["podId"]]
        pod["desiredStatus"] = "RUNNING"
        self._polls[pod["id"]] = 0
        return {
            "data": {
                "podResume": {
                    "id": pod["id"],
                    "desiredStatus": "RUNNING",
                    "imageName": pod["imageName"],
                    "env": pod["env"],
                    "machineId": "machine1",
                    "machine": {"podHostId": f"{pod['id']}-64410065"},
                }
            }
        }

    def _stop(self, args: dict[str, Any]) -> dict[str, Any]:
        pod = self.pods[args["podId"]]
        pod["desiredStatus"] = "EXITED"
        return {"data": {"podStop": {"id": pod["id"], "desiredStatus": "EXITED"}}}

    def _terminate(self, args: dict[str, Any]) -> dict[str, Any]:
        self.pods.pop(args["podId"], None)
        return {"data": {"podTerminate": None}}

    def _gpu_types(self, args: dict[str, Any]) -> dict[str, Any]:
        gpu = GPU_TYPES.get(args.get("id", ""))
        found = (
            [
                {
                    "id": args["id"],
                    "maxGpuCount": 8,
                    "manufacturer": "Nvidia",
                    "secureCloud": True,
                    "communityCloud": True,
                    **gpu,
                }
            ]
            if gpu
            else []
        )
        return {"data": {"gpuTypes": found}}

    def _pod_view(self, pod_id: str, count: bool = True) -> dict[str, Any] | None:
        pod = self.pods.get(pod_id)
        if pod is None:
            return None
        if count:
            self._polls[pod_id] = self._polls.get(pod_id, 0) + 1
        started = (
            pod["desiredStatus"] == "RUNNING" and self._polls.get(pod_id, 0) >= self.runtime_after
        )
        runtime = (
            {
                "uptimeInSeconds": 42,
                "ports": [
                    {
                        "ip": "100.65.0.101",
                        "isIpPublic": False,
                        "privatePort": 8188,
                        "publicPort": 60141,
                        "type": "http",
                    }
                ],
            }
            if started
            else None
        )
        view = {k: v for k, v in pod.items() if k != "gpuDisplayName"}
        view.update(
            runtime=runtime,
            machine={"gpuDisplayName": pod["gpuDisplayName"]},
            podType="RESERVED",
            uptimeSeconds=42 if started else 0,
        )
        return view


def _parse_input(query: str, op: str) -> dict[str, Any]:
    m = re.search(rf"\b{op}\s*\(\s*input:\s*\{{(.*?)\}}\s*\)", query, re.S)
    if not m:
        return {}
    block = m.group(1)
    out: dict[str, Any] = {}
    env = re.search(r"env:\s*\[(.*?)\]", block, re.S)
    if env:
        out["env"] = dict(re.findall(r'key:\s*"([^"]*)",\s*value:\s*"([^"]*)"', env.group(1)))
        block = block[: env.start()] + block[env.end() :]
    for key, value in re.findall(r'(\w+):\s*("[^"]*"|\[[^\]]*\]|[\w.]+)', block):
        if value.startswith('"'):
            out[key] = value[1:-1]
        elif value.startswith("["):
            out[key] = re.findall(r'"([^"]*)"', value)
        elif value in ("true", "false"):
            out[key] = value == "true"
        elif re.fullmatch(r"\d+", value):
            out[key] = int(value)
        else:
            out[key] = None if value == "null" else value
    return out


def _handler(fake: FakeRunPod) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/graphql":
                return self._send(404, {"errors": [{"message": "not found"}]})
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._send(401, {"errors": [{"message": "Unauthorized"}]})
            return self._send(200, fake.answer(body.get("query", "")))

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
