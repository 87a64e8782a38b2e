"""``charpack selftest`` against the CPU test world, as a user runs it: the 5-shot identity test
on one server, its stage times, identity figures, sampled device memory and targets, each figure
checked against the pack folder it made and the server's own /system_stats."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from charpack.character.identity_test import SHOTS
from charpack.check.selftest import default_character
from charpack.pack.packfile import load_pack
from tests.comfy.server import ComfyServer
from tests.support.commands import CHARPACK

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
FAST = {"width": 512, "height": 640, "steps": 4, "stages": {"upscale": {"enabled": False}}}


def selftest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
    return subprocess.run(
        [*CHARPACK, "selftest", *args], capture_output=True, text=True, timeout=900, env=env
    )


def fast_character(tmp_path: Path) -> Path:
    folder = tmp_path / "char"
    shutil.copytree(REPO / "examples" / "character", folder)
    pack = folder / "character.yaml"
    pack.write_text(pack.read_text() + "\n" + yaml.safe_dump({"defaults": FAST}))
    return pack


def test_selftest_reports_the_servers_own_figures_and_the_targets(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    out = tmp_path / "selftest"
    run = selftest("--server", comfy_server.url, "--pack", str(fast_character(tmp_path)),
                   "--out", str(out), "--json")  # fmt: skip
    report = json.loads(run.stdout)
    assert run.returncode == (0 if report["ok"] else 1), run.stderr[-3000:]
    assert report["shots"] == len(SHOTS) and report["images"] == len(SHOTS)
    jobs = list(json.loads((out / "run" / "manifest.json").read_text())["jobs"].values())
    assert sorted(j["scene"] for j in jobs) == sorted(s.name for s in SHOTS)
    # Identity figures are the pack folder's scores.
    scores = [j["score"] for j in jobs]
    assert report["identity"]["mean"] == pytest.approx(statistics.fmean(scores))
    assert report["identity"]["min"] == pytest.approx(min(scores))
    # Stage times are the medians of the attempts' own (server-side) stage timings; a stage
    # ComfyUI served from its cache (the same reference in every shot) has no timing there.
    timings = [j["attempts"][-1]["stage_timings"] for j in jobs]
    for stage in ("base", "instantid", "detail", "save"):
        expected = statistics.median(t[stage] for t in timings if stage in t)
        assert report["stage_seconds"][stage] == pytest.approx(expected)
    assert "upscale" not in report["stage_seconds"]  # the pack turned it off
    # The first shot loads the models: time per image is the median of the others.
    warm = [j["attempts"][-1]["execution_s"] for j in jobs][1:]
    assert report["seconds_per_image"] == pytest.approx(statistics.median(warm))
    # Memory comes from the server's /system_stats (the CPU world reports RAM as its device).
    assert report["device"] == "cpu (cpu)"
    assert 0 < report["peak_memory_bytes"] <= report["memory_total_bytes"]
    # Each target's verdict follows from what was measured.
    verdicts = {t["name"]: t["met"] for t in report["targets"]}
    assert verdicts["every shot made an image"] is True
    assert verdicts["time per image (warm, median)"] is (report["seconds_per_image"] <= 12.0)
    assert verdicts["identity mean"] is (report["identity"]["mean"] >= 0.75)
    assert verdicts["every shot on identity (min)"] is (report["identity"]["min"] >= 0.45)
    assert report["ok"] is all(verdicts.values())


def test_selftest_without_a_server_exits_3_before_anything(tmp_path: Path) -> None:
    run = selftest("--server", "http://127.0.0.1:9", "--out", str(tmp_path / "x"))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "127.0.0.1:9" in run.stderr


def test_the_shipped_selftest_character_loads() -> None:
    pack = load_pack(default_character())
    assert pack.character_name == "Ava"
    assert all(p.is_file() for p in pack.face_references)
    assert "lora" not in pack.raw["character"]  # runs on any server with the pipeline's models
