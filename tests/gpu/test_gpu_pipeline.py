"""GPU tier: the real pipeline on a provisioned GPU server (a charpack pod or a lent GPU).

Skipped unless ``CHARPACK_GPU_URL`` names the server (credentials from ``CHARPACK_TOKEN`` as
usual). It runs the fixed 5-shot identity test pack — portrait, full body, profile, dramatic
lighting, expression — through the same runner users run, then checks what a user checks: every
job has a 3328×4864 image, an identity score, and per-stage timings in the manifest. Before any
generation, preflight must find the server complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from charpack.check.preflight import preflight
from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.folder.manifest import Manifest
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack
from charpack.run.runner import RunOptions, run_pack

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu


@pytest.fixture
def identity_pack(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "identity-test.yaml"


def test_identity_test_pack_on_a_gpu_server(
    gpu_url: str, identity_pack: Path, tmp_path: Path
) -> None:
    server = ServerConfig.from_url(gpu_url)
    pack = load_pack(identity_pack)
    client = ComfyClient(config=server)
    try:
        ready = preflight(expand(pack), client=client)
    finally:
        client.close()
    assert ready.ok, ready.errors

    summary = run_pack(pack, servers=[server], options=RunOptions(out=tmp_path / "out"))
    assert summary.exit_code == 0, summary.failures

    manifest = Manifest.load(tmp_path / "out")
    assert len(manifest) == 5
    for entry in manifest:
        assert entry["status"] in ("done", "below_threshold"), entry.get("error")
        image = tmp_path / "out" / str(entry["image"])
        with Image.open(image) as img:
            assert img.size == (3328, 4864)
        assert entry["score"] is not None and 0.0 <= float(entry["score"]) <= 1.0
        stages = entry["attempts"][-1]["stage_timings"]
        assert {"base", "upscale"} <= set(stages)
