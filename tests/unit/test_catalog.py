"""The catalogue agrees with the recorded object_info: one spelling, and it is the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charpack.comfy.objectinfo import ObjectInfo
from charpack_nodes.pipelines import catalog

DATA = Path(__file__).resolve().parents[2] / "orchestrator" / "data" / "object_info"


def recorded_for(spec: catalog.NodeSpec) -> ObjectInfo:
    # Core types are checked against the live 0.3.75 dump, pack types against the transcription.
    if spec.pack == catalog.CORE:
        return ObjectInfo.from_files([DATA / "core-0.3.75.json"])
    if spec.pack == catalog.CHARPACK:
        return ObjectInfo.from_files([DATA / "charpack.json"])
    return ObjectInfo.from_files([DATA / "third_party.json"])


@pytest.mark.parametrize("spec", catalog.ALL, ids=[s.class_type for s in catalog.ALL])
def test_catalogue_entry_matches_recorded_object_info(spec: catalog.NodeSpec) -> None:
    info = recorded_for(spec).get(spec.class_type)
    assert info is not None, f"{spec.class_type} is not in the recorded object_info"
    required = [n for n, i in info.inputs.items() if i.required]
    assert list(spec.required) == required
    for name in spec.optional_widgets:
        assert name in info.inputs and not info.inputs[name].required
        assert info.inputs[name].is_widget, f"{name} is a link, not a widget"
    for name in spec.optional_links:
        assert name in info.inputs and not info.inputs[name].required
        assert not info.inputs[name].is_widget, f"{name} is a widget, not a link"
    optional = [n for n, i in info.inputs.items() if not i.required]
    assert sorted(spec.optional_widgets + spec.optional_links) == sorted(optional)
    assert [t for _n, t in spec.outputs] == list(info.outputs)
    assert [n for n, _t in spec.outputs] == list(info.output_names)
    assert spec.output_node == info.output_node


def test_every_type_the_builders_emit_is_catalogued() -> None:
    from charpack_nodes.pipelines import (
        Img2ImgSpec,
        InstantIDSpec,
        PAGSpec,
        PipelineSpec,
        PoseSpec,
        UpscaleSpec,
        build_pipeline,
    )

    specs = [
        PipelineSpec(prompt="x"),
        PipelineSpec(
            prompt="x",
            pag=PAGSpec(enabled=True),
            img2img=Img2ImgSpec("init.png"),
            pose=PoseSpec("pose.png"),
            instantid=InstantIDSpec(mode="img2img"),
            upscale=UpscaleSpec(output_scale=0.5),
        ),
    ]
    emitted = {
        node["class_type"] for s in specs for node in build_pipeline(s).graph.finalize().values()
    }
    assert emitted <= {s.class_type for s in catalog.ALL}
    assert not emitted & catalog.FORBIDDEN


def test_charpack_recording_is_valid_json_with_both_scoring_and_saving_nodes() -> None:
    data = json.loads((DATA / "charpack.json").read_text())
    assert {"CharpackIdentityScore", "CharpackSavePack"} <= set(data)
