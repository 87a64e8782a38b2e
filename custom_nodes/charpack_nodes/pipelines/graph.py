"""The graph object every stage builder writes into.

It has the surface of ComfyUI's ``comfy_execution.graph_utils.GraphBuilder`` (``node(class_type,
id=None, **inputs)``, ``Node.out(i)``, ``finalize()``) so the same builder code serves the
orchestrator (API-format JSON), the node pack (node expansion) and the generated workflow files.

Unlike ComfyUI's builder it knows the catalogue: a node of a catalogued type must receive exactly
the catalogued input names (every widget explicitly, optional links only when connected), so a
misspelt or forgotten input fails when the graph is built, not on a GPU. It owns no presets and
no stage logic (the stage builders: ``models.py``, ``base.py``, ``face.py``,
``finish.py``, assembled by ``stages.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

from . import catalog


class ApiNode(TypedDict):
    """One node of an API-format prompt: ``{"class_type": ..., "inputs": {...}}``."""

    class_type: str
    inputs: dict[str, Any]


ApiGraph = dict[str, ApiNode]
Link = list[Any]  # [source node id, output index]; a list, as ComfyUI expects on the wire


class GraphError(ValueError):
    """A graph was built wrongly: unknown input, missing input, clashing node id."""


def is_link(value: object) -> bool:
    """True for an API-format link ``[node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


class Node:
    """A node under construction; ``out(i)`` gives a link to its i-th output."""

    __slots__ = ("id", "class_type", "inputs")

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs

    def out(self, index: int) -> Link:
        spec = catalog.get(self.class_type)
        if spec is not None and not 0 <= index < len(spec.outputs):
            raise GraphError(
                f"{self.class_type} ({self.id}) has {len(spec.outputs)} outputs; "
                f"output {index} does not exist"
            )
        return [self.id, index]

    def serialize(self) -> ApiNode:
        return {"class_type": self.class_type, "inputs": dict(self.inputs)}

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.class_type!r})"


class Graph:
    """An API-format graph under construction, with stable, meaningful node ids.

    ``prefix`` is prepended to every id; node expansion uses ``"<parent id>."`` so ids stay
    unique inside the server's prompt.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._nodes: dict[str, Node] = {}
        self._counter = 1

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> Node:  # noqa: A002
        """Add a node (or return the existing one with this id and identical inputs)."""
        if id is None:
            while f"{self.prefix}{self._counter}" in self._nodes:
                self._counter += 1
            id = str(self._counter)  # noqa: A001
        node_id = self.prefix + id
        clean = {k: v for k, v in inputs.items() if v is not None}
        _check_inputs(class_type, node_id, clean)
        existing = self._nodes.get(node_id)
        if existing is not None:
            if existing.class_type != class_type or existing.inputs != clean:
                raise GraphError(
                    f"node id {node_id!r} is already used by {existing.class_type} with other "
                    "inputs; give the new node its own id"
                )
            return existing
        node = Node(node_id, class_type, clean)
        self._nodes[node_id] = node
        return node

    def __contains__(self, id: str) -> bool:  # noqa: A002
        return self.prefix + id in self._nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def finalize(self) -> ApiGraph:
        """The API-format dict (deep-copied: later edits to the builder do not leak)."""
        out = {node_id: node.serialize() for node_id, node in self._nodes.items()}
        return copy.deepcopy(out)


def _check_inputs(class_type: str, node_id: str, inputs: Mapping[str, Any]) -> None:
    spec = catalog.get(class_type)
    if spec is None:
        return  # uncatalogued types (user graphs) are validated against object_info instead
    unknown = sorted(set(inputs) - set(spec.inputs))
    if unknown:
        raise GraphError(
            f"{class_type} ({node_id}) has no input named {', '.join(map(repr, unknown))}; "
            f"its inputs are: {', '.join(spec.inputs)}"
        )
    missing = [name for name in spec.explicit if name not in inputs]
    if missing:
        raise GraphError(
            f"{class_type} ({node_id}) is missing {', '.join(map(repr, missing))}: every widget "
            "input is sent explicitly (a value left out of an API prompt silently takes the "
            "Python default, which can differ from the UI default)"
        )


def to_json(graph: ApiGraph) -> str:
    """Canonical JSON text for a graph: sorted keys, two-space indent, trailing newline."""
    return json.dumps(graph, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
