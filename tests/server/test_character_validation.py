"""The Character node in the real ComfyUI 0.3.75 CPU server, as the graph editor meets it: each
wrong file name is refused when the prompt is queued, reported once and under its own input (the
editor marks that input), and the node pack's web extension is served to the editor."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from tests.comfy.install import REPO
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import fresh_picture, run

pytestmark = pytest.mark.server

AVA_FRONT = REPO / "examples" / "faces" / "ava_front.png"


def character(face: str, **changes: Any) -> dict[str, Any]:
    inputs = {
        "ckpt_name": "bigLoveXL.safetensors", "lora_name": "character_lora.safetensors",
        "lora_strength": 0.7, "trigger": "avachar", "face_image": face, "face_image_2": "None",
        "attributes": "", "prompt_prefix": "photo of", "prompt_suffix": "", "negative": "",
    }  # fmt: skip
    inputs.update(changes)
    return {"class_type": "CharpackCharacter", "inputs": inputs}


def graph(char: dict[str, Any]) -> dict[str, Any]:
    return {
        "char": char,
        "base": {"class_type": "CharpackBase", "inputs": {
            "character": ["char", 0], "prompt": "", "negative": "", "seed": 1, "cfg": 4.0,
            "sampler_name": "euler", "scheduler": "karras", "steps": 1, "width": 256,
            "height": 256, "faceid": False, "faceid_weight": 0.8, "pag": False,
            "pag_scale": 3.0}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["base", 0]}},
    }  # fmt: skip


def rejected(server: ComfyServer, prompt: dict[str, Any]) -> dict[str, Any]:
    """The node_errors of ComfyUI's 400 answer to ``POST /prompt`` (the editor's own call)."""
    answer = requests.post(
        server.url + "/prompt",
        json={"prompt": prompt, "client_id": str(uuid.uuid4()), "prompt_id": str(uuid.uuid4())},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    return answer.json()["node_errors"]


def only_error(node_errors: dict[str, Any]) -> dict[str, Any]:
    assert list(node_errors) == ["char"], "only the Character node is reported"
    (error,) = node_errors["char"]["errors"]
    return error


@pytest.fixture
def face(comfy_server: ComfyServer) -> str:
    return fresh_picture(AVA_FRONT, comfy_server.input_dir).name


def test_a_missing_face_file_is_reported_once_under_face_image(comfy_server: ComfyServer) -> None:
    error = only_error(rejected(comfy_server, graph(character("not-uploaded.png"))))
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"]["input_name"] == "face_image"
    assert error["details"].startswith(
        "face_image - CharpackCharacter: face image 'not-uploaded.png' is not in ComfyUI's "
        "input folder (available: "
    )
    assert error["details"].endswith("upload it with the node's button or pick one of those")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ckpt_name", "juggernautXL.safetensors"),
        ("lora_name", "other_lora.safetensors"),
        ("face_image_2", "not-uploaded-either.png"),
    ],
)
def test_every_other_wrong_file_is_reported_once_under_its_own_input(
    comfy_server: ComfyServer, face: str, name: str, value: str
) -> None:
    error = only_error(rejected(comfy_server, graph(character(face, **{name: value}))))
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == name
    assert error["details"].startswith(f"{name}: '{value}' not in ")


@pytest.mark.parametrize(
    ("name", "value"),
    [("sampler_name", "euler_magic"), ("scheduler", "fastest"), ("upscale_model", "8x-Magic.pth")],
)
def test_a_macros_wrong_choice_is_reported_once_under_its_own_input(
    comfy_server: ComfyServer, face: str, name: str, value: str
) -> None:
    prompt = graph(character(face))
    if name == "upscale_model":  # on the node that has one
        up = {"image": ["base", 0], "upscale_model": value, "output_scale": 1.0}
        prompt["up"] = {"class_type": "CharpackUpscale", "inputs": up}
        prompt["show"]["inputs"]["images"] = ["up", 0]  # only what reaches an output is checked
        node = "up"
    else:
        prompt["base"]["inputs"][name] = value
        node = "base"
    node_errors = rejected(comfy_server, prompt)
    assert list(node_errors) == [node]
    (error,) = node_errors[node]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == name
    assert error["details"].startswith(f"{name}: '{value}' not in ")


def test_two_wrong_files_are_two_errors_each_under_its_input(comfy_server: ComfyServer) -> None:
    node_errors = rejected(
        comfy_server, graph(character("gone.png", ckpt_name="juggernautXL.safetensors"))
    )
    names = sorted(e["extra_info"]["input_name"] for e in node_errors["char"]["errors"])
    assert names == ["ckpt_name", "face_image"]


def test_the_right_files_pass_validation_and_run(comfy_server: ComfyServer, face: str) -> None:
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as client:
        result = run(client, graph(character(face, face_image_2=face)))
    result.raise_for_status()


def test_the_editor_is_served_the_packs_web_extension(comfy_server: ComfyServer) -> None:
    listed = requests.get(comfy_server.url + "/extensions", timeout=30).json()
    ours = sorted(path for path in listed if path.startswith("/extensions/charpack_nodes/"))
    assert ours == [
        "/extensions/charpack_nodes/identity.js",
        "/extensions/charpack_nodes/png_workflow.js",
        "/extensions/charpack_nodes/uploads.js",
    ]
    web = REPO / "custom_nodes" / "charpack_nodes" / "web"
    for path in ours:
        served = requests.get(comfy_server.url + path, timeout=30)
        assert served.status_code == 200
        assert served.text == (web / Path(path).name).read_text(encoding="utf-8")
