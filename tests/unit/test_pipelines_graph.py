"""The graph builder: GraphBuilder's surface, stable ids, and catalogue-checked inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from charpack_nodes.pipelines import Graph, GraphError, is_link


def test_pipelines_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, charpack_nodes.pipelines as p\n"
        "p.build_pipeline(p.PipelineSpec(prompt='x')).graph.finalize()\n"
        "heavy = {'torch', 'comfy', 'requests', 'numpy', 'PIL', 'yaml', 'pydantic'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_node_out_and_finalize_follow_graphbuilder() -> None:
    g = Graph()
    a = g.node("EmptyLatentImage", "lat", width=64, height=64, batch_size=1)
    b = g.node("SomeCustomNode", image=a.out(0), strength=0.5)
    assert a.out(0) == ["lat", 0] and is_link(a.out(0))
    assert b.id == "1"  # generated ids count up when none is given
    assert g.finalize() == {
        "lat": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "1": {"class_type": "SomeCustomNode", "inputs": {"image": ["lat", 0], "strength": 0.5}},
    }


def test_prefix_is_applied_to_ids_and_links() -> None:
    g = Graph(prefix="12.")
    a = g.node("EmptyLatentImage", "lat", width=64, height=64, batch_size=1)
    assert a.out(0) == ["12.lat", 0]
    assert list(g.finalize()) == ["12.lat"]


def test_same_id_same_inputs_is_reused_but_a_clash_is_refused() -> None:
    g = Graph()
    first = g.node("LoadImage", "ref.face", image="a.png")
    assert g.node("LoadImage", "ref.face", image="a.png") is first
    with pytest.raises(GraphError, match="ref.face.*already used"):
        g.node("LoadImage", "ref.face", image="b.png")


def test_catalogued_node_refuses_unknown_and_missing_inputs() -> None:
    g = Graph()
    with pytest.raises(GraphError, match="no input named 'strenght'"):
        g.node("PerturbedAttentionGuidance", "pag", model=["m", 0], scale=3.0, strenght=1)
    with pytest.raises(GraphError, match="missing 'noise_mask_feather'"):
        g.node(
            "FaceDetailer",
            "fd",
            **{
                name: 1
                for name in (
                    "image model clip vae guide_size guide_size_for max_size seed steps cfg "
                    "sampler_name scheduler positive negative denoise feather noise_mask "
                    "force_inpaint bbox_threshold bbox_dilation bbox_crop_factor "
                    "sam_detection_hint sam_dilation sam_threshold sam_bbox_expansion "
                    "sam_mask_hint_threshold sam_mask_hint_use_negative drop_size bbox_detector "
                    "wildcard cycle inpaint_model tiled_encode tiled_decode"
                ).split()
            },
        )


def test_output_index_is_checked_for_catalogued_types() -> None:
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", "ckpt", ckpt_name="x.safetensors")
    assert ckpt.out(2) == ["ckpt", 2]
    with pytest.raises(GraphError, match="has 3 outputs"):
        ckpt.out(3)


def test_finalize_returns_a_copy() -> None:
    g = Graph()
    g.node("LoadImage", "ref", image="a.png")
    out = g.finalize()
    out["ref"]["inputs"]["image"] = "changed.png"
    assert g.finalize()["ref"]["inputs"]["image"] == "a.png"
