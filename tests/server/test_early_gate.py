"""The early identity gate on the real ComfyUI 0.3.75 CPU server, end to end through a run.

A calibration run of the same job (same pack seed, so the same attempt seeds; the gate at 0,
so every attempt runs whole) reads each attempt's early score from ``/history`` and its final
score from the manifest. The test world's scores vary by seed, so the pack under test is then
set from those numbers: the threshold at attempt 2's final score and the early gate between
attempt 1's and attempt 2's early scores. Run again on fresh inputs, attempt 1 must stop at the
early gate (no image, no final score: the detailer, upscale and saver did not run, and the
prompt still succeeded), be retried with a new seed, and attempt 2 be accepted by the final
score; the report's figures are computed from the manifest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from charpack.comfy.auth import ServerConfig
from charpack.folder.report import build_report
from charpack.pack.packfile import load_pack
from charpack.run.retry_rules import STOPPED_EARLY
from charpack.run.runner import run_pack
from charpack_nodes.pipelines import gate
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import check_folder, options, write_pack

pytestmark = pytest.mark.server

SEED = 3  # a pack seed whose job's attempt 1 scores lower early than attempt 2 (checked)
SCENE = {"name": "cafe", "prompt": "sitting at a cafe terrace", "count": 1}


def _pack_file(src: Path, *, threshold: float, margin: float) -> Path:
    path = write_pack(src, [dict(SCENE)], seed=SEED, threshold=threshold, max_attempts=3)
    raw = yaml.safe_load(path.read_text())
    raw["identity"]["early_gate"] = {"enabled": True, "margin": margin}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _outputs(server: ComfyServer, prompt_id: str) -> dict[str, Any]:
    history = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()
    return history[prompt_id]["outputs"]


def _early_score(server: ComfyServer, prompt_id: str) -> float:
    (score,) = _outputs(server, prompt_id)[gate.GATE_SCORE]["scores"]
    return float(score)


def _run(server: ComfyServer, path: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """Run the pack; its name and its one job's manifest entry."""
    pack = load_pack(path)
    config = ServerConfig.from_url(server.url, env={})
    summary = run_pack(pack, servers=[config], options=options(out))
    assert summary.exit_code == 0, summary.failures
    return pack.name, check_folder(out, pack)["jobs"]["cafe/001"]


def test_an_attempt_below_the_early_gate_stops_early_is_retried_and_the_next_is_accepted(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    # Calibration: threshold 1.0 rejects every final score, the gate at 1.0 - 1.0 = 0 passes all.
    _, probe = _run(comfy_server, _pack_file(tmp_path / "probe", threshold=1.0, margin=1.0),
                 tmp_path / "probe-out")  # fmt: skip
    first, second = probe["attempts"][:2]
    assert "stopped_at" not in first and "stopped_at" not in second
    e1, e2 = (_early_score(comfy_server, a["prompt_id"]) for a in (first, second))
    threshold = math.floor(second["score"] * 10_000) / 10_000
    at = round((e1 + e2) / 2, 4)  # the early gate: between the two early scores
    assert e1 + 2e-4 < at < e2 - 2e-4 and at < threshold, (
        f"pick another SEED: early scores {e1:.4f}, {e2:.4f}, final {second['score']:.4f}"
    )
    path = _pack_file(tmp_path / "src", threshold=threshold, margin=round(threshold - at, 4))
    out = tmp_path / "out"
    name, job = _run(comfy_server, path, out)

    stopped, accepted = job["attempts"]
    assert (stopped["seed"], accepted["seed"]) == (first["seed"], second["seed"])
    assert stopped["status"] == "below_threshold" and stopped["stopped_at"] == STOPPED_EARLY
    assert stopped["early_score"] == pytest.approx(e1, abs=1e-6)
    assert stopped["score"] is None and stopped["files"] == []
    assert stopped["execution_s"] > 0  # the server's time for the part that ran
    # Nothing after the gate ran: no final score, no saver output, no file on the server.
    blocked = _outputs(comfy_server, stopped["prompt_id"])
    assert set(blocked) == {gate.GATE_SCORE, gate.GATE} and blocked[gate.GATE]["passed"] == [False]
    (saved,) = (comfy_server.output_dir / name / "cafe").glob("*.png")  # attempt 2's alone
    assert accepted["prompt_id"] in saved.name
    assert accepted["status"] == "success" and "stopped_at" not in accepted
    assert accepted["score"] == pytest.approx(second["score"]) and accepted["score"] >= threshold
    assert job["status"] == "done" and job["image"] == accepted["files"][0]["path"]

    report = build_report(out, price_per_hour=0.69)
    seconds = stopped["execution_s"] + accepted["execution_s"]  # all attempts / accepted images
    assert report.images == 1 and report.stopped_early == 1
    assert report.early_scores == [stopped["early_score"]]
    assert report.gpu_seconds_per_image == pytest.approx(seconds)
    assert report.gpu_cost_per_image == pytest.approx(seconds / 3600 * 0.69)
