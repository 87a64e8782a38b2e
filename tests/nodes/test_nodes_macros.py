"""Each macro node expands into exactly the subgraph the pipelines module builds: the same nodes,
ids (under the macro's own id), inputs and output link, with the upstream image passed in as a
live value; the sampling macros also output the seed they ran with and the parameters text of
what they ran. The expected graphs are built here from the parameter types directly, so a wrong
mapping from a widget to a parameter fails too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from charpack_nodes.nodes_character import CharpackCharacter
from charpack_nodes.nodes_pipeline import (
    CharpackBase,
    CharpackFaceDetailer,
    CharpackInstantIDFix,
    CharpackPipeline,
    CharpackUpscale,
)
from charpack_nodes.pipelines import (
    CharacterSpec,
    DetailerSpec,
    FaceIDSpec,
    InstantIDSpec,
    LoraSpec,
    PAGSpec,
    PipelineSpec,
    SamplerSpec,
    UpscaleSpec,
    build_pipeline,
    build_stage,
    parameters_text,
    params,
)
from tests.nodes.helpers import ComfyDirs, call_node, face_picture

PROMPT = "walking along a harbour at golden hour, linen dress"
NEGATIVE = "sunglasses"
SAMPLING = {"seed": 1234, "cfg": 5.5, "sampler_name": "euler", "scheduler": "normal"}


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


def assert_same_graph(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(got) == sorted(expected)
    for node_id, node in expected.items():
        assert got[node_id]["class_type"] == node["class_type"], node_id
        assert sorted(got[node_id]["inputs"]) == sorted(node["inputs"]), node_id
        for name, value in node["inputs"].items():
            assert same_value(got[node_id]["inputs"][name], value), f"{node_id}.{name}"


@pytest.fixture
def character(comfy_dirs: ComfyDirs) -> CharacterSpec:
    for name in ("ava.png", "ava_side.png"):
        face_picture().save(comfy_dirs.input / name)
    out = call_node(
        CharpackCharacter, ckpt_name="bigLoveXL.safetensors",
        lora_name="character_lora.safetensors", lora_strength=0.65, trigger="avachar",
        face_image="ava.png", face_image_2="ava_side.png",
        attributes="hair: auburn shoulder-length bob\n\neyes: green", prompt_prefix="photo of",
        prompt_suffix="35mm film", negative="cartoon, plastic skin",
    )  # fmt: skip
    return out.args[0]


def test_character_node_bundles_everything_into_one_character_spec(
    character: CharacterSpec,
) -> None:
    assert character == CharacterSpec(
        checkpoint="bigLoveXL.safetensors",
        lora=LoraSpec("character_lora.safetensors", 0.65, 0.65),
        trigger="avachar",
        face_images=("ava.png", "ava_side.png"),
        attributes=(("hair", "auburn shoulder-length bob"), ("eyes", "green")),
        prompt_prefix="photo of",
        prompt_suffix="35mm film",
        negative="cartoon, plastic skin",
    )


def test_character_without_lora_or_second_face(comfy_dirs: ComfyDirs) -> None:
    face_picture().save(comfy_dirs.input / "ava.png")
    out = call_node(
        CharpackCharacter, ckpt_name="bigLoveXL.safetensors", lora_name="None",
        lora_strength=0.7, trigger="", face_image="ava.png", face_image_2="None",
        attributes="", prompt_prefix="", prompt_suffix="", negative="",
    )  # fmt: skip
    assert out.args[0].lora is None and out.args[0].face_images == ("ava.png",)


def test_whole_pipeline_macro_expands_into_build_pipeline(character: CharacterSpec) -> None:
    widgets = {
        **SAMPLING, "steps": 12, "width": 768, "height": 1152, "faceid": True,
        "faceid_weight": 0.9, "instantid": True, "instantid_weight": 0.7,
        "instantid_mode": "img2img", "face_detailer": True, "detailer_denoise": 0.35,
        "upscale": True, "upscale_model": "4x-UltraSharp.pth", "output_scale": 0.5,
        "pag": True, "pag_scale": 2.5,
    }  # fmt: skip
    out = call_node(
        CharpackPipeline,
        unique_id="12",
        character=character,
        prompt=PROMPT,
        negative=NEGATIVE,
        **widgets,
    )
    spec = PipelineSpec(
        character=character, prompt=PROMPT, negative=NEGATIVE,
        sampler=SamplerSpec(seed=1234, steps=12, cfg=5.5, sampler_name="euler",
                            scheduler="normal", width=768, height=1152),
        faceid=FaceIDSpec(weight=0.9), instantid=InstantIDSpec(weight=0.7, mode="img2img"),
        face_detailer=DetailerSpec(denoise=0.35), upscale=UpscaleSpec(output_scale=0.5),
        pag=PAGSpec(enabled=True, scale=2.5),
    )  # fmt: skip
    expected = build_pipeline(spec, prefix="12.", outputs=False)
    assert_same_graph(out.expand, expected.graph.finalize())
    assert out.args == (expected.image, 1234, parameters_text(spec))
    assert expected.image == ["12.upscale.resize", 0]
    # The whole pipeline's text is the one the orchestrator's graph gives its saver.
    assert "Seed: 1234" in out.args[2] and "Upscaler: 4x-UltraSharp" in out.args[2]
    assert all(node_id.startswith("12.") for node_id in out.expand)


def test_pipeline_macro_with_its_default_widgets_is_the_preset_pipeline(
    character: CharacterSpec,
) -> None:
    info = CharpackPipeline.GET_NODE_INFO_V1()["input"]["required"]
    defaults = {name: info[name][1]["default"] for name in CharpackPipeline.SETTINGS}
    out = call_node(
        CharpackPipeline, unique_id="3", character=character, prompt=PROMPT, negative="", **defaults
    )
    expected = build_pipeline(
        PipelineSpec(character=character, prompt=PROMPT), prefix="3.", outputs=False
    )
    assert_same_graph(out.expand, expected.graph.finalize())


def test_switched_off_stages_are_left_out_of_the_expansion(character: CharacterSpec) -> None:
    out = call_node(
        CharpackPipeline,
        unique_id="4",
        character=character,
        prompt=PROMPT,
        negative="",
        instantid=False,
        face_detailer=False,
        upscale=False,
        faceid=False,
    )
    kinds = {node["class_type"] for node in out.expand.values()}
    assert not kinds & {
        "InstantIDAttentionPatch",
        "FaceDetailer",
        "ImageUpscaleWithModel",
        "IPAdapterFaceID",
    }
    assert out.args[0] == ["4.base.decode", 0]
    assert "InstantID" not in out.args[2] and "Upscaler" not in out.args[2]


STAGE_CASES = [
    (CharpackBase, "base", {**SAMPLING, "steps": 9, "width": 640, "height": 960,
                            "faceid": True, "faceid_weight": 1.1, "pag": True, "pag_scale": 2.0},
     {"sampler": SamplerSpec(seed=1234, steps=9, cfg=5.5, sampler_name="euler",
                             scheduler="normal", width=640, height=960),
      "faceid": FaceIDSpec(weight=1.1), "pag": PAGSpec(enabled=True, scale=2.0)}),
    (CharpackInstantIDFix, "instantid",
     {**SAMPLING, "instantid_weight": 0.8, "instantid_mode": "detailer", "instantid_steps": 14},
     {"sampler": SamplerSpec(seed=1234, cfg=5.5, sampler_name="euler", scheduler="normal"),
      "instantid": InstantIDSpec(weight=0.8, steps=14)}),
    (CharpackFaceDetailer, "face_detailer",
     {**SAMPLING, "faceid": False, "faceid_weight": 0.8, "detailer_denoise": 0.3,
      "detailer_steps": 16},
     {"sampler": SamplerSpec(seed=1234, cfg=5.5, sampler_name="euler", scheduler="normal"),
      "faceid": FaceIDSpec(enabled=False), "face_detailer": DetailerSpec(denoise=0.3, steps=16)}),
    (CharpackUpscale, "upscale", {"upscale_model": "4x-UltraSharp.pth", "output_scale": 0.75},
     {"upscale": UpscaleSpec(output_scale=0.75)}),
]  # fmt: skip


NOT_RUN = {
    "base": {"instantid": InstantIDSpec(enabled=False),
             "face_detailer": DetailerSpec(enabled=False), "upscale": UpscaleSpec(enabled=False)},
    "instantid": {"faceid": FaceIDSpec(enabled=False),
                  "face_detailer": DetailerSpec(enabled=False),
                  "upscale": UpscaleSpec(enabled=False)},
    "face_detailer": {"instantid": InstantIDSpec(enabled=False),
                      "upscale": UpscaleSpec(enabled=False)},
}  # fmt: skip


@pytest.mark.parametrize(
    ("node", "stage", "widgets", "parts"), STAGE_CASES, ids=[case[1] for case in STAGE_CASES]
)
def test_stage_macro_expands_into_build_stage_with_the_live_image(
    character: CharacterSpec,
    node: Any,
    stage: str,
    widgets: dict[str, Any],
    parts: dict[str, Any],
) -> None:
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(7))
    inputs: dict[str, Any] = dict(widgets)
    if node.USES_CHARACTER:
        inputs.update(character=character, prompt=PROMPT, negative=NEGATIVE)
        spec = PipelineSpec(character=character, prompt=PROMPT, negative=NEGATIVE, **parts)
    else:
        spec = PipelineSpec(**parts)
    if stage != "base":
        inputs["image"] = image
    out = call_node(node, unique_id="7", **inputs)
    expected = build_stage(
        stage, spec, image=image if stage != "base" else None, prefix="7.", outputs=False
    )
    assert_same_graph(out.expand, expected.graph.finalize())
    if node is CharpackUpscale:  # samples nothing: no seed, no parameters
        assert out.args == (expected.image,)
    else:  # the parameters text tells what this node ran, not the stages it left out
        ran = replace(spec, **NOT_RUN[stage])
        assert out.args == (expected.image, 1234, parameters_text(ran))
    if stage != "base":  # the upstream picture itself sits in the subgraph, no loader
        live = [
            v
            for n in out.expand.values()
            for v in n["inputs"].values()
            if isinstance(v, torch.Tensor)
        ]
        assert live and all(torch.equal(v, image) for v in live)
        assert "7.input.image" not in out.expand


def test_sampling_macros_output_image_seed_and_parameters_and_upscale_only_the_image() -> None:
    for node in (CharpackPipeline, CharpackBase, CharpackInstantIDFix, CharpackFaceDetailer):
        info = node.GET_NODE_INFO_V1()
        assert info["output"] == ["IMAGE", "INT", "STRING"], node.NODE
        assert info["output_name"] == ["image", "seed", "parameters"], node.NODE
    info = CharpackUpscale.GET_NODE_INFO_V1()
    assert info["output"] == ["IMAGE"] and info["output_name"] == ["image"]


def test_two_macros_in_one_prompt_never_share_node_ids(character: CharacterSpec) -> None:
    first = call_node(CharpackBase, unique_id="5", character=character, prompt=PROMPT, negative="")
    second = call_node(CharpackBase, unique_id="6", character=character, prompt=PROMPT, negative="")
    assert not set(first.expand) & set(second.expand)
    assert {i.split(".", 1)[1] for i in first.expand} == {i.split(".", 1)[1] for i in second.expand}


def test_the_macros_choices_are_lists_comfyui_checks_itself() -> None:
    # A combo whose type is its list is refused by ComfyUI before anything runs, once and under
    # its input; a V3 "COMBO" is not checked, and a validate_inputs error is filed under every
    # argument of the method (tests/server/test_character_validation.py sees both).
    for macro in (CharpackPipeline, CharpackFaceDetailer):
        info = macro.GET_NODE_INFO_V1()["input"]["required"]
        assert info["sampler_name"][0] == list(params.SAMPLER_NAMES)
        assert info["scheduler"][0] == list(params.SCHEDULERS)
        own = [k for k in macro.__mro__ if k.__module__.startswith("charpack_nodes")]
        assert not any("validate_inputs" in vars(k) for k in own)
    pipeline = CharpackPipeline.GET_NODE_INFO_V1()["input"]["required"]
    assert pipeline["instantid_mode"][0] == list(params.INSTANTID_MODES)


def test_an_out_of_range_value_that_reaches_a_macro_names_node_and_input(
    character: CharacterSpec,
) -> None:
    # ComfyUI refuses it first from the widget's min/max; a value computed by another node
    # (a converted widget) reaches execute, which says the same.
    with pytest.raises(ValueError) as caught:
        call_node(CharpackBase, unique_id="2", character=character, prompt="", negative="", steps=0)
    assert str(caught.value) == (
        "CharpackBase: steps: must be between 1 and 200, got 0; change that input"
    )
    # The error names the input as the node shows it, not as a pack file spells the field.
    with pytest.raises(ValueError) as caught:
        call_node(
            CharpackBase,
            unique_id="3",
            character=character,
            prompt="",
            negative="",
            faceid_weight=3.5,
        )
    assert str(caught.value) == (
        "CharpackBase: faceid_weight: must be between 0 and 3, got 3.5; change that input"
    )


def test_the_upscale_model_choice_lists_the_files_the_server_has(comfy_dirs: ComfyDirs) -> None:
    info = CharpackUpscale.GET_NODE_INFO_V1()["input"]["required"]["upscale_model"]
    assert isinstance(info[0], list) and "4x-UltraSharp.pth" in info[0]


def test_a_macro_without_a_character_node_says_what_to_connect() -> None:
    with pytest.raises(
        ValueError,
        match="CharpackBase: the character input must come from a Character \\(charpack\\) node",
    ):
        call_node(CharpackBase, unique_id="1", character="ava", prompt="", negative="")
