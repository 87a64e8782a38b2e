"""charpack's workflows in the real editor: every preset survives loading and exporting, and a
PNG saved by the pack saver, dropped onto the canvas, brings back the graph that made it.

The API workflows go in as a user opens them (``app.loadApiJson``, what opening an API ``.json``
does) and come out through ``app.graphToPrompt()``, which is what Run sends: before the InstantID
``noise`` preset was made representable the editor turned 0.35 into 0.3 here. The UI workflows
(``workflows/ui/``) go in through ``app.loadGraphData`` and must give exactly their API twin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.editor import Editor
from tests.browser.graphs import build, character_chain
from tests.browser.test_editor_run import history, pack_file
from tests.comfy.install import REPO
from tests.comfy.server import ComfyServer

API = sorted((REPO / "workflows" / "api").glob("*.json"))
UI = sorted((REPO / "workflows" / "ui").glob("*.json"))


def same_inputs(exported: dict[str, Any], original: dict[str, Any]) -> list[str]:
    """Every difference between two API graphs, node by node and input by input."""
    problems = []
    if sorted(exported) != sorted(original):
        problems.append(f"node ids differ: {sorted(set(exported) ^ set(original))}")
    for node_id, node in original.items():
        got = exported.get(node_id)
        if got is None:
            continue
        if got["class_type"] != node["class_type"]:
            problems.append(f"{node_id}: {got['class_type']} != {node['class_type']}")
        for name in sorted(set(node["inputs"]) | set(got["inputs"])):
            want, have = node["inputs"].get(name), got["inputs"].get(name)
            if have != want:
                problems.append(f"{node_id}.{name}: editor {have!r}, file {want!r}")
    return problems


def by_charpack_id(editor: Editor, exported: dict[str, Any]) -> dict[str, Any]:
    """The editor's export with its node numbers replaced by charpack's stable ids, which each
    node of a charpack UI workflow keeps in ``properties.charpack_id``, links included."""
    ids = editor.js(
        """() => Object.fromEntries(app.graph._nodes.map(n =>
             [String(n.id), n.properties && n.properties.charpack_id]))"""
    )
    renamed = {}
    for number, node in exported.items():
        inputs = {
            k: [ids[str(v[0])], v[1]] if isinstance(v, list) and len(v) == 2 else v
            for k, v in node["inputs"].items()
        }
        renamed[ids[number]] = {"class_type": node["class_type"], "inputs": inputs}
    return renamed


@pytest.mark.parametrize("path", API, ids=[p.name for p in API])
def test_every_api_workflow_survives_the_editor_input_by_input(editor: Editor, path: Path) -> None:
    original = json.loads(path.read_text())
    editor.load_api(original, path.name)
    exported = editor.to_prompt()["output"]
    assert same_inputs(exported, original) == []


@pytest.mark.parametrize("path", UI, ids=[p.name for p in UI])
def test_every_ui_workflow_gives_exactly_its_api_twin(editor: Editor, path: Path) -> None:
    twin = json.loads((REPO / "workflows" / "api" / path.name).read_text())
    editor.load_ui(json.loads(path.read_text()))
    renamed = by_charpack_id(editor, editor.to_prompt()["output"])
    assert same_inputs(renamed, twin) == []
    assert editor.errors() == []


def test_a_saved_png_dropped_on_the_canvas_reloads_the_graph_that_made_it(
    editor: Editor, editor_server: ComfyServer, artefacts: Path
) -> None:
    editor.clear()
    ids = build(editor, *character_chain(name="dropped", width=256, height=384, seed=21))
    made = editor.to_prompt()["workflow"]
    done = editor.queue()
    png = pack_file(
        editor_server, history(editor_server, done["prompt_id"])["outputs"][ids["save"]]
    )
    sent = history(editor_server, done["prompt_id"])["prompt"][2]

    editor.clear()
    assert editor.node_ids() == []
    editor.drop_file(png, "image/png")
    editor.page.wait_for_function("() => app.graph._nodes.length > 0")
    reloaded = editor.serialize()
    assert sorted(n["type"] for n in reloaded["nodes"]) == sorted(n["type"] for n in made["nodes"])
    assert len(reloaded["links"]) == len(made["links"])
    # Queued again as reloaded, it is the prompt that made the picture (seed included).
    again = editor.to_prompt()["output"]
    assert {k: v["inputs"] for k, v in again.items()} == {k: v["inputs"] for k, v in sent.items()}
    editor.screenshot(artefacts / "png-dropped.png")
