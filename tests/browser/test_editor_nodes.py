"""charpack's nodes as an editor user finds them: in the node library, with widgets, defaults and
tooltips exactly as the server defines them, and no console errors of the node pack."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.browser.editor import Editor
from tests.comfy.server import ComfyServer

PACK_MODULE = "custom_nodes.charpack_nodes"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def charpack_nodes(server: ComfyServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/object_info", timeout=30) as answer:
        info = json.load(answer)
    return {k: v for k, v in info.items() if v["python_module"] == PACK_MODULE}


def widget_inputs(node: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Inputs the editor shows as widgets: typed values and combos, not sockets."""
    shown = {}
    for section in ("required", "optional"):
        for name, spec in node["input"].get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 else {}
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if (is_combo or kind in WIDGET_TYPES) and not options.get("forceInput"):
                shown[name] = (kind, options)
    return shown


def test_every_node_is_in_the_library_with_the_servers_widgets_defaults_and_tooltips(
    editor: Editor, editor_server: ComfyServer, artefacts: Path
) -> None:
    nodes = charpack_nodes(editor_server)
    assert len(nodes) >= 8, sorted(nodes)
    seen = editor.js(
        """(types) => Object.fromEntries(types.map(type => {
            const n = LiteGraph.createNode(type);
            app.graph.add(n);
            const data = n.constructor.nodeData;
            return [type, {
              title: n.title, category: n.constructor.category,
              description: data.description,
              widgets: (n.widgets || []).map(w => ({name: w.name, value: w.value})),
              tooltips: Object.fromEntries(Object.entries(data.inputs || {})
                .map(([k, v]) => [k, v.tooltip ?? null])),
              outputs: (n.outputs || []).map(o => o.name),
            }];
        }))""",
        sorted(nodes),
    )
    for type_, node in nodes.items():
        page = seen[type_]
        assert page["title"] == node["display_name"], type_
        assert page["category"] == node["category"] and page["category"].startswith("charpack/")
        assert page["description"] == node["description"], type_
        assert page["outputs"] == list(node["output_name"]), type_
        values = {w["name"]: w["value"] for w in page["widgets"]}
        for name, (kind, options) in widget_inputs(node).items():
            assert name in values, f"{type_}.{name} has no widget in the editor"
            choices = kind if isinstance(kind, list) else options.get("options")
            if "default" in options:
                expected = options["default"]
            elif choices:
                expected = choices[0]
            else:
                continue
            assert values[name] == expected, f"{type_}.{name}: editor shows {values[name]!r}"
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                tip = spec[1].get("tooltip") if len(spec) > 1 else None
                assert tip, f"{type_}.{name} has no tooltip"
                assert page["tooltips"].get(name) == tip, f"{type_}.{name}'s tooltip"

    # The node library panel lists them under charpack/.
    editor.clear()
    editor.page.get_by_role("button", name="Node Library (n)").click()
    search = editor.page.get_by_placeholder("Search Nodes...").first
    search.fill("charpack")
    for node in nodes.values():
        editor.page.get_by_text(node["display_name"], exact=True).first.wait_for(timeout=30_000)
    editor.screenshot(artefacts / "node-library.png")
    assert editor.errors() == []
