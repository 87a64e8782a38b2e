"""Done-when check: the full pipeline runs end to end on the CPU server both through the macro
node (what a graph-editor user builds) and as the API JSON the orchestrator sends, and the two
give identical 3328x4864 pixels.

(b) is ``build_pipeline(spec)`` with the identity score and the pack saver, as the orchestrator
posts it; (a) is Character -> Pipeline (every widget at its default but the seed) -> Identity
score -> Save pack. Model-bound nodes are the test world's stand-ins; the upscale is the real
``UpscaleModelLoader``/``ImageUpscaleWithModel`` on the tiny ESRGAN. The only full-size runs of
the suite: two, about 20 s each on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.results import JobResult
from charpack_nodes.pipelines import (
    CharacterSpec,
    LoraSpec,
    OutputSpec,
    PipelineSpec,
    SamplerSpec,
    build_pipeline,
    parameters_text,
)
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import AVA_FRONT, fresh_picture, run

pytestmark = pytest.mark.server

PROMPT = "strolling through a flower market, light summer dress, morning light"
PACK, SCENE = "e2e", "market"


def executed_everything(result: JobResult, entry: dict[str, Any], node: str) -> None:
    cached = [m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached"]
    assert node not in sum(cached, []), f"{node} was served from the cache, not run"
    result.raise_for_status()


def macro_graph(client: ComfyClient, spec: PipelineSpec, face: str) -> dict[str, Any]:
    """What a graph-editor user wires, with the widgets' own defaults from /object_info."""
    info = client.object_info("CharpackPipeline")["CharpackPipeline"]["input"]["required"]
    widgets = {name: opts[1]["default"] for name, opts in info.items() if "default" in opts[1]}
    widgets.update(prompt=spec.prompt, negative=spec.negative, seed=spec.sampler.seed)
    c = spec.character
    assert c.lora is not None
    return {
        "char": {"class_type": "CharpackCharacter", "inputs": {
            "ckpt_name": c.checkpoint, "lora_name": c.lora.name,
            "lora_strength": c.lora.strength_model, "trigger": c.trigger, "face_image": face,
            "face_image_2": "None", "attributes": "hair: auburn shoulder-length bob",
            "prompt_prefix": c.prompt_prefix, "prompt_suffix": c.prompt_suffix,
            "negative": c.negative}},
        "pipe": {"class_type": "CharpackPipeline", "inputs": {
            "character": ["char", 0], **widgets}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": face}},
        "score": {"class_type": "CharpackIdentityScore", "inputs": {
            "images": ["pipe", 0], "reference": ["ref", 0], "model_pack": "buffalo_l",
            "provider": "CPU"}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["score", 0], "pack": PACK, "scene": SCENE, "name": "macro",
            "seed": spec.sampler.seed, "parameters": parameters_text(spec), "compress_level": 1,
            "score": ["score", 1]}},
    }  # fmt: skip


def test_macro_node_and_orchestrator_json_give_identical_full_size_pixels(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as client:
        face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
        seed = 424242  # fixed (scores depend on it); the fresh face file keeps it uncached
        spec = PipelineSpec(
            character=CharacterSpec(
                checkpoint="bigLoveXL.safetensors",
                lora=LoraSpec("character_lora.safetensors", 0.7, 0.7),
                trigger="avachar",
                face_images=(face,),
                attributes=(("hair", "auburn shoulder-length bob"),),
                prompt_prefix="photo of",
            ),
            prompt=PROMPT,
            sampler=SamplerSpec(seed=seed),
            output=OutputSpec(pack=PACK, scene=SCENE, name="api"),
        )
        api_graph = build_pipeline(spec).graph.finalize()
        pixels: dict[str, Path] = {}
        scores: dict[str, tuple[Any, ...]] = {}
        for kind, graph, last in (
            ("api", api_graph, "base.sampler"),  # first: nothing of it can be cached
            ("macro", macro_graph(client, spec, face), "pipe"),
        ):
            result = run(client, graph)
            entry = requests.get(f"{comfy_server.url}/history/{result.prompt_id}", timeout=30)
            executed_everything(result, entry.json()[result.prompt_id], last)
            (score_node,) = [n for n, ui in result.ui.items() if "scores" in ui]
            scores[kind] = result.ui[score_node]["scores"]
            refs = {ref.key: ref for ref in result.outputs}
            png = client.download(refs["pack_images"], tmp_path / f"{kind}.png")
            sidecar = client.download(refs["sidecars"], tmp_path / f"{kind}.json")
            assert json.loads(sidecar.path.read_text())["sha256"] == png.sha256
            pixels[kind] = png.path
    with Image.open(pixels["api"]) as api, Image.open(pixels["macro"]) as macro:
        assert api.size == macro.size == (3328, 4864)
        assert ImageChops.difference(api.convert("RGB"), macro.convert("RGB")).getbbox() is None
    assert scores["api"] == scores["macro"] and scores["api"][0] > 0.8
