"""Static validation against the recorded object_info finds what /prompt would reject."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from charpack.check.validate import validate_graph
from charpack.comfy.objectinfo import ObjectInfo
from charpack_nodes.pipelines import (
    STAGES,
    Img2ImgSpec,
    InstantIDSpec,
    PAGSpec,
    PipelineSpec,
    PoseSpec,
    build_pipeline,
    build_stage,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return ObjectInfo.recorded()


def full_graph() -> dict[str, Any]:
    return build_pipeline(PipelineSpec(prompt="x")).graph.finalize()


def test_full_pipeline_has_zero_findings(info: ObjectInfo) -> None:
    assert validate_graph(full_graph(), info) == []
    every_option = PipelineSpec(
        prompt="x",
        pag=PAGSpec(enabled=True),
        img2img=Img2ImgSpec("init.png"),
        pose=PoseSpec("pose.png"),
        instantid=InstantIDSpec(mode="img2img"),
    )
    assert validate_graph(build_pipeline(every_option).graph.finalize(), info) == []
    for stage in STAGES:
        assert validate_graph(build_stage(stage, PipelineSpec()).graph.finalize(), info) == []


def test_committed_full_workflow_has_zero_findings(info: ObjectInfo) -> None:
    graph = json.loads((REPO / "workflows" / "api" / "full.json").read_text())
    assert validate_graph(graph, info) == []


def broken(path: str, value: Any) -> dict[str, Any]:
    g = copy.deepcopy(full_graph())
    node_id, _, name = path.partition(":")
    if name:
        g[node_id]["inputs"][name] = value
    else:
        g[node_id] = value
    return g


@pytest.mark.parametrize(
    ("graph", "finding"),
    [
        (
            broken("base.sampler:cfg", 120.0),
            "base.sampler (KSampler): cfg: 120.0 is above the maximum 100.0 — lower it",
        ),
        (
            broken("base.latent:width", 8),
            "base.latent (EmptyLatentImage): width: 8 is below the minimum 16 — raise it",
        ),
        (
            broken("base.sampler:scheduler", "fastest"),
            "base.sampler (KSampler): scheduler: 'fastest' is not one of: simple, sgm_uniform, "
            "karras, exponential, ddim_uniform, beta, normal, linear_quadratic, kl_optimal",
        ),
        (
            broken("detail.run:noise_mask", "yes"),
            "detail.run (FaceDetailer): noise_mask: must be true or false, got 'yes'",
        ),
        (
            broken("base.sampler:steps", 2.5),
            "base.sampler (KSampler): steps: must be a whole number, got 2.5",
        ),
        (
            broken("base.sampler:model", ["base.pos", 0]),
            "base.sampler (KSampler): input 'model' expects MODEL but base.pos (CLIPTextEncode) "
            "output 0 is CONDITIONING",
        ),
        (
            broken("base.decode:vae", ["base.ckpt", 5]),
            "base.decode (VAEDecode): input 'vae' links to output 5 of base.ckpt "
            "(CheckpointLoaderSimple), which has 3 outputs",
        ),
        (
            broken("base.decode:vae", ["gone", 0]),
            "base.decode (VAEDecode): input 'vae' links to node 'gone', which does not exist",
        ),
        (
            broken("pag.apply", {"class_type": "ImageSharpen", "inputs": {}}),
            "pag.apply (ImageSharpen): ImageSharpen is never used in charpack graphs — remove it",
        ),
        (
            broken("faceid.extra", {"class_type": "IPAdapterStyle", "inputs": {}}),
            "faceid.extra (IPAdapterStyle): node type not found in recorded object_info (ComfyUI "
            "0.3.75 + pinned packs) — install the node pack that provides it",
        ),
        (
            broken("upscale.run:scale", 2),
            "upscale.run (ImageUpscaleWithModel): unknown input 'scale' (ComfyUI would ignore "
            "it) — inputs are: upscale_model, image",
        ),
    ],
)
def test_broken_graph_gets_a_named_finding(
    info: ObjectInfo, graph: dict[str, Any], finding: str
) -> None:
    assert finding in [str(f) for f in validate_graph(graph, info)]


def test_missing_required_input_and_missing_output_node(info: ObjectInfo) -> None:
    g = full_graph()
    del g["base.sampler"]["inputs"]["seed"]
    del g["save.run"], g["score.run"]
    findings = [str(f) for f in validate_graph(g, info)]
    assert "base.sampler (KSampler): required input 'seed' is missing — add it" in findings
    assert findings[-1] == "graph has no output node — add a save node (CharpackSavePack)"


def test_v3_and_v1_combo_formats_are_both_understood(info: ObjectInfo) -> None:
    upscale = info.get("UpscaleModelLoader")  # V3: ["COMBO", {"options": []}]
    sampler = info.get("KSampler")  # V1: [[choices], {...}]
    assert upscale is not None and sampler is not None
    assert upscale.inputs["model_name"].type == "COMBO"
    assert "euler" in (sampler.inputs["sampler_name"].choices or ())


def test_a_pack_is_validated_from_representative_jobs_without_missing_a_finding(
    info: ObjectInfo, tmp_path: Path
) -> None:
    """validate_pack checks a few jobs per distinct scene shape; against an object_info where
    seeds above 1000 and a CFG above 5 are out of range, it finds every (node, input) that checking
    every job finds, and names the job with the largest seed."""
    from PIL import Image

    from charpack.check.validate import validate_pack
    from charpack.pack.jobs import expand
    from charpack.pack.packfile import load_pack

    raw = copy.deepcopy(info.raw)
    raw["KSampler"]["input"]["required"]["seed"][1]["max"] = 1000
    raw["KSampler"]["input"]["required"]["cfg"][1]["max"] = 5.0
    strict = ObjectInfo(raw, source="a strict server")
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "face.png")
    scenes = [
        {"name": "low", "prompt": "a", "seeds": [5, 6, 7]},
        {"name": "mixed", "prompt": "b", "seeds": [9, 4000, 12, 700]},
        {"name": "warm", "prompt": "c", "seeds": [3], "overrides": {"cfg": 6.0}},
        {"name": "many", "prompt": "d", "count": 40},  # derived seeds: all above 1000
    ]
    pack_file = tmp_path / "pack.yaml"
    pack_file.write_text(
        json.dumps(
            {"pack": "p", "character": {"name": "A", "face_references": ["face.png"]},
             "scenes": scenes}
        )
    )  # fmt: skip
    pack = load_pack(pack_file)
    every = {str(f) for job in expand(pack) for f in validate_graph(job.graph, strict)}
    total, found = validate_pack(pack, strict)
    findings = [str(f) for f in found]
    assert total == 48

    def where(finding: str) -> str:  # node and input, without the value
        return finding.split(": ")[0] + ": " + finding.split(": ")[1]

    picked = {f.split(": ", 1)[1] for f in findings}
    assert picked <= every
    assert {where(f) for f in picked} == {where(f) for f in every}
    # low, mixed and many differ only in prompt and seeds: one shape, whose largest seed speaks.
    top = max((j for j in expand(pack) if j.scene != "warm"), key=lambda j: j.seed)
    assert top.scene == "many"
    assert (
        f"{top.key}: base.sampler (KSampler): seed: {top.seed} is above the maximum 1000 — lower it"
        in findings
    )
    assert "warm/001: base.sampler (KSampler): cfg: 6.0 is above the maximum 5.0 — lower it" in (
        findings
    )
    assert not any(f.startswith("low/") for f in findings)
