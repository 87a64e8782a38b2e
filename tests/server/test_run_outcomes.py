"""How attempts end on the real CPU ComfyUI, and what the runner does next.

- An error that no seed can change (a face reference without a face) fails each job at once,
  with the fix, instead of three attempts of GPU time each.
- An image without a face is "no face", its own result: the manifest records ``face: false``
  and no score, the identity gate retries it with a new seed, the report counts it apart and
  the contact sheet labels it (never "0.000").
- ``POST /prompt`` answering 500 for a while (a relay in front of the server answers for it)
  is reported as what it is and costs the job nothing: the prompt was never queued, so it is
  posted again under the same attempt, not counted as a lost prompt or a server restart.
- The example pack runs clean on the test world: every scene accepted with a real score.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from charpack.comfy.auth import ServerConfig
from charpack.folder.contact_sheet import collect_tiles
from charpack.folder.manifest import Manifest
from charpack.folder.report import build_report
from charpack.pack.packfile import load_pack
from charpack.run.events import RunEvent
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import fresh_picture
from tests.server.test_run_pack import check_folder, manifest, options, write_pack
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
NO_FACE = REPO / "tests" / "data" / "no_face.png"


def _edit(path: Path, **changes: Any) -> Path:
    pack = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = pack
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(pack, sort_keys=False))
    return path


def test_a_reference_without_a_face_fails_each_job_at_once_with_the_fix(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    path = write_pack(src, [{"name": "walk", "prompt": "walking in a park", "count": 2}])
    faceless = fresh_picture(NO_FACE, src / "faces")
    _edit(path, character__face_references=[f"faces/{faceless.name}"])
    pack = load_pack(path)
    out = tmp_path / "out"
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out, max_retries=2))
    assert summary.exit_code == 1
    data = check_folder(out, pack)
    for key, job in data["jobs"].items():
        assert job["status"] == "failed", key
        assert [a["status"] for a in job["attempts"]] == ["error"], key  # not 3 attempts
        assert "No face detected" in job["error"] or "no face found in reference" in job["error"]
        assert "not retried, no seed changes this" in job["error"]
        assert "character.face_references" in job["error"]


def test_an_image_without_a_face_is_no_face_in_the_manifest_report_and_sheet(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    # img2img keeps the init image's composition: a landscape without a face stays face-less
    # on every seed, so every attempt is "no face", retried, and the job ends below threshold.
    src = tmp_path / "src"
    (src / "scenes").mkdir(parents=True)
    init = fresh_picture(NO_FACE, src / "scenes")
    scene = {"name": "hills", "prompt": "a walk in the hills", "count": 1,
             "init_image": f"scenes/{init.name}", "init_denoise": 0.6}  # fmt: skip
    # The final score's no-face path: the early gate (on by default) would stop these attempts
    # before the image is saved (tests/unit/test_early_gate.py covers that path).
    path = write_pack(src, [scene], threshold=0.3, max_attempts=2)
    pack = load_pack(_edit(path, identity__early_gate={"enabled": False}))
    out = tmp_path / "out"
    events: list[RunEvent] = []
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out, events))
    assert summary.exit_code == 0, summary.failures
    job = check_folder(out, pack)["jobs"]["hills/001"]
    assert job["status"] == "below_threshold" and job["score"] is None
    attempts = job["attempts"]
    assert [(a["status"], a["face"], a["score"]) for a in attempts] == [
        ("below_threshold", False, None),
        ("below_threshold", False, None),
    ]
    assert attempts[0]["seed"] != attempts[1]["seed"]  # a new seed may show a face
    assert [e.data["reason"] for e in events if e.kind == "retry"] == ["no face found in the image"]
    (ended,) = [e for e in events if e.kind == "below_threshold"]
    assert ended.data["reason"] == "no face found in any of 2 attempts"
    report = build_report(out, price_per_hour=0.69)
    assert report.no_face_attempts == 2 and report.rejected_scores == []
    assert "no face found in any attempt" in report.failures[0].error
    (tile,) = collect_tiles(Manifest.load(out))
    assert tile.no_face and tile.score is None


def test_a_500_storm_on_post_prompt_is_reported_and_loses_no_attempt(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    pack = load_pack(
        write_pack(tmp_path / "src", [{"name": "storm", "prompt": "rain", "count": 1}])
    )
    out = tmp_path / "out"
    events: list[RunEvent] = []
    with TcpRelay(target_port=comfy_server.port) as relay:
        # Two whole submits' worth (3 tries each): the first post and the first re-post.
        relay.fail_next(status=500, count=6, match="POST /prompt")
        server = ServerConfig.from_url(relay.url, env={})
        summary = run_pack(pack, servers=[server], options=options(out, events))
        posts = [r for r in relay.requests if r.startswith("POST /prompt")]
    assert summary.exit_code == 0, summary.failures
    job = manifest(out)["jobs"]["storm/001"]
    assert job["status"] == "done"
    assert [a["status"] for a in job["attempts"]] == ["success"]  # nothing lost or retried
    assert len(posts) == 7  # six refused, then the one that ran
    (down,) = [e for e in events if e.kind == "server_down"]
    reason = down.data["reason"]
    assert "answered 500 to POST /prompt for" in reason and "relay: HTTP 500" in reason
    assert "restarted" not in reason and "lost" not in reason
    assert not [e for e in events if e.kind in ("requeued", "retry", "failed")]


def test_the_example_pack_runs_clean_on_the_test_world(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    src = tmp_path / "examples"
    shutil.copytree(REPO / "examples", src)
    pack = load_pack(src / "small-pack.yaml")
    out = tmp_path / "out"
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out))
    assert summary.exit_code == 0, summary.failures
    data = check_folder(out, pack)
    threshold = pack.identity.threshold
    by_scene: dict[str, list[float]] = {}
    for key, job in data["jobs"].items():
        assert job["status"] == "done", (key, [a.get("score") for a in job["attempts"]])
        assert isinstance(job["score"], float) and job["score"] >= threshold, key
        assert not [a for a in job["attempts"] if a.get("face") is False], key
        by_scene.setdefault(job["scene"], []).append(job["score"])
    assert set(by_scene) == {s.name for s in pack.scenes}
    report = build_report(out, price_per_hour=0.69)
    assert report.no_face_attempts == 0 and report.images == len(data["jobs"])


def test_a_500_storm_that_does_not_end_stops_the_run_saying_what_the_server_answered(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    pack = load_pack(write_pack(src, [{"name": "storm", "prompt": "hail", "count": 1}]))
    out = tmp_path / "out"
    with TcpRelay(target_port=comfy_server.port) as relay:
        relay.fail_next(status=500, count=10_000, match="POST /prompt")
        server = ServerConfig.from_url(relay.url, env={})
        summary = run_pack(pack, servers=[server], options=options(out, give_up_s=3.0))
    assert summary.error is not None and "answered 500 to POST /prompt for" in summary.error
    assert "relay: HTTP 500" in summary.error
    job = manifest(out)["jobs"]["storm/001"]
    # Never queued, so nothing to count against the job: it waits for the next run.
    assert [a["status"] for a in job["attempts"]] == ["submitted"]
    assert job["status"] == "submitted"
