"""The full graph carries the tested presets; every stage can be switched; optional stages wire
in where the design says."""

from __future__ import annotations

from typing import Any

import pytest

from charpack_nodes.pipelines import (
    CharacterSpec,
    DetailerSpec,
    FaceIDSpec,
    Img2ImgSpec,
    InstantIDSpec,
    PAGSpec,
    ParameterError,
    PipelineSpec,
    PoseSpec,
    SamplerSpec,
    UpscaleSpec,
    build_pipeline,
    build_stage,
    evolve,
)

Graph = dict[str, Any]


def full(**changes: Any) -> Graph:
    return build_pipeline(
        evolve(PipelineSpec(prompt="linen shirt, street cafe"), **changes)
    ).graph.finalize()


def of_type(graph: Graph, class_type: str) -> list[dict[str, Any]]:
    return [n["inputs"] for n in graph.values() if n["class_type"] == class_type]


def test_full_graph_carries_the_presets() -> None:
    g = full()
    assert g["base.ckpt"]["inputs"]["ckpt_name"] == "bigLoveXL.safetensors"
    lora = g["base.lora"]["inputs"]
    assert (lora["strength_model"], lora["strength_clip"]) == (0.7, 0.7)
    sampler = g["base.sampler"]["inputs"]
    assert sampler["cfg"] == 4.0 and sampler["denoise"] == 1.0
    assert (g["base.latent"]["inputs"]["width"], g["base.latent"]["inputs"]["height"]) == (
        832,
        1216,
    )
    assert len(of_type(g, "IPAdapterFaceID")) == 1  # one FaceID, no style adapter
    assert of_type(g, "IPAdapterUnifiedLoaderFaceID")[0]["preset"] == "FACEID PLUS V2"
    assert g["instantid.patch"]["inputs"]["weight"] == 0.85
    detail = g["detail.run"]["inputs"]
    assert detail["denoise"] == 0.4
    assert g["detect.bbox"]["inputs"]["model_name"] == "bbox/face_yolov8m.pt"
    assert g["detect.sam"]["inputs"]["model_name"] == "sam_vit_b_01ec64.pth"
    assert g["upscale.model"]["inputs"]["model_name"] == "4x-UltraSharp.pth"
    assert not of_type(g, "ImageSharpen")


def test_stages_chain_in_order() -> None:
    g = full()
    assert g["instantid.detailer"]["inputs"]["image"] == ["base.decode", 0]
    assert g["detail.run"]["inputs"]["image"] == ["instantid.detailer", 0]
    assert g["upscale.run"]["inputs"]["image"] == ["detail.run", 0]
    assert g["save.run"]["inputs"]["images"] == ["upscale.run", 0]
    assert g["save.run"]["inputs"]["score"] == ["score.run", 1]
    # The face detailer keeps identity with the FaceID-patched model; InstantID patches the
    # LoRA'd model with identity attention only (no ControlNet hint to misplace).
    assert g["detail.run"]["inputs"]["model"] == ["faceid.apply", 0]
    assert g["instantid.patch"]["inputs"]["model"] == ["base.lora", 0]
    assert g["instantid.detailer"]["inputs"]["model"] == ["instantid.patch", 0]


def test_face_detailer_sends_every_widget_explicitly() -> None:
    for inputs in of_type(full(), "FaceDetailer"):
        assert inputs["noise_mask_feather"] == 20  # 0 when omitted from an API prompt
        assert inputs["inpaint_model"] is False
        assert "segm_detector_opt" not in inputs  # ignored whenever SAM is connected
        assert inputs["sam_model_opt"] == ["detect.sam", 0]


@pytest.mark.parametrize(
    ("change", "gone"),
    [
        ({"faceid": FaceIDSpec(enabled=False)}, {"faceid.loader", "faceid.apply"}),
        ({"instantid": InstantIDSpec(enabled=False)}, {"instantid.patch", "instantid.detailer"}),
        ({"face_detailer": DetailerSpec(enabled=False)}, {"detail.run"}),
        ({"upscale": UpscaleSpec(enabled=False)}, {"upscale.model", "upscale.run"}),
    ],
    ids=["faceid", "instantid", "face_detailer", "upscale"],
)
def test_every_stage_can_be_switched_off(change: dict[str, Any], gone: set[str]) -> None:
    g = full(**change)
    assert gone.isdisjoint(g)
    assert "base.sampler" in g and "save.run" in g


def test_everything_off_leaves_base_generation_and_save() -> None:
    g = full(
        faceid=FaceIDSpec(enabled=False),
        instantid=InstantIDSpec(enabled=False),
        face_detailer=DetailerSpec(enabled=False),
        upscale=UpscaleSpec(enabled=False),
    )
    assert g["base.sampler"]["inputs"]["model"] == ["base.lora", 0]
    assert g["save.run"]["inputs"]["images"] == ["base.decode", 0]
    assert not of_type(g, "FaceDetailer")


def test_instantid_img2img_mode_keys_keypoints_to_the_generated_image() -> None:
    g = full(instantid=InstantIDSpec(mode="img2img"))
    apply = g["instantid.apply"]["inputs"]
    assert apply["weight"] == 0.85
    assert apply["image_kps"] == ["base.decode", 0]  # not the reference: no re-posing
    assert apply["image"] == ["ref.face", 0]
    assert g["instantid.sampler"]["inputs"]["denoise"] == 0.4
    assert g["instantid.sampler"]["inputs"]["positive"] == ["instantid.apply", 1]


def test_optional_stages_wire_in() -> None:
    g = full(
        pag=PAGSpec(enabled=True, scale=2.5),
        img2img=Img2ImgSpec("init.png", denoise=0.55),
        pose=PoseSpec("pose.png"),
    )
    assert g["pag.apply"]["inputs"] == {"model": ["faceid.apply", 0], "scale": 2.5}
    assert g["base.sampler"]["inputs"]["model"] == ["pag.apply", 0]
    assert g["base.sampler"]["inputs"]["latent_image"] == ["init.encode", 0]
    assert g["base.sampler"]["inputs"]["denoise"] == 0.55
    assert g["init.scale"]["inputs"]["width"] == 832
    assert "base.latent" not in g
    assert g["base.sampler"]["inputs"]["positive"] == ["pose.apply", 0]
    assert g["pose.apply"]["inputs"]["image"] == ["pose.canny", 0]
    # the pose hint reaches the base sampler only, never a detailer crop
    assert g["detail.run"]["inputs"]["positive"] == ["base.pos", 0]


def test_character_parts_compose_the_prompts() -> None:
    spec = PipelineSpec(
        character=CharacterSpec(
            trigger="ava_cp woman",
            attributes=(("hair", "auburn hair"), ("eyes", "green eyes")),
            prompt_prefix="RAW photo",
            prompt_suffix="85mm lens",
            negative="blurry",
        ),
        prompt="walking in a park, trench coat",
        negative="hat",
    )
    g = build_pipeline(spec).graph.finalize()
    assert g["base.pos"]["inputs"]["text"] == (
        "RAW photo, ava_cp woman, auburn hair, green eyes, walking in a park, trench coat, "
        "85mm lens"
    )
    assert g["base.neg"]["inputs"]["text"] == "blurry, hat"
    assert "Negative prompt: blurry, hat" in g["save.run"]["inputs"]["parameters"]


def test_several_face_references_are_batched() -> None:
    spec = PipelineSpec(character=CharacterSpec(face_images=("a.png", "b.png", "c.png")))
    g = build_pipeline(spec).graph.finalize()
    assert g["ref.batch3"]["inputs"] == {"image1": ["ref.batch2", 0], "image2": ["ref.face3", 0]}
    assert g["faceid.apply"]["inputs"]["image"] == ["ref.batch3", 0]
    assert g["score.run"]["inputs"]["reference"] == ["ref.batch3", 0]


def test_stage_alone_works_on_a_given_image_or_an_input_file() -> None:
    alone = build_stage("upscale", PipelineSpec()).graph.finalize()
    assert alone["upscale.run"]["inputs"]["image"] == ["input.image", 0]
    live = object()  # node expansion hands live values, not links
    built = build_stage("face_detailer", PipelineSpec(), image=live, prefix="7.", outputs=False)
    g = built.graph.finalize()
    assert g["7.detail.run"]["inputs"]["image"] is not None
    assert built.image == ["7.detail.run", 0]
    assert not any(n["class_type"] == "CharpackSavePack" for n in g.values())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SamplerSpec(cfg=0.5), "cfg: must be between 1 and 30, got 0.5"),
        (lambda: SamplerSpec(width=833), "width: must be a multiple of 8, got 833"),
        (lambda: SamplerSpec(seed=-1), "seed: must be between 0 and"),
        (lambda: DetailerSpec(denoise=0), "face_detailer.denoise: must be between 0.01 and 1"),
        (lambda: InstantIDSpec(weight=4), "instantid.weight: must be between 0 and 3, got 4"),
        (lambda: FaceIDSpec(start_at=0.5, end_at=0.5), "faceid.end_at: must be greater"),
        (lambda: PoseSpec("p.png", preprocess="depth"), "pose.preprocess: must be one of"),
        (lambda: UpscaleSpec(output_scale=2), "upscale.output_scale: must be between 0.25"),
        (lambda: CharacterSpec(face_images=()), "character.face_images: needs at least one"),
    ],
)
def test_parameter_types_check_their_ranges(make: Any, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        make()
    assert str(info.value).startswith(message)
