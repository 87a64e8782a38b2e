"""Workflows to start from: the node pack's ``example_workflows/`` in the editor's templates
browser, each loading and running, and each ``workflows/ui/`` file running as loaded.

ComfyUI lists a custom-node folder's ``example_workflows/*.json`` at ``/api/workflow_templates``
and serves them under ``/api/workflow_templates/<folder>/`` (graph-editor.md §10); the editor's
Templates dialog shows them under the pack's name. A run is queued from the editor exactly as
loaded: presets and all.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from charpack.check.ui_workflows import resolve_primitives, to_api
from charpack.comfy.objectinfo import ObjectInfo
from tests.browser.editor import Editor
from tests.browser.test_editor_workflows import by_charpack_id, same_inputs
from tests.comfy.install import REPO
from tests.comfy.server import ComfyServer

PACK = "charpack_nodes"
EXAMPLES = sorted((REPO / "custom_nodes" / PACK / "example_workflows").glob("*.json"))
UI = sorted((REPO / "workflows" / "ui").glob("*.json"))


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def test_the_examples_are_in_the_templates_browser_with_their_pictures(
    editor: Editor, editor_server: ComfyServer, artefacts: Path
) -> None:
    assert EXAMPLES, "custom_nodes/charpack_nodes/example_workflows/ holds no workflow"
    listed = get_json(editor_server.url + "/api/workflow_templates")
    assert isinstance(listed, dict)
    assert sorted(listed[PACK]) == sorted(p.stem for p in EXAMPLES)
    for path in EXAMPLES:
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no preview picture"

    editor.js("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = editor.page.locator(".p-dialog").first
    dialog.wait_for()
    dialog.get_by_text(PACK, exact=False).first.click()
    for path in EXAMPLES:
        dialog.get_by_text(path.stem, exact=False).first.wait_for()
    # One card per example, each showing its picture (loaded, not broken).
    editor.page.wait_for_function(
        """(n) => { const imgs = [...document.querySelectorAll('.p-dialog img')];
            return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=len(EXAMPLES),
    )
    editor.screenshot(artefacts / "templates-browser.png")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_loads_from_the_templates_folder_and_runs(
    editor: Editor, editor_server: ComfyServer, artefacts: Path, path: Path
) -> None:
    served = get_json(f"{editor_server.url}/api/workflow_templates/{PACK}/{path.name}")
    assert served == json.loads(path.read_text())
    editor.clear()
    editor.load_ui(served)  # type: ignore[arg-type]
    # What Run will send is exactly the graph the file describes (charpack's own reading of it).
    expected = resolve_primitives(to_api(served, ObjectInfo.recorded()))  # type: ignore[arg-type]
    assert same_inputs(by_charpack_id(editor, editor.to_prompt()["output"]), expected) == []
    done = editor.queue()
    assert any(e["type"] == "execution_success" for e in done["events"])
    editor.screenshot(artefacts / f"example-{path.stem}.png", node_ids=editor.node_ids())
    assert editor.errors() == []


@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_each_ui_workflow_runs_as_loaded(editor: Editor, path: Path) -> None:
    editor.clear()
    editor.load_ui(json.loads(path.read_text()))
    done = editor.queue()
    assert any(e["type"] == "execution_success" for e in done["events"])
