"""The stand-ins cannot drift from the recorded node signatures.

The live test server's ``/object_info`` is compared with the recordings in
``orchestrator/data/object_info/``: every core class with ``core-0.3.75.json`` (recorded from a bare
0.3.75, so the core stand-ins must be invisible), every pack stand-in with ``third_party.json``
(names, input specs with defaults/min/max/step/choices, order, outputs, output names and lists,
output node, category, display name). Two differences are by design and checked as such: file
combos list the files in the server's model folders, and FaceDetailer's sampler list is the
running ComfyUI's own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.comfy.install import REPO
from tests.comfy.server import ComfyServer

pytestmark = pytest.mark.server

RECORDED = REPO / "orchestrator" / "data" / "object_info"
CORE_SWAPPED = (
    "CheckpointLoaderSimple", "LoraLoader", "LoraLoaderModelOnly", "ControlNetLoader",
    "CLIPVisionLoader", "KSampler",
)  # fmt: skip
# (node, input) -> model folder whose files the combo lists; "prefix/" folders as the Subpack does.
FILE_COMBOS = {
    ("CheckpointLoaderSimple", "ckpt_name"): ("checkpoints",),
    ("LoraLoader", "lora_name"): ("loras",),
    ("LoraLoaderModelOnly", "lora_name"): ("loras",),
    ("ControlNetLoader", "control_net_name"): ("controlnet",),
    ("CLIPVisionLoader", "clip_name"): ("clip_vision",),
    ("UpscaleModelLoader", "model_name"): ("upscale_models",),
    ("IPAdapterModelLoader", "ipadapter_file"): ("ipadapter",),
    ("InstantIDModelLoader", "instantid_file"): ("instantid",),
    ("SAMLoader", "model_name"): ("sams",),
    ("UltralyticsDetectorProvider", "model_name"): ("ultralytics_bbox", "ultralytics_segm"),
}
COMPARED_KEYS = (
    "input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
    "description", "category", "output_node",
)  # fmt: skip


def _load(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / name).read_text())


@pytest.fixture(scope="module")
def live(comfy_server: ComfyServer) -> dict[str, Any]:
    response = requests.get(comfy_server.url + "/object_info", timeout=30)
    response.raise_for_status()
    return dict(response.json())


def _choices(spec: list[Any]) -> list[Any] | None:
    """The choice list of a V1 or V3 combo spec, or None for other inputs."""
    if isinstance(spec[0], list):
        return list(spec[0])
    if spec[0] == "COMBO" and len(spec) > 1 and "options" in spec[1]:
        return list(spec[1]["options"])
    return None


def _with_choices(spec: list[Any], choices: list[Any]) -> list[Any]:
    if isinstance(spec[0], list):
        return [choices, *spec[1:]]
    return ["COMBO", {**spec[1], "options": choices}]


def _differences(node: str, expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [
        f"{node}.{key}: recorded {expected.get(key)!r}, live {actual.get(key)!r}"
        for key in COMPARED_KEYS
        if key in expected and expected.get(key) != actual.get(key)
    ]


def _replace_input(info: dict[str, Any], name: str, choices: list[Any]) -> dict[str, Any]:
    info = json.loads(json.dumps(info))
    for section in info["input"].values():
        if name in section:
            section[name] = _with_choices(section[name], choices)
    return info


def _folder_files(server: ComfyServer, folders: tuple[str, ...]) -> list[str]:
    files: list[str] = []
    for folder in folders:
        response = requests.get(f"{server.url}/models/{folder}", timeout=10)
        response.raise_for_status()
        names = response.json()
        prefix = folder.removeprefix("ultralytics_") + "/" if len(folders) > 1 else ""
        files += [prefix + n for n in names]
    return files


def _server_files(server: ComfyServer) -> set[str]:
    """Every file and folder below the server's model and input folders, as combos list them."""
    names = set()
    for root in (server.models_dir, server.input_dir):
        for path in root.rglob("*"):
            parts = path.relative_to(root).parts
            names.update("/".join(parts[i:]) for i in range(len(parts)))
    return names


def test_core_classes_look_exactly_as_on_a_bare_server(
    live: dict[str, Any], comfy_server: ComfyServer
) -> None:
    recorded = _load("core-0.3.75.json")
    files = _server_files(comfy_server)
    problems = []
    for node, expected in recorded.items():
        if node == "SaveImageWebsocket":
            continue  # a stock custom node of the ComfyUI tree, not loaded with --base-directory
        if node not in live:
            problems.append(f"{node}: missing on the test server")
            continue
        actual = live[node]
        for inputs in actual["input"].values():
            for name, spec in inputs.items():
                # Recorded on an empty server: combos differ by the files tests put there only.
                choices = _choices(spec)
                if choices is not None and set(choices) & files:
                    actual = _replace_input(actual, name, [c for c in choices if c not in files])
        problems += _differences(node, expected, actual)
        if expected.get("python_module") != actual.get("python_module"):
            problems.append(f"{node}.python_module: {actual.get('python_module')!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("node", CORE_SWAPPED)
def test_core_stand_in_file_combos_list_the_model_folder(
    live: dict[str, Any], comfy_server: ComfyServer, node: str
) -> None:
    for (owner, name), folders in FILE_COMBOS.items():
        if owner == node:
            spec = live[node]["input"]["required"][name]
            assert _choices(spec) == _folder_files(comfy_server, folders)


def test_pack_stand_ins_match_the_recorded_pack_nodes(
    live: dict[str, Any], comfy_server: ComfyServer
) -> None:
    recorded = _load("third_party.json")
    packs = {k: v for k, v in recorded.items() if v["python_module"].startswith("custom_nodes.")}
    assert len(packs) == 16
    live_samplers = _choices(live["KSampler"]["input"]["required"]["sampler_name"])
    problems = []
    for node, expected in packs.items():
        if node not in live:
            problems.append(f"{node}: missing on the test server")
            continue
        for (owner, name), folders in FILE_COMBOS.items():
            if owner == node:
                files = _folder_files(comfy_server, folders)
                recorded_files = _choices(expected["input"]["required"][name]) or []
                missing = set(recorded_files) - set(files)
                assert not missing, f"{node}.{name}: the pipeline's files {missing} are not listed"
                expected = _replace_input(expected, name, files)
        if node == "FaceDetailer":
            # The pack reads the sampler list from the running ComfyUI (0.8.0 has two more).
            recorded_samplers = _choices(expected["input"]["required"]["sampler_name"]) or []
            assert set(live_samplers or []) <= set(recorded_samplers)
            expected = _replace_input(expected, "sampler_name", live_samplers or [])
        problems += _differences(node, expected, live[node])
    assert not problems, "\n".join(problems)


def test_recorded_core_nodes_of_the_pipeline_match_the_live_core(live: dict[str, Any]) -> None:
    # third_party.json also carries the pipeline's 20 core nodes (as of 0.8.0): apart from file
    # lists, paraphrased texts and 0.8.0's two extra samplers, the live 0.3.75 core must agree.
    recorded = _load("third_party.json")
    core = {k: v for k, v in recorded.items() if not v["python_module"].startswith("custom_")}
    for node, expected in core.items():
        actual = live[node]
        assert actual["output"] == expected["output"], node
        assert actual["output_name"] == expected["output_name"], node
        assert actual["input_order"] == expected["input_order"], node
        assert actual["category"] == expected["category"], node
