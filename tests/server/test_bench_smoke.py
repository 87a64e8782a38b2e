"""The orchestrator benchmark's moving parts on a real CPU server: the bench node, and
``run_pack(..., workflow=...)`` (the runner posting prepared graphs, retries included).

One private server with the bench node pack linked in, a small picture standing for the 29 MB
one, jobs of 0.2 s: a few seconds in all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.servers import PICTURE_ENV, link_bench_pack
from bench.workload import BenchJob, Workload, write_pack
from charpack.comfy.auth import ServerConfig
from charpack.pack.jobs import Job
from charpack.pack.packfile import load_pack
from charpack.run.events import RunEvent
from charpack.run.runner import RunOptions, run_pack
from tests.comfy.server import ComfyServer

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
PICTURE = REPO / "examples" / "faces" / "ava_front.png"


def test_the_runner_posts_prepared_graphs_to_the_bench_node_and_retries_with_them(
    comfy_server_factory: Callable[..., ComfyServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picture = tmp_path / "picture.png"
    shutil.copyfile(PICTURE, picture)
    monkeypatch.setenv(PICTURE_ENV, str(picture))  # the server inherits it
    base = link_bench_pack(tmp_path / "server")
    server = comfy_server_factory(base_dir=base, with_models=False)

    work = Workload(seconds=0.2, steps=4, tag=f"smoke-{uuid.uuid4().hex[:8]}")
    built: list[dict[str, Any]] = []

    def workflow(job: Job) -> dict[str, Any]:
        graph = work.graph(BenchJob(job.seed, job.stem))
        if job.index == 1 and job.seed == job.base_seed:
            # The node refuses a name outside the output folder: an execution error, so the
            # runner retries with a new seed, which must come through this hook again.
            graph["job"]["inputs"]["prefix"] = "../escape"
        built.append(graph)
        return graph

    pack = load_pack(write_pack(tmp_path / "src", name=work.tag, count=2, seed=3))
    out = tmp_path / "pack"
    events: list[RunEvent] = []
    options = RunOptions(
        out=out, poll_interval=1.0, handle_signals=False, contact_sheet=False,
        on_event=events.append,
    )  # fmt: skip
    summary = run_pack(
        pack, servers=[ServerConfig.from_url(server.url, env={})], options=options,
        workflow=workflow,
    )  # fmt: skip

    assert summary.exit_code == 0, summary.to_json()
    manifest = json.loads((out / "manifest.json").read_text())
    first, second = (manifest["jobs"][k] for k in ("studio/001", "studio/002"))
    assert [a["status"] for a in first["attempts"]] == ["error", "success"]
    assert "leaves the output folder" in first["attempts"][0]["error"]
    assert first["attempts"][1]["seed"] != first["attempts"][0]["seed"]
    assert [a["status"] for a in second["attempts"]] == ["success"]
    # What was posted is what the hook built, and the manifest records it.
    posted = [a["workflow"] for job in (first, second) for a in job["attempts"]]
    assert sorted(json.dumps(g, sort_keys=True) for g in posted) == sorted(
        json.dumps(g, sort_keys=True) for g in built
    )
    for job in (first, second):
        attempt = job["attempts"][-1]
        assert attempt["workflow"]["job"]["inputs"]["seed"] == attempt["seed"]
        # The node's file arrives byte for byte, under the job's own name.
        assert (out / job["image"]).read_bytes() == picture.read_bytes()
        assert job["image"] == f"studio/studio_{job['index']:03d}_{attempt['seed']}.png"
    # The node reports progress like a sampler: every step of each successful job.
    steps = [e.data for e in events if e.kind == "step"]
    for key in ("studio/001", "studio/002"):
        assert [s["value"] for s in steps if s["job"] == key][-4:] == [1, 2, 3, 4]


def test_the_save_benchmark_runs_both_savers_side_by_side() -> None:
    # A small image and one repeat: the script's parts (both nodes' own code inside the ComfyUI
    # environment), not its numbers. bench/nodes once shadowed ComfyUI's nodes module here.
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "save_cost.py"), "--repeats", "1", "--no-write",
         "--size", "256x384"],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| core") or
            line.startswith("| CharpackSavePack")]  # fmt: skip
    assert len(rows) == 5 and all(" MiB |" in row for row in rows), done.stdout
