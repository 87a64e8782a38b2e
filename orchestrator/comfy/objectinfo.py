"""``/object_info`` data: loading (recorded files or a live server's answer) and parsing into
typed input specs.

Accepts both combo formats (V1 ``[[choices], {…}]`` and V3 ``["COMBO", {"options": […]}]``),
a V3 COMBO without ``options`` (remote lists), and hidden inputs given as strings or lists.
The recorded data shipped with charpack (``data/object_info/``): ComfyUI 0.3.75 core (live dump),
the pinned third-party packs (transcribed from source) and charpack's own nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

RECORDED_FILES = ("core-0.3.75.json", "third_party.json", "charpack.json")


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO" or a link type such as "MODEL"
    required: bool
    options: Mapping[str, Any]
    choices: tuple[Any, ...] | None = None  # for COMBO; None = not listed (remote)

    @property
    def accepts_literal(self) -> bool:
        """A plain value is valid here (a widget type, even when shown as a socket)."""
        return self.type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

    @property
    def is_widget(self) -> bool:
        """Shown as a widget in the editor (``forceInput`` makes a widget type a socket)."""
        return self.accepts_literal and not self.options.get("forceInput", False)


@dataclass(frozen=True)
class NodeInfo:
    class_type: str
    inputs: Mapping[str, InputSpec]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool
    python_module: str
    category: str


def _parse_input(name: str, raw: Any, required: bool) -> InputSpec:
    head = raw[0] if isinstance(raw, list) and raw else raw
    options = raw[1] if isinstance(raw, list) and len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(head, list):
        return InputSpec(name, "COMBO", required, options, tuple(head))
    type_ = str(head)
    if type_ == "COMBO":
        choices = options.get("options")
        return InputSpec(name, "COMBO", required, options, tuple(choices) if choices else None)
    return InputSpec(name, type_, required, options)


def parse_node(class_type: str, raw: Mapping[str, Any]) -> NodeInfo:
    sections = raw.get("input", {})
    inputs: dict[str, InputSpec] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (sections.get(section) or {}).items():
            inputs[name] = _parse_input(name, spec, required)
    outputs = tuple(str(t) if not isinstance(t, list) else "COMBO" for t in raw.get("output", []))
    names = tuple(raw.get("output_name") or outputs)
    return NodeInfo(
        class_type=class_type,
        inputs=inputs,
        outputs=outputs,
        output_names=names,
        output_node=bool(raw.get("output_node")),
        python_module=str(raw.get("python_module", "")),
        category=str(raw.get("category", "")),
    )


class ObjectInfo:
    """Parsed ``/object_info`` for many node classes."""

    def __init__(self, raw: Mapping[str, Mapping[str, Any]], *, source: str) -> None:
        self.source = source
        self.raw = dict(raw)
        self._parsed: dict[str, NodeInfo] = {}

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.raw

    def get(self, class_type: str) -> NodeInfo | None:
        if class_type not in self.raw:
            return None
        if class_type not in self._parsed:
            self._parsed[class_type] = parse_node(class_type, self.raw[class_type])
        return self._parsed[class_type]

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> ObjectInfo:
        """Merge files in order; a class in a later file does not replace an earlier one."""
        merged: dict[str, Any] = {}
        names = []
        for path in paths:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            for class_type, info in data.items():
                merged.setdefault(class_type, info)
            names.append(str(path))
        return cls(merged, source=" + ".join(names))

    @classmethod
    def recorded(cls) -> ObjectInfo:
        """The object_info recordings shipped with charpack (core 0.3.75 first)."""
        base = resources.files("charpack") / "data" / "object_info"
        merged: dict[str, Any] = {}
        for name in RECORDED_FILES:
            entry = base / name
            if entry.is_file():
                for class_type, info in json.loads(entry.read_text(encoding="utf-8")).items():
                    merged.setdefault(class_type, info)
        return cls(merged, source="recorded object_info (ComfyUI 0.3.75 + pinned packs)")
