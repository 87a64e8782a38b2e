"""The node pack registers once, documents every node, input and output, and its widgets show
the pipeline's presets with the ranges the parameter types enforce."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from charpack_nodes.ops import specs
from charpack_nodes.pipelines import ParameterError

NODE_IDS = [
    "CharpackCharacter",
    "CharpackPipeline",
    "CharpackBase",
    "CharpackInstantIDFix",
    "CharpackFaceDetailer",
    "CharpackUpscale",
    "CharpackIdentityScore",
    "CharpackIdentityGate",
    "CharpackSavePack",
    "CharpackSaveTrainedLoRA",
    "CharpackFaceCheck",
]


def registered() -> list[Any]:
    import charpack_nodes

    extension = asyncio.run(charpack_nodes.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def by_id() -> dict[str, Any]:
    return {node.GET_SCHEMA().node_id: node for node in registered()}


def test_the_pack_registers_each_node_once_through_the_v3_entrypoint() -> None:
    import charpack_nodes

    ids = [node.GET_SCHEMA().node_id for node in registered()]
    assert ids == NODE_IDS
    # Registered once: a NODE_CLASS_MAPPINGS as well would make ComfyUI skip the V3 entrypoint.
    assert not hasattr(charpack_nodes, "NODE_CLASS_MAPPINGS")


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_has_a_description_a_category_and_tooltips_everywhere(node_id: str) -> None:
    info = by_id()[node_id].GET_NODE_INFO_V1()
    assert info["category"].startswith("charpack/")
    assert info["display_name"].endswith("(charpack)")
    assert len(info["description"]) > 40, "one real sentence"
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert all(info["output_tooltips"]), f"{node_id} has an output without a tooltip"


def test_the_package_and_its_pure_helpers_import_without_comfyui_or_torch() -> None:
    code = (
        "import sys, threading, charpack_nodes, charpack_nodes.ops.specs, "
        "charpack_nodes.ops.paths; "
        "loaded = {'torch', 'comfy', 'comfy_api', 'folder_paths', 'numpy', 'insightface'} "
        "& set(sys.modules); "
        "assert not loaded, loaded; assert threading.active_count() == 1"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loading_the_nodes_does_no_work_and_starts_no_thread() -> None:
    # A fresh interpreter: what ComfyUI's loader does, then look for threads and a writer.
    code = (
        "import asyncio, threading, charpack_nodes; "
        "ext = asyncio.run(charpack_nodes.comfy_entrypoint()); "
        "asyncio.run(ext.get_node_list()); "
        "from charpack_nodes.ops import saving, identity; "
        "assert saving._WRITER is None and not identity._ANALYSERS; "
        "assert 'insightface' not in __import__('sys').modules; "
        "names = [t.name for t in threading.enumerate()]; "
        "assert not [n for n in names if 'charpack' in n], names"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


MACRO_IDS = NODE_IDS[1:6]


def widget(info: dict[str, Any], name: str) -> dict[str, Any]:
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return info["input"][section][name][1]
    raise KeyError(name)


@pytest.mark.parametrize("node_id", MACRO_IDS)
def test_macro_widgets_default_to_the_presets(node_id: str) -> None:
    node = by_id()[node_id]
    info = node.GET_NODE_INFO_V1()
    for name in node.SETTINGS:
        if name == "upscale_model":
            continue  # a file combo: its default only shows when the file is installed
        assert widget(info, name)["default"] == specs.preset(name), name


def numeric_settings() -> list[tuple[str, str]]:
    nodes = by_id()
    return sorted(
        {
            (node_id, name)
            for node_id in MACRO_IDS
            for name in nodes[node_id].SETTINGS
            if isinstance(specs.preset(name), (int, float))
            and not isinstance(specs.preset(name), bool)
            and name != "seed"
        }
    )


@pytest.mark.parametrize(("node_id", "name"), numeric_settings())
def test_macro_widget_ranges_are_the_parameter_types_ranges(node_id: str, name: str) -> None:
    options = widget(by_id()[node_id].GET_NODE_INFO_V1(), name)
    low, high, step = options["min"], options["max"], options["step"]
    specs.pipeline_spec(**{name: low})
    specs.pipeline_spec(**{name: high})
    for outside in (low - step, high + step):
        with pytest.raises(ParameterError):
            specs.pipeline_spec(**{name: outside})


def test_character_lora_strength_range_is_the_lora_types_range() -> None:
    options = widget(by_id()["CharpackCharacter"].GET_NODE_INFO_V1(), "lora_strength")
    for ok in (options["min"], options["max"]):
        specs.character_spec(
            ckpt_name="c", lora_name="l", lora_strength=ok, trigger="", face_image="f.png"
        )
    with pytest.raises(ParameterError):
        specs.character_spec(
            ckpt_name="c",
            lora_name="l",
            lora_strength=options["max"] + 0.05,
            trigger="",
            face_image="f.png",
        )


def test_the_characters_wrong_file_names_are_each_checked_under_their_own_input() -> None:
    import inspect

    node = by_id()["CharpackCharacter"]
    info = node.GET_NODE_INFO_V1()["input"]
    # ComfyUI 0.3.75 checks a combo's value itself only when its type is the list of choices.
    for section, name in (("required", "ckpt_name"), ("required", "lora_name"),
                          ("optional", "face_image_2")):  # fmt: skip
        kind, options = info[section][name]
        assert kind == options["options"], name
    # ... and files a validate_inputs failure under every argument: face_image is the only one.
    assert list(inspect.signature(node.validate_inputs).parameters) == ["face_image"]
    assert info["required"]["face_image"][0] == "COMBO"
    assert info["required"]["face_image"][1]["image_upload"] is True
    assert info["optional"]["face_image_2"][1]["image_upload"] is True


def test_the_web_extension_ships_with_the_pack() -> None:
    from pathlib import Path

    import charpack_nodes

    web = Path(charpack_nodes.__file__).parent / charpack_nodes.WEB_DIRECTORY
    shipped = sorted(p.name for p in web.glob("*.js"))
    assert shipped == ["identity.js", "png_workflow.js", "uploads.js"]
