"""The identity gate in the real ComfyUI 0.3.75 CPU server: below its threshold the rest of the
branch (Save pack) does not run and the prompt still succeeds; at or above it the image is saved.
The graph is an editor user's: the score's reference is the Character node, no LoadImage."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from tests.comfy.server import ComfyServer
from tests.server.test_character_validation import AVA_FRONT, character
from tests.server.test_nodes_server import fresh_picture, run

pytestmark = pytest.mark.server


@pytest.fixture
def client(comfy_server: ComfyServer) -> Any:
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as c:
        yield c


def gated(face: str, threshold: float, scene: str) -> dict[str, Any]:
    return {
        "char": character(face),
        "base": {"class_type": "CharpackBase", "inputs": {
            "character": ["char", 0], "prompt": "portrait", "negative": "", "seed": 5,
            "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "steps": 2,
            "width": 256, "height": 256, "faceid": True, "faceid_weight": 0.8, "pag": False,
            "pag_scale": 3.0}},
        "score": {"class_type": "CharpackIdentityScore", "inputs": {
            "images": ["base", 0], "character": ["char", 0], "model_pack": "buffalo_l",
            "provider": "CPU"}},
        "gate": {"class_type": "CharpackIdentityGate", "inputs": {
            "images": ["score", 0], "score": ["score", 1], "threshold": threshold}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["gate", 0], "pack": "nodes", "scene": scene, "name": "gated",
            "seed": 5, "parameters": "", "compress_level": 1, "score": ["score", 1]}},
    }  # fmt: skip


@pytest.fixture
def face(client: ComfyClient, tmp_path: Path) -> str:
    return client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value


def test_below_the_threshold_nothing_is_saved_and_the_prompt_succeeds(
    comfy_server: ComfyServer, client: ComfyClient, face: str
) -> None:
    scene = f"gate-{uuid.uuid4().hex[:8]}"
    result = run(client, gated(face, 1.0, scene)).raise_for_status()
    (score,) = result.ui["score"]["scores"]
    assert result.ui["gate"]["passed"] == (False,)
    assert result.ui["gate"]["text"] == (
        f"blocked: {score:.3f} below threshold 1.000; the rest of this branch does not run",
    )
    assert "save" not in result.ui and not result.outputs
    assert not (comfy_server.output_dir / "nodes" / scene).exists()


def test_at_or_above_the_threshold_the_image_is_saved(
    comfy_server: ComfyServer, client: ComfyClient, face: str, tmp_path: Path
) -> None:
    scene = f"gate-{uuid.uuid4().hex[:8]}"
    result = run(client, gated(face, -1.0, scene)).raise_for_status()
    assert result.ui["gate"]["passed"] == (True,)
    assert result.ui["gate"]["text"][0].startswith("passed: ")
    (png,) = [ref for ref in result.outputs if ref.filename.endswith(".png")]
    assert client.download(png, tmp_path / "saved.png").size > 0  # waits out the writer
    assert (comfy_server.output_dir / "nodes" / scene / png.filename).is_file()
