"""API graph -> UI workflow (the editor's own file format, ``version 0.4``), and back.

:func:`to_ui` lays an API graph out as the workflow JSON the ComfyUI frontend 1.32.9 writes and
reads with ``loadGraphData``; :func:`to_api` is the inverse a test uses (what ``graphToPrompt``
makes of it). Which inputs are widgets, their order and the outputs come from the recorded
``/object_info`` only, the way the frontend builds a node from its definition:

* inputs are ordered by ``input_order`` (required, then optional); the node's slots are its
  sockets first, then one slot per widget (``widget: {name}``), as the frontend adds them;
* ``widgets_values`` is positional over the widgets and holds the frontend-only entries: an INT
  with ``control_after_generate`` (or named ``seed``/``noise_seed``) is followed by its mode,
  ``"fixed"`` here so a charpack workflow reproduces; the first required upload combo adds an
  upload button at the end, whose value is ``"image"``;
* links are ``[id, origin, origin_slot, target, target_slot, type]``.

A literal on a socket-only input (``forceInput``, e.g. Save pack's ``seed`` and ``parameters``,
which the orchestrator fills in) cannot sit on a socket in the editor, so it becomes a core
Primitive node linked to it; a seed's Primitive also drives every seed widget of the same value,
so what the editor records is the seed it used. :func:`resolve_primitives` turns those links
back into values: ``resolve_primitives(to_api(to_ui(graph)))`` is ``graph``.

Node ids become 1, 2, …; charpack's stable id stays in ``properties["charpack_id"]``. The layout
is layered: a node's column is its longest path from a source, nodes of one column are stacked in
the order of their ids (so a stage's nodes sit together).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from charpack.comfy.objectinfo import InputSpec, ObjectInfo

VERSION = 0.4
CONTROL_MODE = "fixed"  # control_after_generate of every seed widget: reproduce, never randomise
SEED_NAMES = ("seed", "noise_seed")  # the frontend adds a control to these even undeclared
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
UPLOAD_WIDGET = ("upload", "image")  # the upload button: its name and serialized value
ID_PROPERTY = "charpack_id"
# The core node holding a literal that has only a socket to go to, by the input's type.
PRIMITIVES = {"INT": "PrimitiveInt", "FLOAT": "PrimitiveFloat", "BOOLEAN": "PrimitiveBoolean"}
PRIMITIVE_TEXT = ("PrimitiveString", "PrimitiveStringMultiline")
PRIMITIVE_INPUT = "value"
NAMESPACE = uuid.UUID("1b0c7e58-6a38-4f47-9d55-5b6f0d1e2c3a")  # uuid5 ids: stable files

COLUMN_GAP, ROW_GAP, WIDTH, WIDE = 60, 40, 320, 400
SLOT_H, WIDGET_H, MULTILINE_H, TITLE_H = 22, 26, 90, 40


def ordered_inputs(info: ObjectInfo, class_type: str) -> list[InputSpec]:
    """A node's inputs in the frontend's order (``getOrderedInputSpecs``)."""
    node = info.get(class_type)
    if node is None:
        raise KeyError(f"{class_type} is not in the object_info")
    order = info.raw[class_type].get("input_order") or {}
    names: list[str] = []
    for section, required in (("required", True), ("optional", False)):
        names += [
            n
            for n in order.get(section, [])
            if n in node.inputs and node.inputs[n].required is required
        ]
    names += [n for n in node.inputs if n not in names]
    return [node.inputs[n] for n in names]


def has_control(spec: InputSpec) -> bool:
    return spec.type == "INT" and spec.options.get(
        "control_after_generate", spec.name in SEED_NAMES
    )


def upload_input(specs: list[InputSpec]) -> str | None:
    """The input the frontend gives an upload button: the first required upload combo."""
    for spec in specs:
        if (
            spec.required
            and spec.type == "COMBO"
            and any(spec.options.get(f) for f in UPLOAD_FLAGS)
        ):
            return spec.name
    return None


def widget_names(specs: list[InputSpec]) -> list[str | None]:
    """Name per ``widgets_values`` position (None: a control-after-generate entry)."""
    names: list[str | None] = []
    for spec in specs:
        if spec.type == "COMBO" and spec.options.get("control_after_generate"):
            # The frontend gives such a combo two extra widgets (control and filter); no node
            # charpack emits has one, so refuse rather than misplace every later value.
            raise ValueError(f"{spec.name}: a combo with control_after_generate is not supported")
        if spec.is_widget:
            names.append(spec.name)
            if has_control(spec):
                names.append(None)
    if upload_input(specs):
        names.append(UPLOAD_WIDGET[0])
    return names


def default_of(spec: InputSpec) -> Any:
    if "default" in spec.options:
        return spec.options["default"]
    if spec.type == "COMBO":
        return spec.choices[0] if spec.choices else ""
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False}.get(spec.type, "")


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _columns(graph: Mapping[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str, path: tuple[str, ...]) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in path:
            raise ValueError(f"the graph has a cycle through {node_id}")
        sources = [v[0] for v in graph[node_id].get("inputs", {}).values() if _is_link(v)]
        depth[node_id] = 1 + max((visit(s, (*path, node_id)) for s in sources), default=-1)
        return depth[node_id]

    for node_id in graph:
        visit(node_id, ())
    return depth


def _size(specs: list[InputSpec], outputs: int) -> list[int]:
    sockets = sum(not s.is_widget for s in specs)
    widgets = [s for s in specs if s.is_widget]
    multiline = sum(bool(s.options.get("multiline")) for s in widgets)
    height = TITLE_H + SLOT_H * max(sockets, outputs) + WIDGET_H * (len(widgets) - multiline)
    return [WIDE if multiline else WIDTH, height + MULTILINE_H * multiline]


def _primitive_type(spec: InputSpec, value: Any) -> str:
    if spec.type == "STRING":
        return PRIMITIVE_TEXT[bool(spec.options.get("multiline")) or "\n" in str(value)]
    if spec.type not in PRIMITIVES:
        raise ValueError(f"{spec.name}: no Primitive node holds a {spec.type} literal")
    return PRIMITIVES[spec.type]


def with_primitives(graph: Mapping[str, Any], info: ObjectInfo) -> dict[str, Any]:
    """``graph`` with each literal on a socket-only input moved into a Primitive node.

    The Primitive's id is ``<node id>.<input>`` of the first input it feeds; one Primitive per
    (input name, value), and a seed's also feeds the seed widgets holding the same value.
    """
    out = {
        node_id: {**node, "inputs": dict(node.get("inputs", {}))} for node_id, node in graph.items()
    }
    made: dict[tuple[str, str], str] = {}
    for node_id in sorted(graph):
        node_info = info.get(graph[node_id]["class_type"])
        assert node_info is not None
        for name, value in sorted(graph[node_id].get("inputs", {}).items()):
            spec = node_info.inputs.get(name)
            if spec is None or spec.is_widget or not spec.accepts_literal or _is_link(value):
                continue
            key = (name, json.dumps(value))
            if key not in made:
                made[key] = f"{node_id}.{name}"
                primitive = {
                    "class_type": _primitive_type(spec, value),
                    "inputs": {PRIMITIVE_INPUT: value},
                }
                out[made[key]] = primitive
            out[node_id]["inputs"][name] = [made[key], 0]
    for (name, value), primitive_id in made.items():
        if name not in SEED_NAMES:
            continue
        for node_id, node in graph.items():
            for field, given in node.get("inputs", {}).items():
                if field in SEED_NAMES and json.dumps(given) == value:
                    out[node_id]["inputs"][field] = [primitive_id, 0]
    return out


def resolve_primitives(graph: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`with_primitives`: links from Primitive nodes become their values."""
    kinds = {*PRIMITIVES.values(), *PRIMITIVE_TEXT}
    primitives = {n for n, node in graph.items() if node["class_type"] in kinds}
    resolved = {}
    for node_id, node in graph.items():
        if node_id in primitives:
            continue
        inputs = {
            k: graph[v[0]]["inputs"][PRIMITIVE_INPUT] if _is_link(v) and v[0] in primitives else v
            for k, v in node["inputs"].items()
        }
        resolved[node_id] = {**node, "inputs": inputs}
    return resolved


def to_ui(api: Mapping[str, Any], info: ObjectInfo, *, name: str) -> dict[str, Any]:
    """The UI workflow of an API graph (``name`` makes the workflow's id)."""
    graph = with_primitives(api, info)
    columns = _columns(graph)
    order = sorted(graph, key=lambda n: (columns[n], n))
    number = {node_id: i + 1 for i, node_id in enumerate(sorted(graph))}
    specs = {n: ordered_inputs(info, graph[n]["class_type"]) for n in graph}
    nodes: dict[str, dict[str, Any]] = {}
    for node_id in sorted(graph):
        node = graph[node_id]
        node_info = info.get(node["class_type"])
        assert node_info is not None
        slots = [s for s in specs[node_id] if not s.is_widget] + [
            s for s in specs[node_id] if s.is_widget
        ]
        values: list[Any] = []
        given = node.get("inputs", {})
        for field in widget_names(specs[node_id]):
            if field is None:
                values.append(CONTROL_MODE)
            elif field == UPLOAD_WIDGET[0] and field not in node_info.inputs:
                values.append(UPLOAD_WIDGET[1])
            else:
                spec = node_info.inputs[field]
                value = given.get(field, default_of(spec))
                values.append(default_of(spec) if _is_link(value) else value)
        entry: dict[str, Any] = {
            "id": number[node_id],
            "type": node["class_type"],
            "pos": [0, 0],
            "size": _size(specs[node_id], len(node_info.outputs)),
            "flags": {},
            "order": order.index(node_id),
            "mode": 0,
            "inputs": [
                {"name": s.name, "localized_name": s.name, "type": s.type, "link": None}
                | ({"widget": {"name": s.name}} if s.is_widget else {})
                for s in slots
            ],
            "outputs": [
                {
                    "name": out_name,
                    "localized_name": out_name,
                    "type": out_type,
                    "links": [],
                    "slot_index": i,
                }
                for i, (out_name, out_type) in enumerate(
                    zip(node_info.output_names, node_info.outputs, strict=True)
                )
            ],
            "properties": {"Node name for S&R": node["class_type"], ID_PROPERTY: node_id},
            "widgets_values": values,
        }
        title = node.get("_meta", {}).get("title")
        if title:
            entry["title"] = title
        nodes[node_id] = entry
    links = []
    for target_id in sorted(graph):
        target = nodes[target_id]
        for input_name, value in graph[target_id].get("inputs", {}).items():
            if not _is_link(value):
                continue
            origin_id, origin_slot = value
            origin = nodes[origin_id]
            slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == input_name)
            link_id = len(links) + 1
            kind = origin["outputs"][origin_slot]["type"]
            links.append([link_id, origin["id"], origin_slot, target["id"], slot, kind])
            target["inputs"][slot]["link"] = link_id
            origin["outputs"][origin_slot]["links"].append(link_id)
    _layout(nodes, columns)
    return {
        "id": str(uuid.uuid5(NAMESPACE, name)),
        "revision": 0,
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": [nodes[n] for n in sorted(graph, key=lambda n: number[n])],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": VERSION,
    }


def _layout(nodes: Mapping[str, dict[str, Any]], columns: Mapping[str, int]) -> None:
    x = 0
    for column in range(max(columns.values(), default=-1) + 1):
        members = sorted(n for n in nodes if columns[n] == column)
        y = 0
        for node_id in members:
            nodes[node_id]["pos"] = [x, y]
            y += nodes[node_id]["size"][1] + ROW_GAP
        x += max(nodes[n]["size"][0] for n in members) + COLUMN_GAP


def to_api(workflow: Mapping[str, Any], info: ObjectInfo) -> dict[str, Any]:
    """The API graph of a UI workflow as the frontend's ``graphToPrompt`` makes it.

    Keys are the nodes' charpack ids (``properties``), else their numbers.
    """
    by_number = {n["id"]: n for n in workflow["nodes"]}

    def key(number: int) -> str:
        return str(by_number[number].get("properties", {}).get(ID_PROPERTY, number))

    links = {link[0]: link for link in workflow["links"]}
    graph: dict[str, Any] = {}
    for node in workflow["nodes"]:
        specs = ordered_inputs(info, node["type"])
        names = widget_names(specs)
        if len(names) != len(node["widgets_values"]):
            raise ValueError(
                f"node {node['id']} ({node['type']}): {len(node['widgets_values'])} "
                f"widget values for {len(names)} widgets"
            )
        inputs: dict[str, Any] = {}
        for field, value in zip(names, node["widgets_values"], strict=True):
            if field is not None and field in {s.name for s in specs}:
                inputs[field] = value
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [key(link[1]), link[2]]
        graph[key(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def to_ui_json(graph: Mapping[str, Any], info: ObjectInfo, *, name: str) -> str:
    return json.dumps(to_ui(graph, info, name=name), indent=2, ensure_ascii=False) + "\n"
