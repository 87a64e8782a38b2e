"""Graphs built in the editor page the way a user builds them: node by node, wired by name.

``build`` takes ``{id: (type, {widget: value})}`` and ``[(src, output name, dst, input name)]``,
creates each node with ``LiteGraph.createNode``, sets widgets through the widget objects and
connects slots found by name; it returns the editor's node ids. ``character_chain`` is the graph
the issue names: Character → Pipeline → Identity score → Save pack, at a small size so a CPU run
takes seconds, with the macro's seed and parameters wired into the saver.
"""

from __future__ import annotations

from typing import Any

from tests.browser.editor import Editor

Nodes = dict[str, tuple[str, dict[str, Any]]]
Links = list[tuple[str, str, str, str]]

_BUILD = """([nodes, links]) => {
  const made = {};
  let x = 40;
  for (const [key, [type, widgets]] of Object.entries(nodes)) {
    const n = LiteGraph.createNode(type);
    if (!n) throw new Error('no node type ' + type);
    app.graph.add(n);
    n.pos = [x, 80];
    x += n.size[0] + 60;
    for (const [name, value] of Object.entries(widgets)) {
      const w = (n.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(type + ' has no widget ' + name);
      w.value = value;
      if (w.callback) w.callback(value);
    }
    made[key] = n;
  }
  for (const [src, out, dst, input] of links) {
    const a = made[src], b = made[dst];
    const slot = a.outputs.findIndex(o => o.name === out);
    const target = b.inputs.findIndex(i => i.name === input);
    if (slot < 0) throw new Error(a.type + ' has no output ' + out);
    if (target < 0) throw new Error(b.type + ' has no input ' + input);
    a.connect(slot, b, target);
  }
  app.canvas.setDirty(true, true);
  return Object.fromEntries(Object.entries(made).map(([k, n]) => [k, String(n.id)]));
}"""


def build(editor: Editor, nodes: Nodes, links: Links) -> dict[str, str]:
    return dict(editor.js(_BUILD, [nodes, links]))


def character_chain(
    *, name: str, width: int = 512, height: int = 768, seed: int = 11, pack: str = "editor"
) -> tuple[Nodes, Links]:
    nodes: Nodes = {
        "character": ("CharpackCharacter", {"face_image": "face.png", "trigger": "avachar"}),
        "pipeline": (
            "CharpackPipeline",
            {
                "prompt": "linen summer dress on a sunny street",
                "seed": seed,
                "width": width,
                "height": height,
            },
        ),  # fmt: skip
        "score": ("CharpackIdentityScore", {}),
        "save": ("CharpackSavePack", {"pack": pack, "scene": "street", "name": name}),
    }
    links: Links = [
        ("character", "character", "pipeline", "character"),
        ("pipeline", "image", "score", "images"),
        ("character", "character", "score", "character"),
        ("score", "images", "save", "images"),
        ("score", "score", "save", "score"),
        ("pipeline", "seed", "save", "seed"),
        ("pipeline", "parameters", "save", "parameters"),
    ]
    return nodes, links
