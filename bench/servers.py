"""The benchmark's servers: real ComfyUI 0.3.75 CPU processes with the bench node, their links,
and what their own clocks say about a run.

Owns starting ``count`` servers through the test world (``tests/comfy/server.py``: each its own
process and ``--base-directory``, the bench pack linked in as ``custom_nodes/charpack_bench``
next to the test world's packs, ``$CHARPACK_BENCH_PICTURE`` naming the picture), one
:class:`~tests.support.tcp_relay.TcpRelay` per server for the shaped link (delay each way,
throttled both ways: one relay is one pod's proxy link), a warm-up job per server, and reading
a run's execution spans back from ``/history`` (straight from the server, not through a relay),
where ``status.messages`` carry ``execution_start`` and ``execution_success`` in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.workload import REPO, tag_of
from tests.comfy.server import ComfyServer, start_server
from tests.support.tcp_relay import TcpRelay

log = logging.getLogger(__name__)

BENCH_PACK = REPO / "bench" / "nodes"
BENCH_FOLDER = "charpack_bench"
PICTURE_ENV = "CHARPACK_BENCH_PICTURE"


@dataclass
class BenchServer:
    comfy: ComfyServer
    relay: TcpRelay

    def url(self, link: str) -> str:
        return self.relay.url if link == "shaped" else self.comfy.url


@dataclass(frozen=True)
class Span:
    """One prompt's execution on a server, by the server's own clock (ms)."""

    start: int
    end: int
    ok: bool


def link_bench_pack(base_dir: Path) -> Path:
    """Add the bench node pack to a server's ``--base-directory`` (before it starts)."""
    link = base_dir / "custom_nodes" / BENCH_FOLDER
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(BENCH_PACK, target_is_directory=True)
    return base_dir


def start_servers(
    count: int, *, root: Path, picture: Path, delay_s: float, rate: float, stack: ExitStack
) -> list[BenchServer]:
    """Start ``count`` ready servers under ``root``; ``stack`` stops them and their relays."""
    os.environ[PICTURE_ENV] = str(picture)  # the servers inherit the environment
    servers = []
    for i in range(count):
        base = link_bench_pack(root / f"server-{i}")
        comfy = start_server(base, with_models=False)
        stack.callback(comfy.stop)
        relay = TcpRelay(target_port=comfy.port, delay_s=delay_s, rate=rate).start()
        stack.callback(relay.close)
        servers.append(BenchServer(comfy, relay))
        log.info("server %d at %s (shaped link %s)", i, comfy.url, relay.url)
    return servers


def history(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/history?max_items=10000", timeout=60) as response:
        return dict(json.loads(response.read()))


def spans(server: BenchServer, tag: str) -> list[Span]:
    """The execution spans of run ``tag`` on ``server``, in start order."""
    out = []
    for entry in history(server.comfy.url).values():
        if tag_of(entry) != tag:
            continue
        times = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
        end = times.get("execution_success") or times.get("execution_error")
        if times.get("execution_start") is None or end is None:
            continue
        ok = "execution_success" in times
        out.append(Span(int(times["execution_start"]), int(end), ok))
    return sorted(out, key=lambda s: s.start)


def busy_idle(run: list[Span]) -> tuple[float, float]:
    """(busy, idle) seconds: busy = sum of spans; idle = gaps from one end to the next start."""
    busy = sum(s.end - s.start for s in run) / 1000
    idle = sum(max(0, b.start - a.end) for a, b in pairwise(run)) / 1000
    return busy, idle


def clear_outputs(server: BenchServer, tag: str) -> None:
    """Remove run ``tag``'s files from the server's output folder (they are GBs)."""
    shutil.rmtree(server.comfy.output_dir / tag, ignore_errors=True)
