"""charpack's nodes in the real ComfyUI 0.3.75 CPU server: every node runs, wrong inputs give the
error a user sees (with the fix), save-path attacks are refused, and the recorded schemas the
orchestrator validates against (``orchestrator/data/object_info/charpack.json``) match the live
server.

Regenerate the recording after changing a node: ``python -m tests.server.test_nodes_server``
(starts a test server, writes the file).
"""

from __future__ import annotations

import copy
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, PngImagePlugin

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.results import JobResult
from charpack.errors import PromptRejected
from tests.comfy.install import REPO
from tests.comfy.server import ComfyServer

pytestmark = pytest.mark.server

RECORDING = REPO / "orchestrator" / "data" / "object_info" / "charpack.json"
AVA_FRONT = REPO / "examples" / "faces" / "ava_front.png"
NO_FACE = REPO / "tests" / "data" / "no_face.png"
# Inputs whose choices are the server's files: recorded empty (the orchestrator then leaves the
# check to the server), like the file combos of the core recording.
FILE_COMBOS = {
    "CharpackCharacter": ("ckpt_name", "lora_name", "face_image", "face_image_2"),
    "CharpackPipeline": ("upscale_model",),
    "CharpackUpscale": ("upscale_model",),
}


def recordable(live: dict[str, Any]) -> dict[str, Any]:
    """The charpack entries of a live ``/object_info``, with server-specific file lists blanked."""
    nodes = {k: copy.deepcopy(v) for k, v in live.items() if k.startswith("Charpack")}
    for node, names in FILE_COMBOS.items():
        for section in nodes[node]["input"].values():
            for name in names:
                if name in section:
                    if isinstance(section[name][0], list):  # a file list as the type itself
                        section[name][0] = []
                    options = section[name][1]
                    options["options"] = []
                    options.pop("default", None)
    return nodes


def fresh_picture(source: Path, folder: Path) -> Path:
    """``source``'s pixels under a new file (a text chunk differs), so no cache can serve it."""
    target = folder / f"{source.stem}-{uuid.uuid4().hex[:8]}.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("test-run", target.stem)
    with Image.open(source) as picture:
        picture.save(target, pnginfo=info)
    return target


def run(client: ComfyClient, graph: dict[str, Any], *, timeout: float = 300) -> JobResult:
    prompt_id = str(uuid.uuid4())
    client.submit(graph, prompt_id=prompt_id, client_id=str(uuid.uuid4()))
    result = client.fetch_result(prompt_id, retry_s=timeout)
    assert result is not None, f"prompt {prompt_id} did not finish within {timeout} s"
    return result


@pytest.fixture
def client(comfy_server: ComfyServer) -> Any:
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as c:
        yield c


def character(face: str, **changes: Any) -> dict[str, Any]:
    inputs = {
        "ckpt_name": "bigLoveXL.safetensors", "lora_name": "character_lora.safetensors",
        "lora_strength": 0.7, "trigger": "avachar", "face_image": face, "face_image_2": "None",
        "attributes": "hair: auburn bob", "prompt_prefix": "photo of", "prompt_suffix": "",
        "negative": "cartoon, plastic skin",
    }  # fmt: skip
    inputs.update(changes)
    return {"class_type": "CharpackCharacter", "inputs": inputs}


def sampling(seed: int) -> dict[str, Any]:
    return {"seed": seed, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras"}


def test_the_recorded_schemas_match_the_live_server(comfy_server: ComfyServer) -> None:
    live = requests.get(comfy_server.url + "/object_info", timeout=30).json()
    recorded = json.loads(RECORDING.read_text(encoding="utf-8"))
    assert recordable(live) == recorded, (
        "orchestrator/data/object_info/charpack.json is out of date: run "
        "`python -m tests.server.test_nodes_server` and commit the file"
    )


def test_every_stage_node_runs_chained_then_scores_and_saves(
    comfy_server: ComfyServer, client: ComfyClient, tmp_path: Path
) -> None:
    face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
    seed = 11  # fixed: the scores depend on it; the fresh face file keeps the graph uncached
    prompt = "walking along a harbour, linen dress"
    common = {"character": ["char", 0], "prompt": prompt, "negative": ""}
    graph = {
        "char": character(face),
        "base": {"class_type": "CharpackBase", "inputs": {
            **common, **sampling(seed), "steps": 4, "width": 256, "height": 384, "faceid": True,
            "faceid_weight": 0.8, "pag": False, "pag_scale": 3.0}},
        "iid": {"class_type": "CharpackInstantIDFix", "inputs": {
            **common, **sampling(seed), "image": ["base", 0], "instantid_weight": 0.85,
            "instantid_mode": "detailer", "instantid_steps": 4}},
        "detail": {"class_type": "CharpackFaceDetailer", "inputs": {
            **common, **sampling(seed), "image": ["iid", 0], "faceid": True,
            "faceid_weight": 0.8, "detailer_denoise": 0.4, "detailer_steps": 4}},
        "up": {"class_type": "CharpackUpscale", "inputs": {
            "image": ["detail", 0], "upscale_model": "4x-UltraSharp.pth", "output_scale": 1.0}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": face}},
        "score": {"class_type": "CharpackIdentityScore", "inputs": {
            "images": ["up", 0], "reference": ["ref", 0], "model_pack": "buffalo_l",
            "provider": "CPU"}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["score", 0], "pack": "nodes", "scene": "stages", "name": Path(face).stem,
            "seed": seed, "parameters": "stages test", "compress_level": 1,
            "score": ["score", 1]}},
    }  # fmt: skip
    result = run(client, graph).raise_for_status()
    (score,) = result.ui["score"]["scores"]
    assert 0.8 < score <= 1.0, "the chained stages keep the character's face (strangers: ~0.6)"
    refs = {ref.key: ref for ref in result.outputs}
    assert set(refs) == {"pack_images", "sidecars"}  # the temp preview is no output to fetch
    png = client.download(refs["pack_images"], tmp_path / "out.png")  # waits out the writer
    sidecar = client.download(refs["sidecars"], tmp_path / "out.json")
    with Image.open(png.path) as picture:
        assert picture.size == (1024, 1536), "4x the 256x384 base"
        assert float(picture.info["score"]) == pytest.approx(score, abs=1e-6)
    meta = json.loads(sidecar.path.read_text())
    assert meta["sha256"] == png.sha256 and meta["size"] == png.size and meta["seed"] == seed
    assert meta["prompt_id"] == result.prompt_id  # the saver names the prompt that made it
    saved = f"{Path(face).stem}.{result.prompt_id}.png"
    assert (comfy_server.output_dir / "nodes" / "stages" / saved).is_file()


def test_a_macros_seed_and_parameters_outputs_reach_the_saved_file_and_sidecar(
    client: ComfyClient, tmp_path: Path
) -> None:
    face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
    seed = uuid.uuid4().int % 2**32  # what the editor's control_after_generate would have put in
    graph = {
        "char": character(face),
        "base": {"class_type": "CharpackBase", "inputs": {
            "character": ["char", 0], "prompt": "reading in a library", "negative": "",
            **sampling(seed), "steps": 2, "width": 256, "height": 256, "faceid": False,
            "faceid_weight": 0.8, "pag": False, "pag_scale": 3.0}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["base", 0], "pack": "nodes", "scene": "seed", "name": "macro",
            "compress_level": 1, "seed": ["base", 1], "parameters": ["base", 2]}},
    }  # fmt: skip
    result = run(client, graph).raise_for_status()
    entry = client.history(result.prompt_id)
    assert entry is not None
    assert entry["prompt"][2]["base"]["inputs"]["seed"] == seed  # the prompt's value
    refs = {ref.key: ref for ref in result.outputs}
    _raw, meta = client.fetch_sidecar(
        refs["sidecars"], prompt_id=result.prompt_id, image=refs["pack_images"].filename,
        not_found_s=30,
    )  # fmt: skip
    png = client.download(refs["pack_images"], tmp_path / "macro.png")
    assert meta["seed"] == seed and meta["sha256"] == png.sha256
    with Image.open(png.path) as picture:
        assert picture.info["seed"] == str(seed)
        text = picture.info["parameters"]
    assert text == meta["parameters"]
    assert "avachar" in text and "reading in a library" in text and f"Seed: {seed}," in text
    assert "Size: 256x256" in text and "Upscaler" not in text  # what Base ran, nothing else


def test_an_unknown_checkpoint_is_refused_before_anything_runs_with_the_choices(
    comfy_server: ComfyServer, client: ComfyClient
) -> None:
    graph = {
        "char": character("whatever.png", ckpt_name="juggernautXL.safetensors"),
        "base": {"class_type": "CharpackBase", "inputs": {
            "character": ["char", 0], "prompt": "", "negative": "", **sampling(1), "steps": 1,
            "width": 256, "height": 256, "faceid": False, "faceid_weight": 0.8, "pag": False,
            "pag_scale": 3.0}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["base", 0]}},
    }  # fmt: skip
    with pytest.raises(PromptRejected) as caught:
        client.submit(graph, prompt_id=str(uuid.uuid4()), client_id="t")
    lines = caught.value.node_messages["char"]
    assert lines and all(line.startswith("[CharpackCharacter] ") for line in lines)
    # ComfyUI's own list check (the checkpoint combo is a file list), once, under its input;
    # the missing face is its own line.
    checkpoint = [line for line in lines if "ckpt_name" in line]
    choices = ", ".join(client.models("checkpoints"))  # the test world's checkpoint files
    assert checkpoint == [
        "[CharpackCharacter] ckpt_name: 'juggernautXL.safetensors' is not an allowed value; "
        f"the server has: {choices}."
    ], lines
    assert len(lines) == 2 and any(
        "face_image" in line and "whatever.png" in line for line in lines
    )


def test_a_reference_without_a_face_fails_with_the_fix(client: ComfyClient, tmp_path: Path) -> None:
    no_face = client.upload_image(fresh_picture(NO_FACE, tmp_path)).image_value
    graph = {
        "img": {"class_type": "LoadImage", "inputs": {"image": no_face}},
        "score": {"class_type": "CharpackIdentityScore", "inputs": {
            "images": ["img", 0], "reference": ["img", 0], "model_pack": "buffalo_l",
            "provider": "CPU"}},
    }  # fmt: skip
    result = run(client, graph)
    assert result.failure is not None and result.failure.node_type == "CharpackIdentityScore"
    assert result.failure.message.startswith(
        "CharpackIdentityScore: no face found in reference image 1 of 1"
    )
    assert "use a clear, well-lit photo of the character's face" in result.failure.message


def test_a_generated_image_without_a_face_is_no_face_not_a_score_and_is_still_saved(
    client: ComfyClient, tmp_path: Path
) -> None:
    face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
    no_face = client.upload_image(fresh_picture(NO_FACE, tmp_path)).image_value
    name = f"noface-{uuid.uuid4().hex[:8]}"
    graph = {
        "ref": {"class_type": "LoadImage", "inputs": {"image": face}},
        "img": {"class_type": "LoadImage", "inputs": {"image": no_face}},
        "score": {"class_type": "CharpackIdentityScore", "inputs": {
            "images": ["img", 0], "reference": ["ref", 0], "model_pack": "antelopev2",
            "provider": "CPU"}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["score", 0], "pack": "nodes", "scene": "noface", "name": name, "seed": 0,
            "parameters": "", "compress_level": 1, "score": ["score", 1]}},
    }  # fmt: skip
    result = run(client, graph).raise_for_status()
    assert result.ui["score"]["scores"] == (None,) and result.ui["score"]["faces"] == (False,)
    assert result.ui["score"]["warnings"][0].startswith("no face found in image 1 of 1")
    (png,) = [r for r in result.outputs if r.key == "pack_images"]
    assert client.download(png, tmp_path / "noface.png").size > 0


def test_a_missing_identity_model_file_is_named_with_its_folder(
    comfy_server: ComfyServer, client: ComfyClient, tmp_path: Path
) -> None:
    face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
    pack = comfy_server.models_dir / "insightface" / "models" / "buffalo_l"
    model = pack / "w600k_r50.onnx"
    moved = tmp_path / "w600k_r50.onnx"
    model.rename(moved)
    try:
        graph = {
            "img": {"class_type": "LoadImage", "inputs": {"image": face}},
            "score": {"class_type": "CharpackIdentityScore", "inputs": {
                "images": ["img", 0], "reference": ["img", 0], "model_pack": "buffalo_l",
                "provider": "CPU"}},
        }  # fmt: skip
        result = run(client, graph)
    finally:
        moved.rename(model)
    assert result.failure is not None
    assert result.failure.message == (
        "CharpackIdentityScore: InsightFace model pack 'buffalo_l' is incomplete: "
        f"w600k_r50.onnx not found in {pack}. Put the pack's .onnx files directly in that folder."
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("pack", "../../escape"), ("scene", "/tmp/escape"), ("name", "..")],
)
def test_save_path_attacks_are_refused_and_write_nothing(
    comfy_server: ComfyServer, client: ComfyClient, field: str, value: str
) -> None:
    inputs = {"pack": "nodes", "scene": "attack", "name": "x"}
    inputs[field] = value
    graph = {
        "img": {"class_type": "EmptyImage", "inputs": {
            "width": 8, "height": 8, "batch_size": 1, "color": uuid.uuid4().int % 0xFFFFFF}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["img", 0], **inputs, "seed": 0, "parameters": "",
            "compress_level": 1}},
    }  # fmt: skip
    before = sorted(p for p in comfy_server.base_dir.parent.rglob("*escape*"))
    result = run(client, graph)
    assert result.failure is not None and result.failure.node_type == "CharpackSavePack"
    assert result.failure.message.startswith(f"CharpackSavePack: {field} {value!r}")
    assert "use letters, digits" in result.failure.message
    assert sorted(p for p in comfy_server.base_dir.parent.rglob("*escape*")) == before
    assert not Path("/tmp/escape").exists()


def main() -> None:
    """Start a test server, read its ``/object_info`` and rewrite the recording."""
    from tests.comfy.server import start_server

    with tempfile.TemporaryDirectory(prefix="charpack-objectinfo-") as base:
        server = start_server(Path(base))
        try:
            live = requests.get(server.url + "/object_info", timeout=30).json()
        finally:
            server.stop()
    text = json.dumps(recordable(live), indent=1, ensure_ascii=False) + "\n"
    RECORDING.write_text(text, encoding="utf-8")
    print(f"wrote {RECORDING.relative_to(REPO)} ({len(text)} bytes)")  # noqa: T201


if __name__ == "__main__":
    main()
