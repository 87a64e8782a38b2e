"""The optional stages run on the real CPU server: an init image (img2img), a pose reference
through core Canny and ControlNetApplyAdvanced, Perturbed-Attention Guidance, InstantID's
whole-image mode and a down-scaled output — wired by the pipelines module, validated and
executed by ComfyUI 0.3.75 itself (only model-bound nodes are stand-ins)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from charpack.comfy.auth import ServerConfig
from charpack.pack.packfile import load_pack
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import fresh_picture
from tests.server.test_run_pack import check_folder, options, write_pack

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
CANNY_CONTROLNET = "controlnet-canny-sdxl-1.0.safetensors"


@pytest.fixture
def canny_controlnet(comfy_server: ComfyServer) -> str:
    """The pose ControlNet the test world places, as provisioning does on a pod."""
    assert (Path(comfy_server.models_dir) / "controlnet" / CANNY_CONTROLNET).is_file()
    return CANNY_CONTROLNET


def test_every_optional_stage_executes(
    comfy_server: ComfyServer, canny_controlnet: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "scenes").mkdir(parents=True)
    init = fresh_picture(REPO / "examples" / "scenes" / "cafe-terrace.png", src / "scenes")
    pose = fresh_picture(REPO / "examples" / "scenes" / "standing-pose.png", src / "scenes")
    path = write_pack(
        src,
        [
            {
                "name": "everything",
                "prompt": "standing at a street cafe, linen shirt, morning light",
                "count": 1,
                "init_image": f"scenes/{init.name}",
                "init_denoise": 0.6,
                "pose": {"image": f"scenes/{pose.name}", "control_net": canny_controlnet},
            }
        ],
        stages={
            "pag": {"enabled": True, "scale": 2.5},
            "instantid": {"mode": "img2img"},
            "upscale": {"output_scale": 0.5},
        },
    )
    pack = load_pack(path)
    summary = run_pack(
        pack, servers=[ServerConfig.from_url(comfy_server.url)], options=options(tmp_path / "out")
    )
    assert summary.exit_code == 0, summary.failures
    data = check_folder(tmp_path / "out", pack)
    (job,) = data["jobs"].values()
    graph = job["attempts"][-1]["workflow"]
    wired = {"init.encode", "pose.canny", "pose.apply", "pag.apply", "instantid.apply"}
    assert wired <= set(graph)
    assert graph["base.sampler"]["inputs"]["denoise"] == 0.6
    with Image.open(tmp_path / "out" / job["image"]) as image:
        assert image.size == (512, 768)  # 256x384, upscaled 4x, then scaled by 0.5
