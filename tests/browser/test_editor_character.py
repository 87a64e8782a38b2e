"""The Character node as an editor user meets it: an upload button for each face input, and a
missing face file reported once, under its own input, before anything runs."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from tests.browser.editor import Editor
from tests.browser.graphs import build, character_chain
from tests.comfy.install import REPO

FACE_INPUTS = ("face_image", "face_image_2")
PICTURE = REPO / "examples" / "faces" / "ava_three_quarter.png"


def test_each_face_input_has_its_own_upload_button(editor: Editor, tmp_path: Path) -> None:
    editor.clear()
    ids = build(editor, {"character": ("CharpackCharacter", {})}, [])
    node = ids["character"]
    buttons = editor.js(
        """(id) => app.graph.getNodeById(id).widgets
             .map((w, i) => [i, w.type]).filter(([i, t]) => t === 'button').map(([i]) => i)""",
        node,
    )
    assert len(buttons) == len(FACE_INPUTS), buttons
    filled = []
    for index in buttons:
        name = f"upload-{uuid.uuid4().hex[:8]}.png"
        shutil.copyfile(PICTURE, tmp_path / name)
        with editor.page.expect_file_chooser() as chooser:
            editor.js(
                """([id, i]) => { const n = app.graph.getNodeById(id); const w = n.widgets[i];
                     w.callback(w, app.canvas, n); }""",
                [node, index],
            )
        chooser.value.set_files(str(tmp_path / name))
        editor.page.wait_for_function(
            """([id, names, value]) => app.graph.getNodeById(id).widgets
                 .some(w => names.includes(w.name) && w.value === value)""",
            arg=[node, list(FACE_INPUTS), name],
        )
        values = editor.js(
            "(id) => Object.fromEntries(app.graph.getNodeById(id).widgets"
            ".map(w => [w.name, w.value]))",
            node,
        )
        filled += [k for k in FACE_INPUTS if values[k] == name]
    # Every button filled a different face input: both can be uploaded from the node.
    assert sorted(filled) == sorted(FACE_INPUTS)


def test_a_missing_face_file_is_reported_once_under_its_own_input(editor: Editor) -> None:
    editor.clear()
    # Only what every version of the nodes has: the report is what is tested.
    nodes, _ = character_chain(name="missing-face", width=256, height=384)
    del nodes["score"]
    links = [
        ("character", "character", "pipeline", "character"),
        ("pipeline", "image", "save", "images"),
    ]
    ids = build(editor, nodes, links)
    editor.js(
        """(id) => { const w = app.graph.getNodeById(id).widgets
             .find(w => w.name === 'face_image'); w.value = 'not-uploaded.png'; }""",
        ids["character"],
    )
    editor.js("() => app.extensionManager.command.execute('Comfy.QueuePrompt')")
    editor.page.wait_for_function(
        "() => app.lastNodeErrors && Object.keys(app.lastNodeErrors).length"
    )
    errors = editor.js("() => JSON.parse(JSON.stringify(app.lastNodeErrors))")
    assert list(errors) == [ids["character"]], errors
    reported = errors[ids["character"]]["errors"]
    assert len(reported) == 1, reported
    assert reported[0]["extra_info"]["input_name"] == "face_image"
    assert "not-uploaded.png" in reported[0]["details"]
