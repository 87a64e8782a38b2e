"""UI workflows (``workflows/ui/``, the node pack's ``example_workflows/``): generated, committed,
well formed, and equal to their API graphs.

The converter (``charpack.check.ui_workflows``) writes the editor's own format from the recorded
``/object_info``; whether the real editor reads each file back to its API twin is the browser
tier's test (tests/browser/test_editor_workflows.py). Here: the files are what the code
generates (``charpack workflows export --check``), every link and slot is consistent, the
frontend-only widget entries are where the frontend puts them, charpack's node ids are kept, and
reading the file the way ``graphToPrompt`` does gives back the API graph exactly (its literals on
socket-only inputs through core Primitive nodes).
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from charpack.check import node_examples, ui_workflows, workflows
from charpack.cli.main import app
from charpack.comfy.objectinfo import ObjectInfo

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "workflows" / "api"
UI_DIR = REPO / "workflows" / "ui"
EXAMPLES_DIR = REPO / "custom_nodes" / "charpack_nodes" / "example_workflows"
INFO = ObjectInfo.recorded()
runner = CliRunner()


def twins() -> dict[str, tuple[Path, dict[str, Any]]]:
    """UI file name -> (its path, the API graph it was made from)."""
    pairs = {
        f"ui/{p.name}": (p, json.loads((API_DIR / p.name).read_text()))
        for p in sorted(UI_DIR.glob("*.json"))
    }
    graphs = {"whole-pipeline.json": node_examples.whole_pipeline(workflows.EXAMPLE, INFO)}
    for stage in node_examples.STAGE_NODES:
        graphs[f"stage-{stage}.json"] = node_examples.stage_alone(stage, workflows.EXAMPLE, INFO)
    graphs["identity-test-5-shot.json"] = node_examples.identity_test(
        workflows.identity_test_specs(), INFO
    )
    for name, graph in graphs.items():
        pairs[f"examples/{name}"] = (EXAMPLES_DIR / name, graph)
    return pairs


TWINS = twins()


def export_args(api: Path, ui: Path, examples: Path) -> list[str]:
    return ["workflows", "export", "--dir", str(api), "--ui-dir", str(ui),
            "--examples-dir", str(examples)]  # fmt: skip


def test_the_committed_files_are_what_charpack_generates() -> None:
    result = runner.invoke(app, [*export_args(API_DIR, UI_DIR, EXAMPLES_DIR), "--check"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in UI_DIR.glob("*.json")) == sorted(
        p.name for p in API_DIR.glob("*.json")
    )
    assert len(list(EXAMPLES_DIR.glob("*.json"))) == 2 + len(node_examples.STAGE_NODES)


def test_check_reports_a_drifted_ui_file_and_export_repairs_it(tmp_path: Path) -> None:
    dirs = [tmp_path / "api", tmp_path / "ui", tmp_path / "examples"]
    for source, target in zip((API_DIR, UI_DIR, EXAMPLES_DIR), dirs, strict=True):
        shutil.copytree(source, target)
    drifted = json.loads((dirs[1] / "full.json").read_text())
    drifted["nodes"][0]["widgets_values"][0] = "other.safetensors"
    (dirs[1] / "full.json").write_text(json.dumps(drifted))
    (dirs[2] / "whole-pipeline.json").unlink()
    result = runner.invoke(app, [*export_args(*dirs), "--check"])
    assert result.exit_code == 1
    assert "ui/full.json: differs" in result.output
    assert "whole-pipeline.json: missing" in result.output
    assert runner.invoke(app, export_args(*dirs)).exit_code == 0
    assert runner.invoke(app, [*export_args(*dirs), "--check"]).exit_code == 0


def omitted_widgets(graph: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(node, input, recorded default) of each optional widget an API graph leaves out: the
    editor always sends it, so the file and the editor's prompt differ there."""
    missing = []
    for node_id, node in sorted(graph.items()):
        for spec in ui_workflows.ordered_inputs(INFO, node["class_type"]):
            if spec.is_widget and spec.name not in node["inputs"]:
                missing.append((node_id, spec.name, ui_workflows.default_of(spec)))
    return missing


@pytest.mark.parametrize("name", sorted(TWINS))
def test_reading_the_ui_file_like_the_editor_gives_its_api_graph(name: str) -> None:
    path, graph = TWINS[name]
    read = ui_workflows.to_api(json.loads(path.read_text()), INFO)
    assert ui_workflows.resolve_primitives(read) == graph


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_graph_sends_every_widget_the_editor_sends(name: str) -> None:
    """An optional widget left out of an API graph is one the editor's prompt adds (at the
    widget's default, which need not be the Python default the server applies)."""
    _path, graph = TWINS[name]
    assert omitted_widgets(graph) == []


def test_a_literal_on_a_socket_becomes_a_primitive_that_also_drives_equal_seeds() -> None:
    # A node whose seed and text are sockets only (forceInput), beside samplers' seed widgets.
    sink = {"input": {"required": {
        "seed": ["INT", {"forceInput": True}], "text": ["STRING", {"forceInput": True}],
    }}, "output": [], "output_name": [], "input_order": {"required": ["seed", "text"]}}  # fmt: skip
    info = ObjectInfo({**INFO.raw, "Sink": sink}, source="test")
    graph = json.loads((API_DIR / "full.json").read_text())
    seed = graph["base.sampler"]["inputs"]["seed"]
    graph["sink"] = {"class_type": "Sink", "inputs": {"seed": seed, "text": "a\nb"}}
    moved = ui_workflows.with_primitives(graph, info)
    assert moved["sink"]["inputs"] == {"seed": ["sink.seed", 0], "text": ["sink.text", 0]}
    assert moved["sink.seed"] == {"class_type": "PrimitiveInt", "inputs": {"value": seed}}
    assert moved["sink.text"]["class_type"] == "PrimitiveStringMultiline"
    fed = sorted(n for n, node in moved.items() if node["inputs"].get("seed") == ["sink.seed", 0])
    same = sorted(n for n, node in graph.items() if node["inputs"].get("seed") == seed)
    assert fed == same and len(fed) >= 4  # the sink, the base sampler and both detailers
    assert ui_workflows.resolve_primitives(moved) == graph
    workflow = ui_workflows.to_ui(graph, info, name="test")
    read = ui_workflows.resolve_primitives(
        ui_workflows.to_api(json.loads(json.dumps(workflow)), info)
    )
    samplers = [n for n in same if graph[n]["class_type"] in ("KSampler", "FaceDetailer", "Sink")]
    assert {n: read[n] for n in samplers} == {n: graph[n] for n in samplers}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_nodes_links_and_slots_are_consistent(name: str) -> None:
    path, graph = TWINS[name]
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert sorted(nodes) == list(range(1, len(graph) + 1)) == list(nodes)
    assert workflow["last_node_id"] == len(nodes)
    assert workflow["last_link_id"] == len(workflow["links"])
    assert sorted(n["properties"]["charpack_id"] for n in nodes.values()) == sorted(graph)
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        output = nodes[origin]["outputs"][origin_slot]
        slot = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and slot["link"] == link_id
        assert kind == output["type"] == slot["type"]
    linked = {s["link"] for n in nodes.values() for s in n["inputs"] if s["link"] is not None}
    assert linked == {link[0] for link in workflow["links"]}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_slots_and_widget_values_are_where_the_frontend_puts_them(name: str) -> None:
    path, _graph = TWINS[name]
    for node in json.loads(path.read_text())["nodes"]:
        specs = ui_workflows.ordered_inputs(INFO, node["type"])
        sockets = [s.name for s in specs if not s.is_widget]
        widgets = [s.name for s in specs if s.is_widget]
        assert [s["name"] for s in node["inputs"]] == sockets + widgets
        assert all(("widget" in s) == (s["name"] in widgets) for s in node["inputs"])
        values = node["widgets_values"]
        for index, field in enumerate(ui_workflows.widget_names(specs)):
            if field is None:  # after a seed: its control_after_generate, fixed to reproduce
                assert values[index] == "fixed"
                assert ui_workflows.widget_names(specs)[index - 1] in ("seed", "noise_seed")
        if node["type"] == "LoadImage":
            assert values[-1] == "image"  # the upload button's entry, after the file combo
        assert node["properties"]["Node name for S&R"] == node["type"]


@pytest.mark.parametrize("name", sorted(TWINS))
def test_no_two_nodes_overlap_on_the_canvas(name: str) -> None:
    path, _graph = TWINS[name]
    boxes = [(*n["pos"], *n["size"]) for n in json.loads(path.read_text())["nodes"]]
    for (x1, y1, w1, h1), (x2, y2, w2, h2) in combinations(boxes, 2):
        assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


def test_the_whole_pipeline_example_chains_the_four_nodes() -> None:
    workflow = json.loads((EXAMPLES_DIR / "whole-pipeline.json").read_text())
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    edges = {(types[link[1]], types[link[3]]) for link in workflow["links"]}
    assert {
        (node_examples.CHARACTER, node_examples.PIPELINE),
        (node_examples.PIPELINE, node_examples.SCORE),
        (node_examples.SCORE, node_examples.SAVE),
    } <= edges


def test_the_identity_test_example_has_the_five_scenes_of_the_example_pack() -> None:
    workflow = json.loads((EXAMPLES_DIR / "identity-test-5-shot.json").read_text())
    graph = ui_workflows.to_api(workflow, INFO)
    saves = [n["inputs"] for n in graph.values() if n["class_type"] == node_examples.SAVE]
    assert {s["scene"] for s in saves} == {
        "portrait", "full-body", "profile", "dramatic-light", "expression"
    }  # fmt: skip
    pipelines = [n["inputs"] for n in graph.values() if n["class_type"] == node_examples.PIPELINE]
    assert sorted(p["seed"] for p in pipelines) == [101, 102, 103, 104, 105]
    characters = [n for n in graph.values() if n["class_type"] == node_examples.CHARACTER]
    assert len(characters) == 1  # one character for all five shots
