"""``charpack run`` against the real CPU ComfyUI: a whole pack, resuming it, the identity gate, a
refused workflow, and two servers at once.

Packs are small (256x384 base, 1024x1536 after the real 4x upscale, 4 sampler steps) and use the
real pipeline graph with charpack's own nodes (CharpackIdentityScore, CharpackSavePack); only
model-bound nodes are the test world's stand-ins. Each test names its pack uniquely, so the
server writes new files. The helpers here are shared with the other ``test_run_*`` modules.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from charpack.cli import run as cli_run
from charpack.comfy.auth import ServerConfig
from charpack.pack.jobs import Job, expand, prompt_id_for, retry_seed
from charpack.pack.packfile import Pack, load_pack
from charpack.run.events import RunEvent
from charpack.run.runner import RunOptions, RunSummary, run_pack
from charpack_nodes.pipelines import catalog
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import fresh_picture

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
FACE = REPO / "examples" / "faces" / "ava_front.png"
STAGES = {"base", "faceid", "instantid", "detail", "upscale", "score", "save"}


def write_pack(
    folder: Path,
    scenes: list[dict[str, Any]],
    *,
    name: str | None = None,
    seed: int | None = None,
    threshold: float = 0.0,
    max_attempts: int = 1,
    checkpoint: str = "bigLoveXL.safetensors",
    stages: dict[str, Any] | None = None,
) -> Path:
    """A pack file for the test world: the example character at 256x384, 4 sampler steps. The
    face reference is a fresh file (same pixels), so the server's cache serves nothing."""
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    face = fresh_picture(FACE, folder / "faces")
    pack = {
        "version": 1,
        "pack": name or f"t-{uuid.uuid4().hex[:10]}",
        "seed": uuid.uuid4().int % 1_000_000 if seed is None else seed,
        "character": {
            "name": "Ava",
            "checkpoint": checkpoint,
            "lora": {"file": "character_lora.safetensors", "strength": 0.7},
            "trigger": "ava_cp woman",
            "face_references": [f"faces/{face.name}"],
        },
        "defaults": {"width": 256, "height": 384, "steps": 4, "stages": stages or {}},
        "identity": {"threshold": threshold, "max_attempts": max_attempts},
        "scenes": scenes,
    }
    path = folder / "pack.yaml"
    path.write_text(yaml.safe_dump(pack, sort_keys=False))
    return path


def options(out: Path, events: list[RunEvent] | None = None, **changes: Any) -> RunOptions:
    """Run options for tests: quick polling, no signal handler (tests drive stopping)."""
    sink: Callable[[RunEvent], None] | None = events.append if events is not None else None
    base: dict[str, Any] = dict(
        out=out, poll_interval=1.0, probe_interval=0.5, on_event=sink, handle_signals=False
    )
    base.update(changes)
    return RunOptions(**base)


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def history_ids(server_url: str) -> set[str]:
    return set(requests.get(f"{server_url}/history", timeout=30).json())


def check_folder(folder: Path, pack: Pack) -> dict[str, Any]:
    """Every file the manifest lists is there with its sha256, inside the folder; each job has
    at most one accepted attempt and every prompt id is unique. Returns the manifest."""
    data = manifest(folder)
    ids = [a["prompt_id"] for j in data["jobs"].values() for a in j["attempts"]]
    assert len(ids) == len(set(ids))
    for key, job in data["jobs"].items():
        accepted = [a for a in job["attempts"] if a["status"] == "success"]
        assert len(accepted) <= 1, key
        for attempt in job["attempts"]:
            assert attempt["prompt_id"] == prompt_id_for(data["run_id"], key, attempt["attempt"])
            for record in attempt["files"]:
                path = folder / record["path"]
                assert path.resolve().is_relative_to(folder.resolve())
                assert sha256(path) == record["sha256"] and path.stat().st_size == record["bytes"]
        if job["status"] == "done":
            assert job["image"] == accepted[0]["files"][0]["path"]
    images = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.png"))
    accepted_images = sorted(j["image"] for j in data["jobs"].values() if j["status"] == "done")
    assert images == accepted_images  # nothing accepted twice, nothing stray
    assert set(data["jobs"]) == {
        f"{s.name}/{i:03d}" for s in pack.scenes for i in range(1, s.count + 1)
    }
    return data


def test_a_whole_pack_runs_end_to_end_and_a_second_run_changes_nothing(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    path = write_pack(
        tmp_path / "src",
        [
            {"name": "cafe", "prompt": "sitting at a cafe terrace, linen shirt", "count": 2},
            {"name": "walk", "prompt": "walking through a park, camel coat", "count": 1},
        ],
    )
    pack = load_pack(path)
    out = tmp_path / "pack"
    events: list[RunEvent] = []
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out, events))

    assert summary.exit_code == 0 and summary.counts["done"] == 3 and summary.attempts == 3
    data = check_folder(out, pack)
    assert data["servers"] == {comfy_server.url: {"name": server.name, "comfyui_version": "0.3.75"}}
    assert data["pack"]["name"] == pack.name and data["identity"]["threshold"] == 0.0
    jobs = {job.key: job for job in expand(pack)}
    stages_seen: set[str] = set()
    for key, job in data["jobs"].items():
        (attempt,) = job["attempts"]
        assert job["status"] == "done" and attempt["status"] == "success"
        assert attempt["server"] == comfy_server.url and attempt["comfyui_version"] == "0.3.75"
        # The exact graph posted, with the seed and output name of this attempt.
        expected = jobs[key].with_seed(attempt["seed"]).graph
        assert attempt["workflow"] == json.loads(json.dumps(expected))
        # Nodes the server had cached (the face-ID adapter, same for every job) take no time.
        assert set(attempt["stage_timings"]) >= {"base", "detail", "upscale", "score", "save"}
        stages_seen.update(attempt["stage_timings"])
        assert attempt["queue_wait_s"] >= 0 and attempt["execution_s"] > 0
        assert 0.0 < attempt["score"] <= 1.0 and job["score"] == attempt["score"]
        png, sidecar = (out / f["path"] for f in attempt["files"])
        assert png.name == f"{jobs[key].stem}.png" and sidecar.suffix == ".json"
        with Image.open(png) as image:
            assert image.size == (1024, 1536)
        assert json.loads(sidecar.read_text())["sha256"] == sha256(png)
    assert stages_seen >= STAGES
    ran = {a["prompt_id"] for j in data["jobs"].values() for a in j["attempts"]}
    assert ran <= history_ids(comfy_server.url)
    assert (out / "contact-sheet.jpg").is_file()
    kinds = [e.kind for e in events]
    assert kinds[0] == "server_up" and kinds.count("done") == 3 and kinds[-1] == "finished"
    assert "step" in kinds and "node" in kinds
    # Progress speaks the pack file's stage names, as the report does (not node-id prefixes).
    shown = {e.data["stage"] for e in events if e.kind == "node"}
    assert catalog.STAGE_FACE_DETAILER in shown and "detail" not in shown

    before = {p: sha256(p) for p in out.glob("*/*.png")}
    again = run_pack(pack, servers=[server], options=options(out))
    assert again.exit_code == 0 and again.attempts == 0 and again.counts["done"] == 3
    assert {p: sha256(p) for p in out.glob("*/*.png")} == before
    assert manifest(out)["run_id"] == data["run_id"]


def test_the_identity_gate_retries_with_new_seeds_and_keeps_rejected_images(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    # Scores measured on the test world for these seeds (deterministic): 101 -> 0.99;
    # 103 -> 0.82, its retry 0.81; 110 -> 0.953, its retry 0.99. Threshold 0.96 straddles them.
    path = write_pack(
        tmp_path / "src",
        [
            {
                "name": "gate",
                "prompt": "portrait in a sunny street, summer dress",
                "seeds": [101, 103, 110],
            }
        ],
        threshold=0.96,
        max_attempts=2,
    )
    pack = load_pack(path)
    out = tmp_path / "pack"
    events: list[RunEvent] = []
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out, events))

    data = check_folder(out, pack)
    jobs = data["jobs"]
    assert summary.counts == {
        "pending": 0,
        "submitted": 0,
        "done": 2,
        "below_threshold": 1,
        "failed": 0,
    }
    assert summary.exit_code == 0

    first = jobs["gate/001"]
    assert first["status"] == "done" and len(first["attempts"]) == 1
    assert first["image"] == "gate/gate_001_101.png"

    below = jobs["gate/002"]
    retry2 = retry_seed(_job(pack, "gate/002"), 2)
    assert [a["seed"] for a in below["attempts"]] == [103, retry2]
    assert [a["status"] for a in below["attempts"]] == ["below_threshold"] * 2
    assert below["status"] == "below_threshold"
    # The best of the rejected attempts (the first here) is the job's image; both are kept.
    scores = [a["score"] for a in below["attempts"]]
    assert below["score"] == max(scores) == scores[0] < 0.96
    assert below["image"] == "rejected/gate/gate_002_103.png"
    assert (out / f"rejected/gate/gate_002_{retry2}.png").is_file()

    rescued = jobs["gate/003"]
    retry3 = retry_seed(_job(pack, "gate/003"), 2)
    assert [a["status"] for a in rescued["attempts"]] == ["below_threshold", "success"]
    assert rescued["attempts"][0]["files"][0]["path"] == "rejected/gate/gate_003_110.png"
    assert rescued["image"] == f"gate/gate_003_{retry3}.png" and rescued["score"] >= 0.96
    assert [e.data["job"] for e in events if e.kind == "retry"] == ["gate/002", "gate/003"]


def _job(pack: Pack, key: str) -> Job:
    return next(j for j in expand(pack) if j.key == key)


def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """``charpack run`` in-process (the lead's app registers the same function)."""
    app = typer.Typer(add_completion=False)
    app.command()(cli_run.run)
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_a_refused_workflow_fails_its_jobs_with_what_the_server_has(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    path = write_pack(
        tmp_path / "src",
        [
            {"name": "studio", "prompt": "studio portrait", "count": 4},
            {"name": "beach", "prompt": "on a beach", "count": 1},
        ],
        checkpoint="noSuchModel.safetensors",
    )
    out = tmp_path / "pack"
    result = run_cli(str(path), "--server", comfy_server.url, "--out", str(out), "--json")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "finished" and summary["failed"] == 5 and summary["done"] == 0
    jobs = manifest(out)["jobs"]
    refused = [j for j in jobs.values() if j["attempts"]]
    assert refused and all(j["status"] == "failed" for j in jobs.values())
    message = refused[0]["error"]
    assert "noSuchModel.safetensors" in message and "bigLoveXL.safetensors" in message
    assert "models/checkpoints" in message
    # Jobs still waiting when the scene was refused are not sent at all.
    posted = sum(1 for line in lines if line["event"] == "submitted")
    assert posted == len(refused) < 5
    assert all("not run" in j["error"] for j in jobs.values() if not j["attempts"])


def test_two_servers_share_a_pack_and_each_job_runs_once(
    comfy_server: ComfyServer,
    comfy_server_factory: Callable[..., ComfyServer],
    tmp_path: Path,
) -> None:
    second = comfy_server_factory()
    path = write_pack(tmp_path / "src", [{"name": "city", "prompt": "city street", "count": 6}])
    pack = load_pack(path)
    out = tmp_path / "pack"
    servers = [ServerConfig.from_url(s.url, env={}) for s in (comfy_server, second)]
    summary: RunSummary = run_pack(pack, servers=servers, options=options(out, backlog=1))

    assert summary.exit_code == 0 and summary.counts["done"] == 6
    data = check_folder(out, pack)
    by_server: dict[str, set[str]] = {}
    for job in data["jobs"].values():
        (attempt,) = job["attempts"]
        by_server.setdefault(attempt["server"], set()).add(attempt["prompt_id"])
    assert set(by_server) == {comfy_server.url, second.url}
    assert all(len(ids) >= 2 for ids in by_server.values())
    first_ran, second_ran = history_ids(comfy_server.url), history_ids(second.url)
    assert by_server[comfy_server.url] <= first_ran and not by_server[comfy_server.url] & second_ran
    assert by_server[second.url] <= second_ran and not by_server[second.url] & first_ran
    assert {s.attempts for s in summary.servers.values()} <= {2, 3, 4}
