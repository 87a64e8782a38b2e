"""The test world behaves as the rest of the suite relies on.

The server is real ComfyUI 0.3.75 with the stand-ins swapped in; the whole pipeline (LoRA, FaceID,
InstantID post-fix, FaceDetailer, 4x upscale) runs on CPU in well under a second per image; a
wrong model name is rejected by ComfyUI's own validation; a face-less reference fails as the real
pack does; identity against the reference rises with FaceID and InstantID and varies by seed; the
sampler reports progress and stops on interrupt; a restarted server keeps its files; and the tiny
InsightFace models find the synthetic faces and nothing in a face-less picture.

Talks to the server with plain HTTP (``requests``), independent of the orchestrator's client.
"""

from __future__ import annotations

import json
import random
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from tests.comfy.facecheck import check_faces
from tests.comfy.install import REPO, ComfyEnv
from tests.comfy.server import ComfyServer
from tests.comfy.standins import faces

pytestmark = pytest.mark.server

AVA_FRONT = REPO / "examples" / "faces" / "ava_front.png"
AVA_THREE_QUARTER = REPO / "examples" / "faces" / "ava_three_quarter.png"
NO_FACE = REPO / "tests" / "data" / "no_face.png"
WIDTH, HEIGHT = 256, 384  # the pipeline's 832x1216 shape, small


def upload(server: ComfyServer, path: Path) -> str:
    name = f"{path.stem}-{uuid.uuid4().hex[:8]}.png"
    with open(path, "rb") as handle:
        response = requests.post(
            server.url + "/upload/image", files={"image": (name, handle, "image/png")}, timeout=30
        )
    response.raise_for_status()
    return str(response.json()["name"])


def run(server: ComfyServer, graph: dict[str, Any], *, timeout: float = 120) -> dict[str, Any]:
    """POST the graph and wait (deadline) for its history entry."""
    prompt_id = str(uuid.uuid4())
    response = requests.post(server.url + "/prompt", json={"prompt": graph, "prompt_id": prompt_id},
                             timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json()
        if prompt_id in entry:
            return dict(entry[prompt_id])
        time.sleep(0.05)  # polling the server's history; there is no event to block on here
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


def saved(server: ComfyServer, entry: dict[str, Any], node: str) -> list[Path]:
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"][node]["images"]
    return [server.output_dir / i["subfolder"] / i["filename"] for i in images]


def pipeline(
    reference: str, *, seed: int, lora: float = 0.7, faceid: bool = True, instantid: bool = True,
    detailer: bool = True, upscale: bool = True, prefix: str = "tw/pipe",
) -> dict[str, Any]:  # fmt: skip
    """The project's pipeline as an API graph (design.md §1), small and with meaningful ids."""
    g: dict[str, Any] = {}

    def node(node_id: str, class_type: str, **inputs: Any) -> list[Any]:
        g[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    node("ckpt", "CheckpointLoaderSimple", ckpt_name="bigLoveXL.safetensors")
    model, clip = ["ckpt", 0], ["ckpt", 1]
    if lora:
        node("lora", "LoraLoader", model=model, clip=clip, lora_name="character_lora.safetensors",
             strength_model=lora, strength_clip=lora)  # fmt: skip
        model, clip = ["lora", 0], ["lora", 1]
    pos = node("pos", "CLIPTextEncode", clip=clip, text="portrait photo, travel, city street")
    neg = node("neg", "CLIPTextEncode", clip=clip, text="blurry")
    ref = node("ref", "LoadImage", image=reference)
    if faceid:
        node("fid.load", "IPAdapterUnifiedLoaderFaceID", model=model, preset="FACEID PLUS V2",
             lora_strength=0.6, provider="CPU")  # fmt: skip
        node("fid.apply", "IPAdapterFaceID", model=["fid.load", 0], ipadapter=["fid.load", 1],
             image=ref, weight=0.85, weight_faceidv2=1.0, weight_type="linear",
             combine_embeds="concat", start_at=0.0, end_at=1.0,
             embeds_scaling="V only")  # fmt: skip
        model = ["fid.apply", 0]
    latent = node("latent", "EmptyLatentImage", width=WIDTH, height=HEIGHT, batch_size=1)
    sampler = {"steps": 4, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal"}
    node("base", "KSampler", model=model, seed=seed, positive=pos, negative=neg,
         latent_image=latent, denoise=1.0, **sampler)  # fmt: skip
    image = node("decode", "VAEDecode", samples=["base", 0], vae=["ckpt", 2])
    if instantid:
        node("iid.model", "InstantIDModelLoader", instantid_file="ip-adapter.bin")
        node("iid.face", "InstantIDFaceAnalysis", provider="CPU")
        node("iid.cn", "ControlNetLoader",
             control_net_name="instantid/diffusion_pytorch_model.safetensors")  # fmt: skip
        node("iid.apply", "ApplyInstantID", instantid=["iid.model", 0], insightface=["iid.face", 0],
             control_net=["iid.cn", 0], image=ref, model=model, positive=pos, negative=neg,
             weight=0.85, start_at=0.0, end_at=1.0, image_kps=image)  # fmt: skip
        node("iid.encode", "VAEEncode", pixels=image, vae=["ckpt", 2])
        node("iid.sample", "KSampler", model=["iid.apply", 0], seed=seed,
             positive=["iid.apply", 1], negative=["iid.apply", 2],
             latent_image=["iid.encode", 0], denoise=0.4, **sampler)  # fmt: skip
        image = node("iid.decode", "VAEDecode", samples=["iid.sample", 0], vae=["ckpt", 2])
    if detailer:
        node("fd.bbox", "UltralyticsDetectorProvider", model_name="bbox/face_yolov8m.pt")
        node("fd.sam", "SAMLoader", model_name="sam_vit_b_01ec64.pth", device_mode="AUTO")
        image = node(
            "fd.run", "FaceDetailer", image=image, model=model, clip=clip, vae=["ckpt", 2],
            guide_size=512, guide_size_for=True, max_size=1024, seed=seed, steps=4, cfg=4.0,
            sampler_name="euler", scheduler="normal", positive=pos, negative=neg, denoise=0.4,
            feather=5, noise_mask=True, force_inpaint=True, bbox_threshold=0.5,
            bbox_dilation=10, bbox_crop_factor=3.0, sam_detection_hint="center-1",
            sam_dilation=0, sam_threshold=0.93, sam_bbox_expansion=0,
            sam_mask_hint_threshold=0.7, sam_mask_hint_use_negative="False", drop_size=10,
            bbox_detector=["fd.bbox", 0], wildcard="", cycle=1, sam_model_opt=["fd.sam", 0],
            inpaint_model=False, noise_mask_feather=20, tiled_encode=False, tiled_decode=False,
        )  # fmt: skip
    if upscale:
        node("up.model", "UpscaleModelLoader", model_name="4x-UltraSharp.pth")
        image = node("up.run", "ImageUpscaleWithModel", upscale_model=["up.model", 0], image=image)
    node("save", "SaveImage", images=image, filename_prefix=prefix)
    return g


def test_tiny_insightface_finds_drawn_faces_and_nothing_else(
    comfy_env: ComfyEnv, tmp_path: Path
) -> None:
    rng = random.Random(3)
    others = []
    for index in range(4):
        picture, _ = faces.portrait(faces.random_params(rng), size=(256, 256))
        others.append(tmp_path / f"other{index}.png")
        picture.save(others[-1])
    results = check_faces(comfy_env, AVA_FRONT, AVA_THREE_QUARTER, NO_FACE, *others)
    front, three_quarter, no_face, *strangers = results
    assert len(front["faces"]) == 1 and len(three_quarter["faces"]) == 1
    assert no_face["faces"] == []
    assert all(len(r["faces"]) == 1 for r in strangers)
    # Two views of one person are closer than the example character and strangers.
    assert three_quarter["similarity"] > 0.7
    assert three_quarter["similarity"] > max(r["similarity"] for r in strangers)


def test_whole_pipeline_runs_and_upscales_four_times(comfy_server: ComfyServer) -> None:
    reference = upload(comfy_server, AVA_FRONT)
    started = time.monotonic()
    entry = run(comfy_server, pipeline(reference, seed=11, prefix="tw/full"))
    elapsed = time.monotonic() - started
    (path,) = saved(comfy_server, entry, "save")
    with Image.open(path) as picture:
        assert picture.size == (WIDTH * 4, HEIGHT * 4)
    assert elapsed < 60, "the CPU pipeline should take seconds, not minutes"


def test_identity_rises_with_faceid_and_instantid_and_varies_by_seed(
    comfy_server: ComfyServer, comfy_env: ComfyEnv
) -> None:
    reference = upload(comfy_server, AVA_FRONT)
    variants = {
        "nothing": {"lora": 0.0, "faceid": False, "instantid": False},
        "lora": {"lora": 0.7, "faceid": False, "instantid": False},
        "lora+faceid": {"lora": 0.7, "faceid": True, "instantid": False},
        "lora+faceid+instantid": {"lora": 0.7, "faceid": True, "instantid": True},
    }
    seeds = (1, 2, 3, 4)
    paths: dict[str, list[Path]] = {}
    for name, switches in variants.items():
        for seed in seeds:
            graph = pipeline(reference, seed=seed, detailer=False, upscale=False,
                             prefix=f"tw/id_{name}", **switches)  # fmt: skip
            paths.setdefault(name, []).extend(saved(comfy_server, run(comfy_server, graph), "save"))
    flat = [p for name in variants for p in paths[name]]
    results = check_faces(comfy_env, AVA_FRONT, *flat)[1:]
    scores: dict[str, list[float]] = {}
    for result, name in zip(results, [n for n in variants for _ in seeds], strict=True):
        assert len(result["faces"]) == 1, result
        scores.setdefault(name, []).append(result["similarity"])
    means = {name: sum(values) / len(values) for name, values in scores.items()}
    ordered = [means[name] for name in variants]
    assert ordered == sorted(ordered), means
    assert means["lora+faceid+instantid"] > 0.85 and means["nothing"] < 0.5, means
    assert len({round(s, 4) for s in scores["lora+faceid"]}) == len(seeds), scores


def test_same_graph_gives_the_same_pixels(comfy_server: ComfyServer) -> None:
    reference = upload(comfy_server, AVA_FRONT)
    pixels = []
    for prefix in ("tw/same_a", "tw/same_b"):
        # Drop the server's cache first, so the second run computes everything again.
        requests.post(comfy_server.url + "/free", json={"free_memory": True}, timeout=30)
        (path,) = saved(comfy_server, run(comfy_server, pipeline(reference, seed=5, prefix=prefix)),
                        "save")  # fmt: skip
        with Image.open(path) as picture:
            pixels.append(picture.tobytes())
    assert pixels[0] == pixels[1]


def test_unknown_model_file_is_rejected_by_validation(comfy_server: ComfyServer) -> None:
    graph = pipeline("missing.png", seed=1, faceid=False, instantid=False, detailer=False)
    graph["ckpt"]["inputs"]["ckpt_name"] = "nope.safetensors"
    response = requests.post(comfy_server.url + "/prompt", json={"prompt": graph}, timeout=30)
    assert response.status_code == 400
    errors = {e["type"] for e in response.json()["node_errors"]["ckpt"]["errors"]}
    assert errors == {"value_not_in_list"}


def test_faceless_reference_fails_like_the_real_faceid_node(comfy_server: ComfyServer) -> None:
    reference = upload(comfy_server, NO_FACE)
    entry = run(comfy_server, pipeline(reference, seed=7, instantid=False, prefix="tw/noface"))
    assert entry["status"]["status_str"] == "error"
    kind, data = entry["status"]["messages"][-1]
    assert kind == "execution_error"
    assert data["node_type"] == "IPAdapterFaceID"
    assert "InsightFace: No face detected" in data["exception_message"]


def test_sampler_reports_progress_and_stops_on_interrupt(comfy_server_factory: Any) -> None:
    server = comfy_server_factory(standin_step_seconds=0.05)
    client_id = str(uuid.uuid4())
    socket = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}",
                                         timeout=30)  # fmt: skip
    try:
        graph = pipeline(upload(server, AVA_FRONT), seed=3, faceid=False, instantid=False,
                         detailer=False, upscale=False, prefix="tw/slow")  # fmt: skip
        graph["base"]["inputs"]["steps"] = 400  # 20 s at 0.05 s a step: interrupted long before
        prompt_id = str(uuid.uuid4())
        body = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        assert requests.post(server.url + "/prompt", json=body, timeout=30).status_code == 200
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = socket.recv()
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            if event["type"] == "progress" and event["data"]["node"] == "base":
                seen.append(event["data"]["value"])
                if len(seen) == 3:
                    requests.post(server.url + "/interrupt", json={}, timeout=30)
            if event["type"] == "execution_interrupted":
                assert event["data"]["node_type"] == "KSampler"
                break
        else:
            raise AssertionError(f"no interrupt seen; progress {seen}")
        assert seen[:3] == [1, 2, 3] and max(seen) < 400
    finally:
        socket.close()


def test_restarted_server_keeps_its_files_and_stops_cleanly(comfy_server_factory: Any) -> None:
    server = comfy_server_factory()
    name = upload(server, AVA_FRONT)
    old_port = server.port
    server.restart()
    assert server.port == old_port and server.running
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": name}},
        "save": {"class_type": "SaveImage",
                 "inputs": {"images": ["load", 0], "filename_prefix": "tw/restart"}},
    }  # fmt: skip
    assert saved(server, run(server, graph), "save")[0].exists()
    assert server.stop() == 0 and not server.running


def test_by_hand_command_serves_until_ctrl_c(comfy_env: ComfyEnv, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.comfy", "--base-dir", str(tmp_path / "base")]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 120
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                if selector.select(timeout=1.0):
                    line = proc.stdout.readline()  # type: ignore[union-attr]
                    if " at http://127.0.0.1:" in line:
                        url = line.split(" at ", 1)[1].split()[0]
        assert url, f"no URL printed (exit {proc.poll()})"
        assert requests.get(url + "/system_stats", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/system_stats", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()  # type: ignore[union-attr]
